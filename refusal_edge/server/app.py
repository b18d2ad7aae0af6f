"""The Starlette application: routes, API key, body limit, OpenAI-shaped errors, server-sent events."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..errors import ModelLoadError, NonFiniteScoresError, PolicyError, PromptTooLongError, RefusalEdgeError
from ..policy import Policy
from . import protocol
from .protocol import ApiError, Limits
from .slots import CANCELLED, Job, SlotPool

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy may hold tokens back


@dataclass(frozen=True)
class ServerSettings:
    model_id: str
    policy: Policy
    limits: Limits = field(default_factory=Limits)
    api_key: str | None = None


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


def create_app(pool: SlotPool, settings: ServerSettings) -> Starlette:
    spec = pool.models[0].spec  # every slot holds the same file: one vocabulary, one set of decision tokens
    decision_tokens = frozenset(ref.token for ref in spec.refs)
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app):
        pool.start()
        try:
            yield
        finally:
            await asyncio.to_thread(pool.close)

    def authorize(request: Request) -> None:
        if settings.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.api_key.encode()):
            raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>' with the key given to "
                                "refusal-edge serve --api-key (or $REFUSAL_EDGE_API_KEY)", code="invalid_api_key")

    def model_card() -> dict:
        return {
            "id": settings.model_id, "object": "model", "created": created, "owned_by": "refusal-edge",
            "refusal": {"categories": list(spec.category_names), "respond_token": spec.respond.token,
                        "category_tokens": {c.name: c.token for c in spec.categories},
                        "policy": settings.policy.to_dict()},
        }

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": settings.model_id, "slots": len(pool.models),
                             "queued": pool.queued, **pool.stats})

    async def list_models(request: Request) -> Response:
        authorize(request)
        return JSONResponse({"object": "list", "data": [model_card()]})

    async def get_model(request: Request) -> Response:
        authorize(request)
        if request.path_params["model_id"] != settings.model_id:
            raise ApiError(404, f"no model {request.path_params['model_id']!r}; this server serves "
                                f"{settings.model_id!r}", param="model", code="model_not_found")
        return JSONResponse(model_card())

    async def chat_completions(request: Request) -> Response:
        authorize(request)
        body = await read_body(request, settings.limits.max_body_bytes)
        chat = protocol.parse_chat_request(body, policy=settings.policy, categories=spec.category_names,
                                           decision_tokens=decision_tokens, limits=settings.limits)
        job = pool.submit(chat)
        watcher = asyncio.create_task(cancel_on_disconnect(request, job))
        try:
            decision = await next_event(job)  # the decision, or the reason there is none (prompt too long, ...)
            head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": settings.model_id}
            if chat.stream:
                watcher.cancel()  # from here on the streaming response watches the connection itself
                return JobStream(job, sse(job, head, decision, chat.include_usage))
            return JSONResponse(await collect(job, head, decision))
        except ClientGone:
            return Response(status_code=499)  # nginx's "client closed request"; nobody is there to read it
        except BaseException:
            job.cancel()
            raise
        finally:
            watcher.cancel()

    routes = [
        Route("/health", health),
        Route("/v1/models", list_models),
        Route("/v1/models/{model_id:path}", get_model),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    ]
    handlers = {ApiError: api_error_response, HTTPException: http_error_response, Exception: internal_error_response}
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)


class JobStream(StreamingResponse):
    """A server-sent-event response that cancels its job however it ends: finished, failed, or disconnected
    (Starlette cancels the body iterator on disconnect, possibly before it ever started)."""

    def __init__(self, job: Job, events) -> None:
        super().__init__(events, media_type="text/event-stream", headers=SSE_HEADERS)
        self.job = job

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.job.cancel()


async def sse(job: Job, head: dict, decision, include_usage: bool):
    # The first chunk carries the role, the decision token to echo back, and the decision itself.
    yield _event(protocol.chunk(head, protocol.first_delta(decision), refusal=protocol.decision_payload(decision)))
    while True:
        try:
            event = await next_event(job)
        except ClientGone:
            return
        except ApiError as exc:  # mid-stream failure: OpenAI clients raise on an ``error`` event
            yield _event(exc.body())
            return
        if event.text:
            yield _event(protocol.chunk(head, {"content": event.text}))
        if event.finish_reason:
            yield _event(protocol.chunk(head, {}, event.finish_reason))
            if include_usage:
                yield _event({**head, "object": "chat.completion.chunk", "choices": [],
                              "usage": protocol.usage(decision, event.completion_tokens)})
            break
    yield "data: [DONE]\n\n"


async def collect(job: Job, head: dict, decision) -> dict:
    parts = []
    while True:
        event = await next_event(job)
        parts.append(event.text)
        if event.finish_reason:
            return protocol.completion(head, decision, "".join(parts), event.finish_reason, event.completion_tokens)


async def next_event(job: Job):
    event = await job.events.get()
    if event is CANCELLED:
        raise ClientGone()
    if isinstance(event, BaseException):
        raise as_api_error(event)
    return event


async def cancel_on_disconnect(request: Request, job: Job) -> None:
    """With the body read, the next ASGI message is the disconnect (or the end of the response)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    job.cancel()


async def read_body(request: Request, limit: int) -> bytes:
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
    return bytes(body)


def as_api_error(exc: BaseException) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, PromptTooLongError):
        return ApiError(400, str(exc), param="messages", code="context_length_exceeded")
    if isinstance(exc, NonFiniteScoresError):  # the model's fault, not the client's: no answer is generated
        return ApiError(500, str(exc), code="non_finite_scores", kind="server_error")
    if isinstance(exc, PolicyError):
        return ApiError(400, f"refusal: {exc}", param="refusal", code="invalid_refusal_policy")
    if isinstance(exc, RefusalEdgeError) and not isinstance(exc, ModelLoadError):
        return ApiError(400, str(exc))
    return ApiError(500, f"the server failed to generate: {exc}", kind="server_error")


def _event(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"


async def api_error_response(request: Request, exc: ApiError) -> Response:
    return JSONResponse(exc.body(), status_code=exc.status)


async def http_error_response(request: Request, exc: HTTPException) -> Response:
    if exc.status_code == 404:
        error = ApiError(404, f"no route {request.url.path}", code="not_found")
    elif exc.status_code == 405:
        error = ApiError(405, f"{request.method} is not allowed on {request.url.path}", code="method_not_allowed")
    else:
        error = ApiError(exc.status_code, str(exc.detail))
    return JSONResponse(error.body(), status_code=exc.status_code, headers=exc.headers)


async def internal_error_response(request: Request, exc: Exception) -> Response:
    return JSONResponse(as_api_error(exc).body(), status_code=500)
