"""HTTP to an engine: JSON requests (idempotent ones retried with backoff), server-sent event streams (never
retried), and every transport failure turned into a one-line EngineError that names the engine and the cause."""

from __future__ import annotations

import json
import time
from typing import Iterator

from ...errors import PromptTooLongError
from ...extras import missing_message
from .errors import EngineError

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
        self._client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, trust_env=False,
                                    limits=httpx.Limits(max_connections=connections,
                                                        max_keepalive_connections=connections,
                                                        keepalive_expiry=KEEPALIVE_S))

    def get_json(self, path: str, *, retry: bool = True) -> dict:
        return self._json("GET", path, None, retry)

    def post_json(self, path: str, body: dict, *, retry: bool) -> dict:
        """``retry`` only for idempotent requests (scoring, tokenizing): a retried generation would sample twice."""
        return self._json("POST", path, body, retry)

    def stream_events(self, path: str, body: dict) -> Iterator[dict]:
        """The JSON payloads of a server-sent event stream, as they arrive; closing the iterator closes the
        connection, which tells the engine to stop generating."""
        started = False  # a reset after the answer began is "mid-stream"; before, the engine dropped the request
        try:
            with self._stream("POST", path, body) as response:
                started = True
                if response.status_code >= 400:
                    response.read()
                    raise self._status_error(response)
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    event = self._parse(data, path)
                    if not isinstance(event, dict):
                        raise EngineError(f"engine {self.url} streamed an event that is not a JSON object: "
                                          f"{data[:120]!r}")
                    if "error" in event:
                        raise EngineError(f"engine {self.url} failed mid-stream: {_detail(event)}")
                    yield event
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
                try:
                    response = self._client.request(method, path, json=body, timeout=left)
                except self._httpx.RemoteProtocolError:  # dropped before any answer: see _stream
                    response = self._client.request(method, path, json=body,
                                                    timeout=max(deadline - time.monotonic(), 1e-3))
            except self._httpx.HTTPError as exc:
                error = self._transport_error(exc)
            else:
                if response.status_code < 400:
                    answer = self._parse(response.text, path)
                    if not isinstance(answer, dict):
                        raise EngineError(f"engine {self.url} answered {path} with JSON that is not an object: "
                                          f"{response.text[:120]!r}")
                    return answer
                error = self._status_error(response)
                if response.status_code not in RETRIED_STATUS:
                    raise error
            if attempt + 1 < attempts:
                time.sleep(max(0.0, min(self.backoff_s * 2 ** attempt, deadline - time.monotonic())))
        if attempts > 1:
            raise type(error)(*_with_attempts(error, attempts)) if isinstance(error, EngineHTTPError) else \
                EngineError(f"{error} (after {attempts} attempts)")
        raise error

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

    def _status_error(self, response) -> EngineHTTPError:
        status = response.status_code
        detail = _detail(_maybe_json(response.text))
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
