"""A request the server will not serve (``ApiError``), what each failure becomes as one, and the shape each API
renders it in: OpenAI's ``{"error": {...}}``, which every OpenAI client knows how to show, and Ollama's
``{"error": "..."}``, which its clients raise as ResponseError. ``error_body`` is the one place that picks the shape.
"""

from __future__ import annotations

from ..engines.remote.errors import EngineError
from ..errors import ModelLoadError, NonFiniteScoresError, PolicyError, PromptTooLongError, RefusalEdgeError
from .truncation import SERVER_CONTEXT_OPTION

OLLAMA_PREFIX = "/api/"  # every Ollama route, so even a path with no route gets Ollama's error shape


class ApiError(Exception):
    """A request the server will not serve: an HTTP status and a message naming the problem (``param``: the
    request field at fault)."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error", headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind
        self.headers = headers  # e.g. Retry-After on a 503


def openai_error_body(exc: ApiError) -> dict:
    return {"error": {"message": exc.message, "type": exc.kind, "param": exc.param, "code": exc.code}}


def ollama_error_body(exc: ApiError) -> dict:
    return {"error": exc.message}


def error_body(path: str, exc: ApiError) -> dict:
    """Ollama's shape under /api/, OpenAI's everywhere else."""
    return ollama_error_body(exc) if path.startswith(OLLAMA_PREFIX) else openai_error_body(exc)


def as_api_error(exc: BaseException, prompt_field: str = "messages") -> ApiError:
    """A failure as the request's error; ``prompt_field`` is the request field holding the prompt, which a prompt
    too long for the context names."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, PromptTooLongError):
        return ApiError(400, exc.naming(SERVER_CONTEXT_OPTION), param=prompt_field, code="context_length_exceeded")
    if isinstance(exc, EngineError):  # the remote engine failed or answered nonsense: a bad gateway, no decision
        return ApiError(502, str(exc), code="engine_error", kind="server_error")
    if isinstance(exc, NonFiniteScoresError):  # the model's fault, not the client's: no answer is generated
        return ApiError(500, str(exc), code="non_finite_scores", kind="server_error")
    if isinstance(exc, PolicyError):
        return ApiError(400, f"refusal: {exc}", param="refusal", code="invalid_refusal_policy")
    if isinstance(exc, RefusalEdgeError) and not isinstance(exc, ModelLoadError):
        return ApiError(400, str(exc))
    return ApiError(500, f"the server failed to generate: {exc}", kind="server_error")
