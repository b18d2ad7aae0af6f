"""HTTP to an engine: JSON requests (idempotent ones retried with backoff), server-sent event streams (never
retried), and every transport failure turned into a one-line EngineError that names the engine and the cause.

``timeout`` bounds the whole exchange, not each read (deadline.py): a JSON request with its retries, connect to last
byte; a stream's connect and headers, then each wait for progress (an event the caller counts as progress, by
default any event): keep-alive comments, empty events and a body dripped a byte at a time do not keep it open.
Answers are bounded in size too (MAX_ANSWER_BYTES, MAX_EVENT_BYTES), so a flood ends in an error, not in memory.
"""

from __future__ import annotations

import json
import time
from typing import Callable, Iterator

from ...errors import PromptTooLongError
from ...extras import missing_message
from .deadline import deadline_transport, within
from .errors import EngineError

MAX_ANSWER_BYTES = 64 << 20  # a JSON answer (the largest real ones, top-k probabilities, are kilobytes)
MAX_EVENT_BYTES = 8 << 20  # one line of an event stream
RETRIED_STATUS = frozenset({429, 500, 502, 503, 504})
KEEPALIVE_S = 2.0


def _httpx():
    try:
        import httpx
    except ImportError:
        raise EngineError(missing_message("httpx", "a remote engine")) from None
    return httpx


class EngineHTTPError(EngineError):
    """The engine answered with an HTTP error status."""

    def __init__(self, message: str, status: int, detail: str) -> None:
        super().__init__(message)
        self.status, self.detail = status, detail


def base_url(url: str) -> str:
    """``http://host:port``, ``http://host:port/`` and ``http://host:port/v1`` all name the same engine."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise EngineError(f"engine URL {url!r} must start with http:// or https://")
    return url[:-3] if url.endswith("/v1") else url


class HttpClient:
    """One connection pool to one engine; safe to share between threads."""

    def __init__(self, url: str, *, api_key: str | None = None, timeout: float = 60.0, retries: int = 3,
                 backoff_s: float = 0.5, connections: int = 16) -> None:
        httpx = _httpx()
        self._httpx = httpx
        self.url = base_url(url)
        self.timeout, self.retries, self.backoff_s = timeout, retries, backoff_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # trust_env=False: no proxy from the environment sits between us and the engine we were told to use.
        # Idle connections are dropped after KEEPALIVE_S, well before servers close them (uvicorn and llama-server
        # after 5 s): a request sent as the server closes its connection fails, and generation is never retried.
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections,
                              keepalive_expiry=KEEPALIVE_S)
        self._client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, trust_env=False,
                                    transport=deadline_transport(httpx, limits=limits))

    def get_json(self, path: str, *, retry: bool = True) -> dict:
        return self._json("GET", path, None, retry)

    def post_json(self, path: str, body: dict, *, retry: bool) -> dict:
        """``retry`` only for idempotent requests (scoring, tokenizing): a retried generation would sample twice."""
        return self._json("POST", path, body, retry)

    def stream_events(self, path: str, body: dict, *, progress: Callable[[dict], bool] | None = None
                      ) -> Iterator[dict]:
        """The JSON payloads of a server-sent event stream, as they arrive; closing the iterator closes the
        connection, which tells the engine to stop generating. The stream fails with a timeout when ``timeout``
        seconds pass without an event for which ``progress`` is true (any event, by default)."""
        started = False  # a reset after the answer began is "mid-stream"; before, the engine dropped the request
        deadline = time.monotonic() + self.timeout
        try:
            with within(deadline):
                opened = self._stream("POST", path, body)
            with opened as response:
                started = True
                if response.status_code >= 400:
                    with within(deadline):
                        text = _read_capped(response, MAX_ANSWER_BYTES, self.url)
                    raise self._status_error(response, text)
                lines = _lines(response.iter_bytes(), MAX_EVENT_BYTES, self.url)
                while True:
                    with within(deadline):
                        line = next(lines, None)
                    if line is None:
                        return
                    if time.monotonic() > deadline:
                        raise self._httpx.ReadTimeout("no progress")
                    if not line.startswith("data:"):
                        continue  # comments (": ping"), event names, blank separators
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    event = self._parse(data, path)
                    if not isinstance(event, dict):
                        raise EngineError(f"engine {self.url} streamed an event that is not a JSON object: "
                                          f"{data[:120]!r}")
                    if "error" in event:
                        raise EngineError(f"engine {self.url} failed mid-stream: {_detail(event)}")
                    counts = progress is None or progress(event)
                    yield event
                    if counts:
                        deadline = time.monotonic() + self.timeout
        except self._httpx.HTTPError as exc:
            raise self._transport_error(exc, streaming=started) from None

    def close(self) -> None:
        self._client.close()

    def _stream(self, method: str, path: str, body: dict):
        """``client.stream``, sent again once if the connection dropped before any answer: llama-server closes a
        kept-alive connection after a request served by one of its overflow threads, and a request sent on it
        just then was never read. Nothing was generated or shown, so even a generation may go again."""
        try:
            response = self._client.send(self._client.build_request(method, path, json=body), stream=True)
        except self._httpx.RemoteProtocolError:
            response = self._client.send(self._client.build_request(method, path, json=body), stream=True)
        return _Closing(response)

    # internals ---------------------------------------------------------------------------------
    def _json(self, method: str, path: str, body: dict | None, retry: bool) -> dict:
        """One request, retried within ``timeout`` seconds in all: a stalled engine fails in ``timeout``, not in
        ``timeout`` times the attempts."""
        attempts = 1 + (self.retries if retry else 0)
        deadline = time.monotonic() + self.timeout
        for attempt in range(attempts):
            left = deadline - time.monotonic()
            if left <= 0:
                attempts = attempt
                break
            try:
                with within(deadline):
                    response, text = self._exchange(method, path, body, left)
            except self._httpx.HTTPError as exc:
                error = self._transport_error(exc)
            else:
                if response.status_code < 400:
                    answer = self._parse(text, path)
                    if not isinstance(answer, dict):
                        raise EngineError(f"engine {self.url} answered {path} with JSON that is not an object: "
                                          f"{text[:120]!r}")
                    return answer
                error = self._status_error(response, text)
                if response.status_code not in RETRIED_STATUS:
                    raise error
            if attempt + 1 < attempts:
                time.sleep(max(0.0, min(self.backoff_s * 2 ** attempt, deadline - time.monotonic())))
        if attempts > 1:
            raise type(error)(*_with_attempts(error, attempts)) if isinstance(error, EngineHTTPError) else \
                EngineError(f"{error} (after {attempts} attempts)")
        raise error

    def _exchange(self, method: str, path: str, body: dict | None, timeout: float):
        """One request and its whole (size-capped) answer; sent again once if the connection dropped before any
        answer (see _stream)."""
        request = self._client.build_request(method, path, json=body, timeout=timeout)
        try:
            response = self._client.send(request, stream=True)
        except self._httpx.RemoteProtocolError:
            response = self._client.send(self._client.build_request(method, path, json=body, timeout=timeout),
                                         stream=True)
        try:
            return response, _read_capped(response, MAX_ANSWER_BYTES, self.url)
        finally:
            response.close()

    def _parse(self, text: str, path: str):
        try:
            return json.loads(text)
        except (ValueError, RecursionError):  # not JSON, an integer over 4,300 digits, nested too deeply
            raise EngineError(f"engine {self.url} answered {path} with something that is not JSON: "
                              f"{text[:120]!r}") from None

    def _transport_error(self, exc, streaming: bool = False) -> EngineError:
        httpx = self._httpx
        if isinstance(exc, httpx.TimeoutException):
            return EngineError(f"engine {self.url} did not answer within {self.timeout:g} s: timed out "
                               "(--engine-timeout)")
        if isinstance(exc, httpx.ConnectError):
            return EngineError(f"engine {self.url} is unreachable: {exc or type(exc).__name__} "
                               "(is it running, and is the URL right?)")
        if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
            return EngineError(f"engine {self.url} reset the connection{' mid-stream' if streaming else ''}: "
                               f"{exc or type(exc).__name__}")
        return EngineError(f"engine {self.url}: {type(exc).__name__}: {exc}")

    def _status_error(self, response, text: str) -> EngineHTTPError:
        status = response.status_code
        detail = _detail(_maybe_json(text))
        if status in (401, 403):
            message = f"engine {self.url} refused the API key (HTTP {status}): pass the engine's key with " \
                      "--engine-api-key (or $REFUSAL_EDGE_ENGINE_API_KEY)"
        elif status >= 500:
            message = f"engine {self.url} failed: HTTP {status}: {detail}"
        else:
            message = f"engine {self.url} rejected the request: HTTP {status}: {detail}"
        return EngineHTTPError(message, status, detail)


class _Closing:
    """A streamed response as a context manager that closes it."""

    def __init__(self, response) -> None:
        self.response = response

    def __enter__(self):
        return self.response

    def __exit__(self, *exc) -> None:
        self.response.close()


def _read_capped(response, limit: int, url: str) -> str:
    """The body as text, refused past ``limit`` bytes (an engine flooding us ends in an error, not out of memory)."""
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > limit:
            raise EngineError(f"engine {url} sent an answer over {limit >> 20} MiB: no engine answer is that large")
    return body.decode(response.encoding or "utf-8", errors="replace")


def _lines(chunks: Iterator[bytes], limit: int, url: str) -> Iterator[str]:
    """Lines of an event stream (any of \\n, \\r\\n, \\r), each at most ``limit`` bytes."""
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            yield buffer[start:end].decode("utf-8", errors="replace")
            start = end + 1
        del buffer[:start]
        if len(buffer) > limit:
            raise EngineError(f"engine {url} streamed a line over {limit >> 20} MiB: no event is that large")
    if buffer:
        yield buffer.decode("utf-8", errors="replace")


def too_long_or(exc: EngineHTTPError, n_tokens: int, n_ctx: int) -> Exception:
    """An engine's "prompt exceeds the context" answer as the PromptTooLongError the in-process engine raises."""
    if exc.status == 400 and any(word in exc.detail for word in ("context", "max_model_len")):
        return PromptTooLongError(f"the prompt is {n_tokens} tokens, the engine's context holds {n_ctx}: {exc.detail}")
    return exc


def _with_attempts(error: EngineHTTPError, attempts: int) -> tuple:
    return f"{error} (after {attempts} attempts)", error.status, error.detail


def _maybe_json(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def _detail(body) -> str:
    """The message of an OpenAI- or llama.cpp-shaped error body, else the body itself, on one line."""
    if isinstance(body, dict):
        error = body.get("error", body)
        message = error.get("message") if isinstance(error, dict) else error
        body = message if message else json.dumps(body)
    return " ".join(str(body).split())[:300] or "(no message)"
