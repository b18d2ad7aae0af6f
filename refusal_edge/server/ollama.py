"""Ollama's API on the same server: /api/chat, /api/generate (NDJSON streaming), /api/tags, /api/show,
/api/version, /api/ps. Requests become the server's ChatRequest (same validation, policy merging, limits,
slots and API key); errors keep Ollama's ``{"error": "..."}`` shape, which its clients raise as ResponseError."""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import time
from dataclasses import replace

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import ollama_protocol as wire
from .app import ClientGone, Service, answer, collect_text, next_event, JobStream
from .protocol import ApiError

NDJSON = "application/x-ndjson"
FAR_FUTURE = datetime.datetime(2318, 1, 1, tzinfo=datetime.timezone.utc)  # loaded for as long as the server runs


def ollama_errors(handler):
    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)
    return wrapped


def routes(service: Service) -> list[Route]:
    settings = service.settings
    name = settings.model_id if ":" in settings.model_id else f"{settings.model_id}:latest"
    loaded_at = time.time()

    async def chat(request: Request) -> Response:
        return await respond(request, "messages", wire.chat_body, "message")

    async def generate(request: Request) -> Response:
        return await respond(request, "prompt", wire.generate_body, "response")

    async def respond(request: Request, asks: str, translate, field: str) -> Response:
        started = time.perf_counter_ns()
        raw = await service.read_json(request)
        head = {"model": raw.get("model") if isinstance(raw.get("model"), str) else name}
        if wire.is_load_request(raw, asks):  # "load the model": it is loaded for as long as the server runs
            return JSONResponse(wire.loaded(head, field))
        n_ctx = service.pool.models[0].engine.n_ctx
        try:
            chat = replace(service.chat_request(translate(raw, n_ctx)), truncation=wire.truncation(raw, n_ctx))
        except ApiError as exc:
            raise wire.rename_error(exc) from None

        def stream(job, decision) -> Response:
            return JobStream(job, lines(job, head, field, decision, started), media_type=NDJSON)

        async def complete(job, decision) -> dict:
            text, last = await collect_text(job)
            return wire.final(head, field, text, decision, last.finish_reason, last.completion_tokens, started,
                              time.perf_counter_ns())

        return await answer(request, service.pool, chat, chat.stream, stream, complete)

    async def tags(request: Request) -> Response:
        service.authorize(request)
        return JSONResponse({"models": [{"name": name, **model_entry()}]})

    async def show(request: Request) -> Response:
        raw = await service.read_json(request)
        asked = raw.get("model") or raw.get("name")
        if asked not in (name, settings.model_id):
            raise ApiError(404, f"model '{asked}' not found; this server serves '{name}'")
        metadata = service.pool.models[0].tokenizer.metadata
        card = service.model_card()
        return JSONResponse({
            "modelfile": "", "parameters": "", "license": "",
            "template": metadata.get("tokenizer.chat_template", ""),
            "details": details(metadata), "capabilities": ["completion"],
            "model_info": {k: v for k, v in metadata.items() if not k.startswith("tokenizer.")},
            "modified_at": model_entry()["modified_at"], "refusal": card["refusal"],
        })

    async def ps(request: Request) -> Response:
        service.authorize(request)
        entry = model_entry()
        return JSONResponse({"models": [{"name": name, **entry, "expires_at": wire.iso(FAR_FUTURE),
                                         "size_vram": 0, "context_length": service.pool.models[0].engine.n_ctx}]})

    async def version(request: Request) -> Response:
        return JSONResponse({"version": wire.VERSION})

    def model_entry() -> dict:
        tokenizer = service.pool.models[0].tokenizer
        path = getattr(tokenizer, "path", None)  # a GGUF file under llama.cpp; other engines may have none
        stat = path.stat() if path is not None else None
        # A digest of the file's identity, not of its gigabytes: clients only compare digests for changes.
        identity = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}" if stat else tokenizer.name
        modified = datetime.datetime.fromtimestamp(stat.st_mtime if stat else loaded_at, datetime.timezone.utc)
        return {"model": name, "modified_at": wire.iso(modified), "size": stat.st_size if stat else 0,
                "digest": hashlib.sha256(identity.encode()).hexdigest(), "details": details(tokenizer.metadata)}

    return [Route("/api/chat", ollama_errors(chat), methods=["POST"]),
            Route("/api/generate", ollama_errors(generate), methods=["POST"]),
            Route("/api/tags", ollama_errors(tags)),
            Route("/api/show", ollama_errors(show), methods=["POST"]),
            Route("/api/ps", ollama_errors(ps)),
            Route("/api/version", version)]


def details(metadata) -> dict:
    architecture = metadata.get("general.architecture", "")
    return {"parent_model": "", "format": "gguf", "family": architecture, "families": [architecture],
            "parameter_size": metadata.get("general.size_label", ""), "quantization_level": ""}


async def lines(job, head: dict, field: str, decision, started: int):
    yield _line(wire.piece(head, field, "", decision))
    while True:
        try:
            event = await next_event(job)
        except ClientGone:
            return
        except ApiError as exc:  # mid-stream failure: Ollama's clients raise on an ``error`` line
            yield _line({"error": exc.message})
            return
        if event.text:
            yield _line(wire.piece(head, field, event.text))
        if event.finish_reason:
            yield _line(wire.final(head, field, "", decision, event.finish_reason, event.completion_tokens, started,
                                   time.perf_counter_ns()))
            return


def _line(payload: dict) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")) + "\n"
