"""Ollama's wire format: its requests, translated into the OpenAI-shaped request the server already validates
(requests.py), and its response lines; openai_wire.py is OpenAI's counterpart.

Nothing here validates a field twice: sampling, messages, limits and the ``refusal`` policy are checked by
requests.chat_request, told (``FIELD_NAMES``) how an Ollama client spells each sampling field, so that its errors
name the option the client sent. What Ollama offers and this server cannot do (images, tools, JSON formats, raw
prompts, custom templates, prompt contexts, mirostat...) is a 400 naming the field, never silently ignored.
"""

from __future__ import annotations

import datetime
from typing import Mapping

from ..decision import Decision, assistant_message
from .errors import ApiError
from .truncation import SERVER_CONTEXT_OPTION, Truncation

VERSION = "0.6.0"  # the Ollama release whose API shapes these follow; clients gate features on /api/version

# Ollama option -> the server's (OpenAI/llama.cpp) request field.
OPTIONS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
           "num_predict": "max_tokens", "stop": "stop", "seed": "seed", "repeat_penalty": "repeat_penalty"}
# ... and back: how an error names the field an Ollama client sent (requests.chat_request's ``names``).
FIELD_NAMES = {field: f"options.{option}" for option, field in OPTIONS.items()}
# Ollama's own defaults where they differ from OpenAI's, so an Ollama client gets the answers it expects.
DEFAULTS = {"temperature": 0.8, "top_k": 40, "top_p": 0.9}
# Options that change the answer, accepted only at values that change nothing.
NEUTRAL = {"mirostat": (0,), "typical_p": (1,), "tfs_z": (1,), "presence_penalty": (0,), "frequency_penalty": (0,),
           "repeat_last_n": (64,), "penalize_newline": (True, False)}
# Hardware hints: the server's command line decides these; ignoring them cannot change an answer.
HARDWARE = ("num_thread", "num_gpu", "main_gpu", "num_batch", "use_mmap", "use_mlock", "numa", "low_vram",
            "num_keep", "vocab_only", "f16_kv", "logits_all")
# Fields a request may carry only empty or off.
UNSUPPORTED = {
    "format": "structured output (format) is not supported by this server",
    "tools": "this server runs no tools",
    "images": "this model reads text only (images)",
    "suffix": "fill-in-the-middle (suffix) is not supported",
    "template": "a custom template would bypass the chat template the refusal decision is trained on",
    "raw": "raw prompts would bypass the chat template the refusal decision is trained on",
    "context": "'context' (a token history) is not supported: send the conversation to /api/chat instead",
    "think": "this model does not think before answering",
    "tool_calls": "this server runs no tools",
}


def chat_body(raw: dict, n_ctx: int) -> dict:
    """/api/chat -> an OpenAI-shaped chat request (``messages`` validated later, by requests.chat_request)."""
    _reject_unsupported(raw, "format", "tools", "think")
    messages = raw.get("messages")
    if isinstance(messages, list):
        messages = [_message(m, i) if isinstance(m, dict) else m for i, m in enumerate(messages)]
    return {"messages": messages, **_common(raw, n_ctx)}


def generate_body(raw: dict, n_ctx: int) -> dict:
    """/api/generate -> the same, with ``system`` and ``prompt`` as the conversation."""
    _reject_unsupported(raw, "format", "tools", "images", "suffix", "template", "raw", "context", "think")
    for name in ("prompt", "system"):
        if raw.get(name) is not None and not isinstance(raw[name], str):
            raise ApiError(400, f"'{name}' must be a string", param=name)
    messages = [{"role": "system", "content": raw["system"]}] if raw.get("system") else []
    return {"messages": [*messages, {"role": "user", "content": raw.get("prompt") or ""}], **_common(raw, n_ctx)}


def is_load_request(raw: dict, field: str) -> bool:
    """Ollama loads a model when asked to answer nothing: an empty prompt or message list."""
    return raw.get(field) in (None, "", [])


def truncation(raw: dict, n_ctx: int) -> Truncation | None:
    """Ollama's ``truncate`` (default true): as its chatPrompt does, the oldest messages are left out one at a
    time until the prompt fits ``num_ctx``, system messages and the latest message always kept. ``false``: the
    whole conversation, an error when it does not fit."""
    truncate = raw.get("truncate")
    if truncate is not None and not isinstance(truncate, bool):
        raise ApiError(400, "'truncate' must be true or false", param="truncate")
    if truncate is False:
        return None
    options = raw.get("options") if isinstance(raw.get("options"), Mapping) else {}
    num_ctx = options.get("num_ctx")  # validated by _options: an int in (0, n_ctx], or absent
    asked = num_ctx if isinstance(num_ctx, int) and not isinstance(num_ctx, bool) and num_ctx < n_ctx else None
    return Truncation(drop="messages", reserve_answer=False, n_ctx=asked,
                      option="options.num_ctx" if asked else SERVER_CONTEXT_OPTION)


def _common(raw: dict, n_ctx: int) -> dict:
    keep_alive = raw.get("keep_alive")
    if keep_alive is not None and (isinstance(keep_alive, bool) or not isinstance(keep_alive, (str, int, float))):
        raise ApiError(400, "'keep_alive' must be a duration such as \"5m\" or a number of seconds", param="keep_alive")
    stream = raw.get("stream", True)  # Ollama streams unless told otherwise
    body = {"stream": stream, "model": raw.get("model"), **_options(raw.get("options"), n_ctx)}
    refusal = raw.get("refusal")
    if refusal is not None and "refusal" in body:
        raise ApiError(400, "give 'refusal' at the top level or in 'options', not both", param="refusal")
    if refusal is not None:
        body["refusal"] = refusal
    return body


def _options(options: object, n_ctx: int) -> dict:
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise ApiError(400, "'options' must be an object", param="options")
    body = dict(DEFAULTS)
    for name, value in options.items():
        if value is None or name in HARDWARE:
            continue
        if name in OPTIONS:
            body[OPTIONS[name]] = value
        elif name == "refusal":  # clients that only pass 'options' through can still turn the dial
            body["refusal"] = value
        elif name == "num_ctx":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= n_ctx:
                raise ApiError(400, f"'options.num_ctx' {value!r}: this server's context holds {n_ctx} tokens "
                                    "(refusal-edge serve --ctx); ask for at most that", param="options.num_ctx")
        elif name in NEUTRAL:
            if value not in NEUTRAL[name]:
                raise ApiError(400, f"'options.{name}' = {value!r} is not supported by this server",
                               param=f"options.{name}", code="unsupported_parameter")
        else:
            raise ApiError(400, f"unknown or unsupported option 'options.{name}'", param=f"options.{name}",
                           code="unsupported_parameter")
    predict = body.get("max_tokens")
    if predict in (-1, -2):  # Ollama's "until done" and "fill the context": up to the server's --max-tokens
        del body["max_tokens"]
    return body


def _message(message: dict, i: int) -> dict:
    _reject_unsupported(message, "images", "tool_calls", where=f"messages[{i}].")
    return {k: v for k, v in message.items() if k in ("role", "content", "refusal_token")}


def _reject_unsupported(raw: Mapping, *names: str, where: str = "") -> None:
    for name in names:
        if raw.get(name) not in (None, False, "", [], {}):
            raise ApiError(400, f"'{where}{name}': {UNSUPPORTED[name]}", param=f"{where}{name}",
                           code="unsupported_parameter")


# responses --------------------------------------------------------------------------------------------
def now() -> str:
    return iso(datetime.datetime.now(datetime.timezone.utc))


def iso(moment: datetime.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def piece(head: dict, field: str, text: str, decision: Decision | None = None) -> dict:
    """One streamed line; the first carries the decision (and, for chat, the decision token to echo back)."""
    line = {**head, "created_at": now(), **_answer(field, text, decision), "done": False}
    if decision is not None:
        line["refusal"] = decision.to_dict()
    return line


def final(head: dict, field: str, text: str, decision: Decision, finish_reason: str, completion_tokens: int,
          started_ns: int, finished_ns: int, prompt_tokens: int | None = None) -> dict:
    """The closing line (or the whole answer when not streaming): Ollama's counters, in nanoseconds."""
    prefill_ns = int(decision.prefill_ms * 1e6)
    total = finished_ns - started_ns
    return {**head, "created_at": now(), **_answer(field, text, decision), "done": True, "done_reason": finish_reason,
            "total_duration": total, "load_duration": 0,
            "prompt_eval_count": decision.prompt_tokens if prompt_tokens is None else prompt_tokens,
            "prompt_eval_duration": prefill_ns, "eval_count": completion_tokens,
            "eval_duration": max(0, total - prefill_ns), "refusal": decision.to_dict()}


def loaded(head: dict, field: str) -> dict:
    return {**head, "created_at": now(), **_answer(field, "", None), "done": True, "done_reason": "load"}


def _answer(field: str, text: str, decision: Decision | None) -> dict:
    if field == "response":
        return {"response": text}
    return {"message": assistant_message(text, decision) if decision else {"role": "assistant", "content": text}}
