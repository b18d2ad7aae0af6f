"""The OpenAI chat-completions wire format: request validation and response shapes.

No web framework in here, so every rule is testable without a server. Validation errors are ApiErrors that
name the offending field, and render in OpenAI's error shape, which every OpenAI client already knows how to show.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import ClassVar, Mapping

from .. import settings
from ..decision import Decision, assistant_message
from ..errors import PolicyError, SamplingError
from ..policy import Policy
from ..sampling import SERVER_DEFAULTS, Range, SamplingParams
from ..text import clean_json
from .truncation import Truncation

# OpenAI roles -> template roles. "developer" is the newer name of "system".
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
POLICY_TABLES = ("thresholds", "biases")

# Fields OpenAI clients send with neutral values; any other value asks for something this server does not do,
# and silently ignoring it would give the client an answer it did not ask for.
NEUTRAL = {
    "n": (1,),
    "frequency_penalty": (0,),
    "presence_penalty": (0,),
    "logprobs": (False,),
    "top_logprobs": (0,),
    "logit_bias": ({},),
    "tools": ([],),
    "functions": ([],),
    "tool_choice": ("none", "auto"),
    "function_call": ("none", "auto"),
    "response_format": ({"type": "text"},),
}


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server; each is a CLI option of `refusal-edge serve`."""

    max_body_bytes: int = settings.SERVER_MAX_BODY_BYTES
    max_messages: int = settings.SERVER_MAX_MESSAGES
    max_tokens: int = settings.SERVER_MAX_TOKENS
    max_stop: int = settings.SERVER_MAX_STOP


class ApiError(Exception):
    """A request the server will not serve, rendered as ``{"error": {...}}`` with an HTTP status."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error", headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind
        self.headers = headers  # e.g. Retry-After on a 503

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


OLLAMA_PREFIX = "/api/"  # every Ollama route, so even a path with no route gets Ollama's error shape


def ollama_error_body(exc: ApiError) -> dict:
    """Ollama's error shape, which its clients raise as ResponseError."""
    return {"error": exc.message}


def error_body(path: str, exc: ApiError) -> dict:
    """The one place that picks an error's shape: Ollama's under /api/, OpenAI's everywhere else."""
    return ollama_error_body(exc) if path.startswith(OLLAMA_PREFIX) else exc.body()


@dataclass(frozen=True)
class ChatRequest:
    messages: list[dict]
    policy: Policy
    sampling: SamplingParams
    stream: bool = False
    include_usage: bool = False
    truncation: Truncation | None = None  # None: a prompt over the context is an error (truncation.py)
    prompt_field: ClassVar[str] = "messages"  # what an error about the prompt (too long) names

    def run(self, model):
        """What a slot does with this request: the Decision, then Chunks."""
        if self.truncation is not None:
            return self.truncation.run(model, self.messages, self.policy, self.sampling)
        return model.stream(self.messages, self.policy, sampling=self.sampling)


def parse_chat_request(body: bytes, *, policy: Policy, categories: tuple[str, ...], decision_tokens: frozenset[str],
                       limits: Limits) -> ChatRequest:
    """Validate a request body against the model's categories and the server's limits and default policy."""
    return chat_request(load_json(body), policy=policy, categories=categories, decision_tokens=decision_tokens,
                        limits=limits)


def load_json(body: bytes) -> dict:
    """A request body that must be one JSON object (every endpoint's body is)."""
    try:
        raw = json.loads(body)
        raw = clean_json(raw)  # "\ud800" escapes parse into lone surrogates, which no tokenizer or encoder takes
    except RecursionError:  # json's decoder, or clean_json after it, gives up on deeply nested arrays or objects
        raise ApiError(400, "the request body is nested too deeply", code="invalid_json") from None
    except ValueError as exc:  # not JSON, not UTF-8, or an integer literal over Python's 4,300-digit limit
        raise ApiError(400, f"the request body is not valid JSON: {str(exc)[:200]}", code="invalid_json") from None
    if not isinstance(raw, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return raw


def chat_request(raw: dict, *, policy: Policy, categories: tuple[str, ...], decision_tokens: frozenset[str],
                 limits: Limits, names: Mapping[str, str] | None = None) -> ChatRequest:
    """An OpenAI-shaped request object (the Ollama side translates into this shape first). ``names``: how the
    client spelled a sampling field where it is not OpenAI's name (Ollama's ``options.num_predict`` for
    ``max_tokens``), so that an error names the field the client sent."""
    for name, neutral in NEUTRAL.items():
        value = raw.get(name)
        if value is not None and value not in neutral:
            raise ApiError(400, f"'{name}' = {value!r} is not supported by this server", param=name,
                           code="unsupported_parameter")
    if raw.get("model") is not None and not isinstance(raw["model"], str):
        raise ApiError(400, "'model' must be a string", param="model")
    stream = _boolean(raw, "stream")
    options = raw.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise ApiError(400, "'stream_options' must be an object", param="stream_options")
    return ChatRequest(
        messages=parse_messages(raw.get("messages"), limits.max_messages, decision_tokens),
        policy=parse_policy(raw.get("refusal"), policy, categories),
        sampling=_sampling(raw, limits, names or {}),
        stream=stream,
        include_usage=stream and _boolean(options or {}, "include_usage", "stream_options.include_usage"),
        truncation=_truncation(raw.get("truncation")),
    )


def _truncation(value: object) -> Truncation | None:
    """``"auto"``: leave out the oldest turns of a conversation over the context; ``"disabled"`` (the default):
    a 400 ``context_length_exceeded``, as OpenAI answers."""
    if value in (None, "disabled"):
        return None
    if value == "auto":
        return Truncation(drop="turns")
    raise ApiError(400, f"'truncation' must be \"auto\" or \"disabled\", got {value!r}", param="truncation")


def parse_messages(raw: object, limit: int, decision_tokens: frozenset[str]) -> list[dict]:
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "'messages' must be a non-empty list of {role, content} objects", param="messages")
    if len(raw) > limit:
        raise ApiError(400, f"'messages' holds {len(raw)} messages; this server accepts at most {limit} "
                            "(refusal-edge serve --max-messages)", param="messages")
    messages = []
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise ApiError(400, f"{where} must be an object with 'role' and 'content'", param=where)
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise ApiError(400, f"{where}.role {role!r} is not supported; use system, user or assistant "
                                "(this server runs no tools)", param=f"{where}.role")
        parsed = {"role": ROLES[role], "content": _content(message.get("content"), where, role)}
        # Clients that echo our assistant messages back keep the decision token of that turn; the template
        # inserts it as control text, so only this model's own decision tokens are accepted here.
        token = message.get("refusal_token")
        if token is not None:
            if role != "assistant" or not isinstance(token, str) or token not in decision_tokens:
                raise ApiError(400, f"{where}.refusal_token {token!r} is not one of this model's decision tokens "
                                    f"({', '.join(sorted(decision_tokens))}); only assistant messages carry one",
                               param=f"{where}.refusal_token")
            parsed["refusal_token"] = token
        messages.append(parsed)
    return messages


def parse_policy(raw: object, server: Policy, categories: tuple[str, ...]) -> Policy:
    """The request's ``refusal`` object over the server's policy: scalars replace, threshold/bias tables merge."""
    if raw is None:
        return server
    if not isinstance(raw, dict):
        raise ApiError(400, "'refusal' must be an object such as {\"rule\": \"per-category\", \"thresholds\": "
                            "{\"safety\": 0.3}, \"biases\": {\"respond\": 1.0}}", param="refusal")
    scalars = {k: v for k, v in server.to_dict().items() if k not in POLICY_TABLES}
    try:
        requested = Policy.from_dict({**scalars, **raw}, categories)
    except PolicyError as exc:
        raise ApiError(400, f"refusal: {exc}", param="refusal", code="invalid_refusal_policy") from None
    return replace(requested, thresholds={**server.thresholds, **requested.thresholds},
                   biases={**server.biases, **requested.biases})


# Where OpenAI's API takes less than llama.cpp does; SamplingParams checks every value, these ranges included.
OPENAI_RANGES = {"temperature": Range(0.0, 2.0), "max_tokens": Range(1, integer=True)}
SAMPLED = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "seed", "max_tokens", "stop")  # as named here


def _sampling(raw: Mapping, limits: Limits, names: Mapping[str, str]) -> SamplingParams:
    """The request's sampling fields over OpenAI's defaults; ``max_tokens`` defaults to the server's limit."""
    values = {name: raw.get(name) for name in SAMPLED}
    if raw.get("max_completion_tokens") is not None:  # OpenAI's newer name for it, preferred when both are sent
        values["max_tokens"] = raw["max_completion_tokens"]
        names = {"max_tokens": "max_completion_tokens", **names}
    if values["max_tokens"] is None:
        values["max_tokens"] = limits.max_tokens
    try:
        params = SamplingParams.from_fields(values, SERVER_DEFAULTS, OPENAI_RANGES)
    except SamplingError as exc:
        name = names.get(exc.field, exc.field)
        raise ApiError(400, exc.naming(f"'{name}'"), param=name) from None
    if params.max_tokens > limits.max_tokens:
        name = names.get("max_tokens", "max_tokens")
        raise ApiError(400, f"{name} {params.max_tokens} is over this server's limit of {limits.max_tokens} "
                            "(refusal-edge serve --max-tokens)", param=name)
    if len(params.stop) > limits.max_stop:
        name = names.get("stop", "stop")
        raise ApiError(400, f"'{name}' holds {len(params.stop)} strings; this server takes at most {limits.max_stop}",
                       param=name)
    return params


def text_content(value: object, where: str) -> str:
    """A message's content (a string or a list of text parts) as one string; ``where`` names it in errors."""
    return _content(value, where, "user")


def _content(value: object, where: str, role: str) -> str:
    if isinstance(value, str):
        return value
    if value is None and role == "assistant":  # an assistant turn that only called tools
        return ""
    if isinstance(value, list):
        texts = []
        for j, part in enumerate(value):
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ApiError(400, f"{where}.content[{j}]: only text parts are supported, got {kind!r}",
                               param=f"{where}.content")
            texts.append(part["text"])
        return "\n".join(texts)
    raise ApiError(400, f"{where}.content must be a string or a list of text parts", param=f"{where}.content")


def _boolean(raw: Mapping, name: str, where: str | None = None) -> bool:
    value = raw.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ApiError(400, f"'{where or name}' must be true or false", param=where or name)
    return value


# responses -------------------------------------------------------------------------------------------
def decision_payload(decision: Decision) -> dict:
    """The ``refusal`` extension field: forced token, category, probabilities, policy, timings."""
    return decision.to_dict()


def usage(decision: Decision, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": decision.prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": decision.prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": decision.cached_tokens},  # the KV-cache prefix that was reused
    }


def completion(head: dict, decision: Decision, text: str, finish_reason: str, completion_tokens: int,
               refusal_message: bool = True) -> dict:
    message = {**assistant_message(text, decision), "refusal": refusal_text(text, decision, refusal_message)}
    return {
        **head, "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
        "usage": usage(decision, completion_tokens),
        "refusal": decision_payload(decision),
    }


def refusal_text(text: str, decision: Decision, enabled: bool) -> str | None:
    """OpenAI's ``message.refusal`` (and ``delta.refusal``): the text of a refused answer, so that clients that look
    there (LangChain's ``additional_kwargs["refusal"]``, the SDK's ``parse()``) see the refusal; ``content`` holds the
    same text for clients that only read content. None for an answer, or when the server turns it off
    (``refusal-edge serve --no-refusal-message``)."""
    return text if enabled and decision.refused else None


def chunk(head: dict, delta: dict, finish_reason: str | None = None, **extra) -> dict:
    return {**head, "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}], **extra}


def first_delta(decision: Decision) -> dict:
    """The opening delta: the role, and the decision token a client should echo back with this turn."""
    return assistant_message("", decision)
