"""OpenAI's chat API on the server: /v1/models and /v1/chat/completions (server-sent events when streaming), with
the refusal decision in every response (shapes in openai_wire.py). Errors keep OpenAI's ``{"error": {...}}`` shape
(errors.openai_error_body)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import rules
from ..metadata import RefusalSpec, short_names
from . import openai_wire as wire
from .errors import ApiError, openai_error_body
from .requests import chat_request, read_json
from .service import JobStream, ServerSettings, Service, answer, collect_text, compact_json


def model_card(settings: ServerSettings, spec: RefusalSpec, created: int) -> dict:
    return {
        "id": settings.model_id, "object": "model", "created": created, "owned_by": "refusal-edge",
        "refusal": {"categories": list(spec.category_names), "short_names": short_names(spec.category_names),
                    "respond_token": spec.respond.token,
                    "category_tokens": {c.name: c.token for c in spec.categories},
                    "policy": settings.policy.to_dict(), "rules": rules.summaries()},
    }


@dataclass(frozen=True)
class EventStream:
    """OpenAI's streaming wire: ``chat.completion.chunk`` objects as server-sent events, ended by ``[DONE]``."""

    head: dict
    decision: object
    include_usage: bool
    refusal_message: bool = True  # a refused answer's text also in delta.refusal (openai_wire.refusal_text)
    media_type: str = "text/event-stream"
    trailer: str = "data: [DONE]\n\n"

    def frame(self, payload: dict) -> str:
        return f"data: {compact_json(payload)}\n\n"

    def error(self, exc: ApiError) -> dict:
        return openai_error_body(exc)

    def opening(self) -> list[dict]:
        # The first chunk carries the role, the decision token to echo back, and the decision itself.
        return [wire.chunk(self.head, wire.first_delta(self.decision), refusal=self.decision.to_dict())]

    def text(self, text: str) -> dict:
        refusal = wire.refusal_text(text, self.decision, self.refusal_message)
        return wire.chunk(self.head, {"content": text, **({"refusal": refusal} if refusal is not None else {})})

    def finish(self, last) -> list[dict]:
        payloads = [wire.chunk(self.head, {}, last.finish_reason)]
        if self.include_usage:
            payloads.append(wire.usage_chunk(self.head, self.decision, last.completion_tokens, last.prompt_tokens))
        return payloads


def routes(service: Service) -> list[Route]:
    settings, terms = service.settings, service.terms

    async def list_models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [service.model_card()]})

    async def get_model(request: Request) -> Response:
        if request.path_params["model_id"] != settings.model_id:
            raise ApiError(404, f"no model {request.path_params['model_id']!r}; this server serves "
                                f"{settings.model_id!r}", param="model", code="model_not_found")
        return JSONResponse(service.model_card())

    async def chat_completions(request: Request) -> Response:
        chat = chat_request(await read_json(request, terms.limits.max_body_bytes), terms)
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": settings.model_id}

        async def complete(job, decision) -> dict:
            text, last = await collect_text(job)
            return wire.completion(head, decision, text, last.finish_reason, last.completion_tokens,
                                   settings.refusal_message, last.prompt_tokens)

        return await answer(request, service.pool, chat, chat.stream,
                            stream=lambda job, decision: JobStream(job, EventStream(
                                head, decision, chat.include_usage, settings.refusal_message)),
                            complete=complete)

    return [Route("/v1/models", list_models),
            Route("/v1/models/{model_id:path}", get_model),
            Route("/v1/chat/completions", chat_completions, methods=["POST"])]
