"""Reading and validating a request: the body (size limit, one JSON object), then the ``ChatRequest`` every chat
API's request becomes (OpenAI's shape; Ollama's is translated into it first, ollama_wire.py).

No web framework in here, so every rule is testable without a server. A request the server will not serve is an
ApiError that names the offending field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import ClassVar, Mapping

from .. import settings
from ..errors import PolicyError, SamplingError
from ..policy import Policy
from ..sampling import SERVER_DEFAULTS, Range, SamplingParams
from ..text import clean_json
from .errors import ApiError
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


@dataclass(frozen=True)
class RequestTerms:
    """What a request is checked against: the server's policy (a request's ``refusal`` object adjusts it), the
    model's refusal categories and decision tokens, and the server's limits."""

    policy: Policy
    categories: tuple[str, ...]
    decision_tokens: frozenset[str]
    limits: Limits


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



async def read_json(request, limit: int) -> dict:
    """A request's body (a Starlette Request), read up to ``limit`` bytes, as one JSON object."""
    too_large = ApiError(413, f"the request body is over {limit} bytes (refusal-edge serve --max-body)",
                         code="request_too_large")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise too_large
    return load_json(bytes(body))


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


def chat_request(raw: dict, terms: RequestTerms, names: Mapping[str, str] | None = None) -> ChatRequest:
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
        messages=parse_messages(raw.get("messages"), terms.limits.max_messages, terms.decision_tokens),
        policy=parse_policy(raw.get("refusal"), terms),
        sampling=_sampling(raw, terms.limits, names or {}),
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


def parse_policy(raw: object, terms: RequestTerms) -> Policy:
    """The request's ``refusal`` object over the server's policy: scalars replace, threshold/bias tables merge."""
    server = terms.policy
    if raw is None:
        return server
    if not isinstance(raw, dict):
        raise ApiError(400, "'refusal' must be an object such as {\"rule\": \"per-category\", \"thresholds\": "
                            "{\"safety\": 0.3}, \"biases\": {\"respond\": 1.0}}", param="refusal")
    scalars = {k: v for k, v in server.to_dict().items() if k not in POLICY_TABLES}
    try:
        requested = Policy.from_dict({**scalars, **raw}, terms.categories)
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


