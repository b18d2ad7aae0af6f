"""Ollama's API on the same server: /api/chat, /api/generate (NDJSON streaming), /api/tags, /api/show,
/api/version, /api/ps. Requests become the server's ChatRequest (same validation, policy merging, limits,
slots and API key); errors keep Ollama's ``{"error": "..."}`` shape, which its clients raise as ResponseError."""

from __future__ import annotations

import datetime
import hashlib
import time
from dataclasses import dataclass, replace

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..inspection import quantization_name
from . import ollama_wire as wire
from .errors import ApiError, ollama_error_body
from .requests import chat_request, read_json
from .service import JobStream, Service, answer, collect_text, compact_json

NDJSON = "application/x-ndjson"
FAR_FUTURE = datetime.datetime(2318, 1, 1, tzinfo=datetime.timezone.utc)  # loaded for as long as the server runs


@dataclass(frozen=True)
class LineStream:
    """Ollama's streaming wire: one JSON object per line (NDJSON); the last carries ``done`` and the timings."""

    head: dict
    field: str  # "message" (/api/chat) or "response" (/api/generate)
    decision: object
    started: int  # perf_counter_ns when the request arrived
    media_type: str = NDJSON
    trailer: str = ""

    def frame(self, payload: dict) -> str:
        return compact_json(payload) + "\n"

    def error(self, exc: ApiError) -> dict:
        return ollama_error_body(exc)

    def opening(self) -> list[dict]:
        return [wire.piece(self.head, self.field, "", self.decision)]

    def text(self, text: str) -> dict:
        return wire.piece(self.head, self.field, text)

    def finish(self, last) -> list[dict]:
        return [wire.final(self.head, self.field, "", self.decision, last.finish_reason, last.completion_tokens,
                           self.started, time.perf_counter_ns(), last.prompt_tokens)]


def routes(service: Service) -> list[Route]:
    settings, terms = service.settings, service.terms
    name = settings.model_id if ":" in settings.model_id else f"{settings.model_id}:latest"
    loaded_at = time.time()

    async def chat(request: Request) -> Response:
        return await respond(request, "messages", wire.chat_body, "message")

    async def generate(request: Request) -> Response:
        return await respond(request, "prompt", wire.generate_body, "response")

    async def respond(request: Request, asks: str, translate, field: str) -> Response:
        started = time.perf_counter_ns()
        raw = await read_json(request, terms.limits.max_body_bytes)
        head = {"model": raw.get("model") if isinstance(raw.get("model"), str) else name}
        if wire.is_load_request(raw, asks):  # "load the model": it is loaded for as long as the server runs
            return JSONResponse(wire.loaded(head, field))
        n_ctx = service.pool.models[0].engine.n_ctx
        chat = replace(chat_request(translate(raw, n_ctx), terms, names=wire.FIELD_NAMES),
                       truncation=wire.truncation(raw, n_ctx))

        def stream(job, decision) -> Response:
            return JobStream(job, LineStream(head, field, decision, started))

        async def complete(job, decision) -> dict:
            text, last = await collect_text(job)
            return wire.final(head, field, text, decision, last.finish_reason, last.completion_tokens, started,
                              time.perf_counter_ns(), last.prompt_tokens)

        return await answer(request, service.pool, chat, chat.stream, stream, complete)

    async def tags(request: Request) -> Response:
        return JSONResponse({"models": [{"name": name, **model_entry()}]})

    async def show(request: Request) -> Response:
        raw = await read_json(request, terms.limits.max_body_bytes)
        asked = raw.get("model") or raw.get("name")
        base = name.partition(":")[0]  # as Ollama, a name without its tag is the same model
        if asked not in (name, settings.model_id, base, f"{base}:latest"):
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
        entry = model_entry()
        return JSONResponse({"models": [{"name": name, **entry, "expires_at": wire.iso(FAR_FUTURE),
                                         "size_vram": 0, "context_length": service.pool.models[0].engine.n_ctx}]})

    async def version(request: Request) -> Response:
        return JSONResponse({"version": wire.VERSION})

    def model_entry() -> dict:
        tokenizer = service.pool.models[0].tokenizer
        path = tokenizer.path  # the GGUF file, where the vocabulary came from one
        stat = path.stat() if path is not None else None
        # A digest of the file's identity, not of its gigabytes: clients only compare digests for changes.
        identity = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}" if stat else tokenizer.name
        modified = datetime.datetime.fromtimestamp(stat.st_mtime if stat else loaded_at, datetime.timezone.utc)
        return {"model": name, "modified_at": wire.iso(modified), "size": stat.st_size if stat else 0,
                "digest": hashlib.sha256(identity.encode()).hexdigest(), "details": details(tokenizer.metadata)}

    return [Route("/api/chat", chat, methods=["POST"]),
            Route("/api/generate", generate, methods=["POST"]),
            Route("/api/tags", tags),
            Route("/api/show", show, methods=["POST"]),
            Route("/api/ps", ps),
            Route("/api/version", version)]


def details(metadata) -> dict:
    architecture = metadata.get("general.architecture", "")
    quantization = quantization_name(metadata.get("general.file_type"))  # what `refusal-edge inspect` says
    return {"parent_model": "", "format": "gguf", "family": architecture, "families": [architecture],
            "parameter_size": metadata.get("general.size_label", ""),
            "quantization_level": "" if quantization == "unknown" else quantization}
