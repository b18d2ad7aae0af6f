"""The Starlette application, assembled: the APIs' routes over one ``Service``, the API key, the browser guard,
and the error handlers that render every failure in the shape of the API that was asked."""

from __future__ import annotations

import asyncio
import functools
import hmac
import time
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import decisions, ollama, openai, ui
from .browser_guard import BrowserGuard
from .errors import ApiError, as_api_error, error_body
from .requests import RequestTerms
from .service import ServerSettings, Service
from .slots import SlotPool

__all__ = ["ServerSettings", "create_app"]


def create_app(pool: SlotPool, settings: ServerSettings) -> Starlette:
    spec = pool.models[0].spec  # every slot holds the same file: one vocabulary, one set of decision tokens

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
        # Byte-exact and constant-time: the header as the bytes the client sent (Starlette decodes headers as
        # latin-1) against the key's UTF-8 bytes, so a UTF-8 key matches and nothing is trimmed or folded.
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode("latin-1"), settings.api_key.encode()):
            raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>' with the key given to "
                                "refusal-edge serve --api-key (or $REFUSAL_EDGE_API_KEY)", code="invalid_api_key")

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": settings.model_id, "slots": len(pool.models),
                             "queued": pool.queued, **pool.stats})

    terms = RequestTerms(settings.policy, spec.category_names, spec.decision_tokens, settings.limits)
    service = Service(pool, settings, terms, functools.partial(openai.model_card, settings, spec, int(time.time())))
    routes = [
        Route("/health", health),
        *guarded(authorize, [*openai.routes(service), *decisions.routes(service), *ollama.routes(service)]),
        *(ui.routes() if settings.ui else []),
    ]
    handlers = {ApiError: api_error_response, HTTPException: http_error_response, Exception: internal_error_response}
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers,
                     middleware=[Middleware(BrowserGuard, access=settings.access)])


def guarded(authorize, routes: list[Route]) -> list[Route]:
    """Every API route checks the API key before its handler runs, the one place it is checked: a route added
    later (GET /api/version was one) cannot forget it."""
    def check_first(endpoint):
        @functools.wraps(endpoint)
        async def checked(request: Request) -> Response:
            authorize(request)
            return await endpoint(request)
        return checked

    return [Route(r.path, check_first(r.endpoint), methods=r.methods, name=r.name) for r in routes]


async def api_error_response(request: Request, exc: ApiError) -> Response:
    return JSONResponse(error_body(request.url.path, exc), status_code=exc.status, headers=exc.headers)


async def http_error_response(request: Request, exc: HTTPException) -> Response:
    if exc.status_code == 404:
        error = ApiError(404, f"no route {request.url.path}", code="not_found")
    elif exc.status_code == 405:
        error = ApiError(405, f"{request.method} is not allowed on {request.url.path}", code="method_not_allowed")
    else:
        error = ApiError(exc.status_code, str(exc.detail))
    return JSONResponse(error_body(request.url.path, error), status_code=exc.status_code, headers=exc.headers)


async def internal_error_response(request: Request, exc: Exception) -> Response:
    return JSONResponse(error_body(request.url.path, as_api_error(exc)), status_code=500)
