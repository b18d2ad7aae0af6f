"""The Starlette application: routes, API key, body limit, OpenAI-shaped errors, server-sent events."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..errors import ModelLoadError, NonFiniteScoresError, PolicyError, PromptTooLongError, RefusalEdgeError
from ..metadata import RefusalSpec, short_names
from ..policy import Policy
from ..remote.errors import EngineError
from . import protocol
from .guard import Access, Guard
from .protocol import ApiError, ChatRequest, Limits
from .slots import CANCELLED, Job, SlotPool, Work
from .truncation import SERVER_CONTEXT_OPTION

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy may hold tokens back


@dataclass(frozen=True)
class ServerSettings:
    model_id: str
    policy: Policy
    limits: Limits = field(default_factory=Limits)
    api_key: str | None = None
    ui: bool = True  # the dials page at / (refusal-edge serve --no-ui turns it off)
    access: Access = field(default_factory=Access)  # other web origins and Host names allowed (guard.py)

    def __post_init__(self) -> None:
        if self.api_key == "":  # an empty bearer would match it: there is a key or there is none
            raise ValueError("api_key is empty: give a key, or None to serve without one")


@dataclass(frozen=True)
class Service:
    """What every API (OpenAI, Ollama, moderation, the page) shares: slots, settings, the model's decision
    tokens, one API-key check and one way to read requests, so no API re-implements them."""

    pool: SlotPool
    settings: ServerSettings
    spec: RefusalSpec
    authorize: Callable[[Request], None]
    model_card: Callable[[], dict]

    @property
    def decision_tokens(self) -> frozenset[str]:
        return frozenset(ref.token for ref in self.spec.refs)

    def chat_request(self, raw: dict) -> ChatRequest:
        return protocol.chat_request(raw, policy=self.settings.policy, categories=self.spec.category_names,
                                     decision_tokens=self.decision_tokens, limits=self.settings.limits)

    def policy(self, raw: object) -> Policy:
        """The request's ``refusal`` object merged over the server's policy."""
        return protocol.parse_policy(raw, self.settings.policy, self.spec.category_names)

    async def read_json(self, request: Request) -> dict:
        self.authorize(request)
        return protocol.load_json(await read_body(request, self.settings.limits.max_body_bytes))


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


def create_app(pool: SlotPool, settings: ServerSettings) -> Starlette:
    spec = pool.models[0].spec  # every slot holds the same file: one vocabulary, one set of decision tokens
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
            "refusal": {"categories": list(spec.category_names), "short_names": short_names(spec.category_names),
                        "respond_token": spec.respond.token,
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

    service = Service(pool, settings, spec, authorize, model_card)

    async def chat_completions(request: Request) -> Response:
        chat = service.chat_request(await service.read_json(request))
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": settings.model_id}
        return await answer(request, pool, chat, chat.stream,
                            stream=lambda job, decision: JobStream(job, sse(job, head, decision, chat.include_usage)),
                            complete=lambda job, decision: collect(job, head, decision))

    # The other APIs import this module's helpers, hence imported here rather than at the top.
    from . import decisions, ollama, ui

    routes = [
        Route("/health", health),
        Route("/v1/models", list_models),
        Route("/v1/models/{model_id:path}", get_model),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        *decisions.routes(service),
        *ollama.routes(service),
        *(ui.routes() if settings.ui else []),
    ]
    handlers = {ApiError: api_error_response, HTTPException: http_error_response, Exception: internal_error_response}
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers,
                     middleware=[Middleware(Guard, access=settings.access)])


async def answer(request: Request, pool: SlotPool, work: Work, streaming: bool,
                 stream: Callable[[Job, object], Response] | None,
                 complete: Callable[[Job, object], Awaitable[dict]]) -> Response:
    """Run ``work`` on a slot; its first event (a Decision) goes to ``stream`` or ``complete``. The job is
    cancelled if the client leaves, and a failure before the first event becomes the request's error."""
    job = pool.submit(work)
    watcher = asyncio.create_task(cancel_on_disconnect(request, job))
    try:
        first = await next_event(job)  # the decision, or the reason there is none (prompt too long, ...)
        if streaming:
            watcher.cancel()  # from here on the streaming response watches the connection itself
            return stream(job, first)
        return JSONResponse(await complete(job, first))
    except ClientGone:
        return Response(status_code=499)  # nginx's "client closed request"; nobody is there to read it
    except BaseException:
        job.cancel()
        raise
    finally:
        watcher.cancel()


class JobStream(StreamingResponse):
    """A streaming response (server-sent events, or NDJSON for Ollama) that cancels its job however it ends:
    finished, failed, or disconnected (Starlette cancels the body iterator on disconnect, possibly before it
    ever started)."""

    def __init__(self, job: Job, events, media_type: str = "text/event-stream") -> None:
        super().__init__(events, media_type=media_type, headers=SSE_HEADERS)
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
    text, last = await collect_text(job)
    return protocol.completion(head, decision, text, last.finish_reason, last.completion_tokens)


async def collect_text(job: Job):
    """The rest of a chat job's answer: (text, last Chunk, which carries finish_reason and the token count)."""
    parts = []
    while True:
        event = await next_event(job)
        parts.append(event.text)
        if event.finish_reason:
            return "".join(parts), event


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
        return ApiError(400, exc.naming(SERVER_CONTEXT_OPTION), param="messages", code="context_length_exceeded")
    if isinstance(exc, EngineError):  # the remote engine failed or answered nonsense: a bad gateway, no decision
        return ApiError(502, str(exc), code="engine_error", kind="server_error")
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
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def http_error_response(request: Request, exc: HTTPException) -> Response:
    if exc.status_code == 404:
        error = ApiError(404, f"no route {request.url.path}", code="not_found")
    elif exc.status_code == 405:
        error = ApiError(405, f"{request.method} is not allowed on {request.url.path}", code="method_not_allowed")
    else:
        error = ApiError(exc.status_code, str(exc.detail))
    body = {"error": error.message} if request.url.path.startswith("/api/") else error.body()  # Ollama's shape
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def internal_error_response(request: Request, exc: Exception) -> Response:
    return JSONResponse(as_api_error(exc).body(), status_code=500)
