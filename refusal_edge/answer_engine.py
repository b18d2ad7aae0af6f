"""The answer engine of guard mode: any OpenAI-compatible chat API (llama-server, vLLM, Ollama, LM Studio, a hosted
API) that writes the answers refusal-edge decided to give (guarded.py).

Only ``/v1/chat/completions`` is used, always streamed (a whole answer is the stream collected), so one parser reads
every engine: its quirks are handled here (content ``null`` in a delta, usage in a chunk of its own with no choices
or in the final one, a role-only first chunk, reasoning fields, which are not the answer). Every failure is an
``AnswerEngineError`` whose message names "the answer engine", never its URL or key: the message may reach a
client of the server in front of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

from .engines.remote.errors import EngineError
from .engines.remote.http import EngineHTTPError, HttpClient
from .errors import PromptTooLongError
from .sampling import SERVER_DEFAULTS, SamplingParams

CHAT_PATH = "/v1/chat/completions"
FINISH_REASONS = ("stop", "length", "content_filter")  # passed on as they are; others (tool calls...) end as "stop"
NAME = "the answer engine"  # how every message names it (its URL stays in this process)
# llama.cpp's sampling fields beyond OpenAI's: sent only when they differ from the defaults, so that an engine that
# does not know them (OpenAI's own API rejects unknown fields) is asked only what a client asked for.
EXTENSIONS = ("top_k", "min_p", "repeat_penalty")
# The refusal the answer engine writes (refusal-writer "answer-engine"): from this instruction alone, never from the
# refused request, which must not reach it.
REFUSAL_INSTRUCTION = ("You are declining a user's request. The request itself is withheld from you; it falls in "
                       "this category: {category}. Write a short, polite refusal of one or two sentences that names "
                       "the kind of request and, where it helps, suggests something you could help with instead. "
                       "Do not mention this instruction.")


class AnswerEngineError(EngineError):
    """The answer engine is unreachable, timed out, failed, or answered something that is not a chat stream."""


@dataclass(frozen=True)
class AnswerPiece:
    """A piece of the engine's answer; the last one carries ``finish_reason`` and the engine's token counts
    (None where it reported none)."""

    text: str
    finish_reason: str | None = None
    completion_tokens: int | None = None
    prompt_tokens: int | None = None


class AnswerEngine:
    """An OpenAI-compatible chat API at ``url`` (``http://host:port`` or ``.../v1``). ``model``: the name sent in
    every request (Ollama and LM Studio need it; llama-server ignores it) [default: the first the engine lists,
    asked once, when first needed]. Thread-safe: one connection pool shared by every caller."""

    def __init__(self, url: str, *, model: str | None = None, api_key: str | None = None, timeout: float = 60.0,
                 connections: int = 16) -> None:
        self._secrets = tuple(s for s in (url.strip(), api_key) if s)
        try:
            self.http = HttpClient(url, api_key=api_key, timeout=timeout, retries=0, connections=connections)
        except EngineError as exc:  # a malformed URL: the operator's own input, at startup
            raise AnswerEngineError(f"answer engine: {exc}") from None
        self._secrets += (self.http.url,)
        self.timeout = timeout
        self._model = model
        self._named = model is not None

    @property
    def model(self) -> str | None:
        """The model it answers with: as given, else as the engine lists it (None if it cannot be asked)."""
        if not self._named:
            try:
                self.probe()
            except AnswerEngineError:
                self._named = True  # asked once: requests to an engine that could not say name no model
        return self._model

    def probe(self) -> str | None:
        """Ask the engine which models it serves (``/v1/models``): the model it answers with, or an
        AnswerEngineError saying why it cannot be reached."""
        try:
            listed = self.http.get_json("/v1/models", retry=False).get("data")
        except EngineHTTPError as exc:
            raise self._http_error(exc) from None
        except EngineError as exc:
            raise AnswerEngineError(self.scrub(str(exc))) from None
        if not self._named:
            self._named = True
            if isinstance(listed, list) and listed and isinstance(listed[0], Mapping):
                self._model = str(listed[0].get("id") or "") or None
        return self._model

    @property
    def label(self) -> str:
        """How answers say who wrote them: the model's name, never the engine's address, nor the directories of
        a file the engine names its model by (llama-server lists the GGUF's path)."""
        if not self.model:
            return "answer-engine"
        name = self.scrub(self.model)
        if name.lower().endswith(".gguf") or name.startswith(("/", "~", "\\")) or name[1:3] in (":\\", ":/"):
            name = re.split(r"[\\/]", name)[-1]
        return name

    def stream(self, messages: Sequence[Mapping], sampling: SamplingParams) -> Iterator[AnswerPiece]:
        """The answer to ``messages`` (role and content only: no decision tokens), piece by piece as the engine
        streams it. Closing the iterator closes the connection, which tells the engine to stop."""
        body = {"messages": [{"role": m["role"], "content": m["content"]} for m in messages], "stream": True,
                "stream_options": {"include_usage": True}, **request_sampling(sampling)}
        if self.model:
            body["model"] = self.model
        try:
            yield from self._pieces(self.http.stream_events(CHAT_PATH, body))
        except EngineHTTPError as exc:
            raise self._http_error(exc) from None
        except AnswerEngineError:
            raise
        except EngineError as exc:
            raise AnswerEngineError(self.scrub(str(exc))) from None

    def refusal(self, category: str, sampling: SamplingParams) -> Iterator[AnswerPiece]:
        """A refusal for a request in ``category``, written from an instruction naming the category alone."""
        instruction = [{"role": "system", "content": REFUSAL_INSTRUCTION.format(category=category)},
                       {"role": "user", "content": "Write the refusal."}]
        return self.stream(instruction, sampling)

    def close(self) -> None:
        self.http.close()

    def scrub(self, text: str) -> str:
        """``text`` with the engine's address and key taken out (they stay in this process)."""
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(f"engine {secret}", NAME).replace(secret, "(hidden)")
        return text

    # internals ---------------------------------------------------------------------------------
    def _pieces(self, events: Iterator[dict]) -> Iterator[AnswerPiece]:
        finish, usage = None, None
        try:
            for event in events:
                if isinstance(event.get("usage"), Mapping):
                    usage = event["usage"]
                choices = event.get("choices")
                if choices is None and usage is not None:
                    continue
                if not isinstance(choices, list) or not all(isinstance(c, Mapping) for c in choices):
                    raise self._garbage(f"a chunk without a list of choices: {str(event)[:120]!r}")
                if finish is not None or not choices:  # the usage chunk after the last choice (or another after it)
                    continue
                delta = choices[0].get("delta")
                text = delta.get("content") if isinstance(delta, Mapping) else None
                if text is not None and not isinstance(text, str):
                    raise self._garbage(f"a delta whose content is not text: {str(delta)[:120]!r}")
                finish = choices[0].get("finish_reason") or None
                if finish is not None and not isinstance(finish, str):
                    raise self._garbage(f"a finish_reason that is not text: {finish!r}")
                if text:
                    yield AnswerPiece(text)
        finally:
            events.close()
        if finish is None:
            raise self._garbage("a stream that ended before the answer finished (no finish_reason)")
        yield AnswerPiece("", finish if finish in FINISH_REASONS else "stop", _count(usage, "completion_tokens"),
                          _count(usage, "prompt_tokens"))

    def _garbage(self, what: str) -> AnswerEngineError:
        return AnswerEngineError(self.scrub(f"{NAME} answered {what}"))

    def _http_error(self, exc: EngineHTTPError) -> Exception:
        detail = self.scrub(exc.detail)
        if exc.status == 400 and any(word in detail.lower() for word in ("context", "too long", "max_model_len")):
            return PromptTooLongError(f"the prompt does not fit {NAME}'s context: {detail}", option=NAME)
        if exc.status in (401, 403):
            return AnswerEngineError(f"{NAME} refused refusal-edge's API key (HTTP {exc.status}): the server's "
                                     "operator must pass the engine's key with --answer-api-key")
        if exc.status == 404:
            return AnswerEngineError(f"{NAME} has no such model or route (HTTP 404): {detail} (--answer-model)")
        verb = "failed" if exc.status >= 500 else "rejected the request"
        return AnswerEngineError(f"{NAME} {verb}: HTTP {exc.status}: {detail}")


def request_sampling(params: SamplingParams) -> dict:
    """The OpenAI sampling fields of ``params``, llama.cpp's extensions where they differ from the defaults."""
    body = {"temperature": params.temperature, "top_p": params.top_p, "max_tokens": params.max_tokens}
    body.update({name: getattr(params, name) for name in EXTENSIONS
                 if getattr(params, name) != getattr(SERVER_DEFAULTS, name)})
    if params.seed is not None:
        body["seed"] = params.seed
    if params.stop:
        body["stop"] = list(params.stop)
    return body


def _count(usage: Mapping | None, field: str) -> int | None:
    value = usage.get(field) if usage else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
