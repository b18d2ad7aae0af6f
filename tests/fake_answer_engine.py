"""Fake answer engines for guard mode: OpenAI-compatible chat APIs speaking the documented wire formats of Ollama,
LM Studio, llama-server and vLLM, quirks included, and misbehaving on request (down, slow, errors, garbage).

Each records the bodies it was sent, so that a test can prove what never reached it."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from refusal_edge.server.run import BackgroundServer

FLAVORS = ("ollama", "lmstudio", "llama-server", "vllm")
ANSWER = ["Paris", " is", " the", " capital", "."]


@dataclass
class Behaviour:
    flavor: str = "ollama"
    model: str = "llama3.2:latest"
    pieces: list = field(default_factory=lambda: list(ANSWER))
    misbehave: str | None = None  # "slow", "error", "garbage", "no-choices", "mid-stream-error", "unfinished", "drip"
    delay_s: float = 0.0  # before the first piece ("slow")
    api_key: str | None = None
    received: list = field(default_factory=list)  # request bodies of /v1/chat/completions, in order


def chunk(b: Behaviour, delta: dict, finish: str | None = None, **extra) -> dict:
    body = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": b.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
    if b.flavor == "ollama":
        body["system_fingerprint"] = "fp_ollama"
    elif b.flavor == "lmstudio":
        body["system_fingerprint"] = b.model
    return body


def usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def error_body(b: Behaviour, status: int, message: str) -> dict:
    if b.flavor == "lmstudio":  # LM Studio: the error is a bare string
        return {"error": message}
    if b.flavor == "vllm":  # vLLM: the message at the top level
        return {"object": "error", "message": message, "type": "BadRequestError", "param": None, "code": status}
    return {"error": {"message": message, "type": "api_error" if b.flavor == "ollama" else "server_error",
                      "param": None, "code": None}}


def events(b: Behaviour, include_usage: bool):
    """The chunks of one streamed answer, as the flavour sends them."""
    pieces = b.pieces
    if b.flavor == "llama-server":
        yield chunk(b, {"role": "assistant", "content": None})  # a role-only opening, content null
    elif b.flavor == "vllm":
        yield chunk(b, {"role": "assistant", "content": ""})
    for i, piece in enumerate(pieces):
        delta = {"role": "assistant", "content": piece} if b.flavor == "ollama" else {"content": piece}
        if b.flavor == "ollama" and i == len(pieces) - 1:
            # Ollama: the last piece of text may arrive with the finish reason in the same chunk
            yield chunk(b, delta, "stop")
            break
        if b.flavor == "lmstudio" and i == 0:
            yield chunk(b, {**delta, "reasoning_content": "thinking..."})  # reasoning is not the answer
            continue
        yield chunk(b, delta)
    n_usage = usage(7, len(pieces))
    if b.flavor == "llama-server":
        yield chunk(b, {}, "stop")
        if include_usage:
            yield {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": b.model,
                   "choices": [], "usage": n_usage, "timings": {"prompt_n": 7}}
    elif b.flavor == "lmstudio":  # LM Studio: usage on the final chunk itself
        yield chunk(b, {}, "stop", usage=n_usage)
    elif b.flavor == "vllm":
        yield chunk(b, {"content": ""}, "stop")
        if include_usage:
            yield {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": b.model,
                   "choices": [], "usage": n_usage}
    elif include_usage:  # Ollama: a chunk of its own, empty choices
        yield {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": b.model,
               "system_fingerprint": "fp_ollama", "choices": [], "usage": n_usage}


def app(b: Behaviour) -> Starlette:
    def authorized(request: Request) -> bool:
        return b.api_key is None or request.headers.get("authorization") == f"Bearer {b.api_key}"

    async def models(request: Request) -> Response:
        if not authorized(request):
            return JSONResponse(error_body(b, 401, "invalid api key"), status_code=401)
        return JSONResponse({"object": "list", "data": [{"id": b.model, "object": "model", "owned_by": "library"}]})

    async def chat(request: Request) -> Response:
        body = await request.json()
        b.received.append(body)
        if not authorized(request):
            return JSONResponse(error_body(b, 401, "invalid api key"), status_code=401)
        if b.flavor in ("ollama", "lmstudio") and body.get("model") != b.model:
            return JSONResponse(error_body(b, 404, f'model "{body.get("model")}" not found, try pulling it first'),
                                status_code=404)
        if b.misbehave == "error":
            return JSONResponse(error_body(b, 500, "out of memory"), status_code=500)
        if b.misbehave == "garbage":
            return Response("data: <html>oops</html>\n\n", media_type="text/event-stream")
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        async def stream():
            if b.delay_s:
                await asyncio.sleep(b.delay_s)  # a stalled engine: nothing, not even headers' worth of body
            for n, event in enumerate(events(b, include_usage)):
                if b.misbehave == "no-choices":
                    event = {"object": "chat.completion.chunk", "choices": "nope"}
                if b.misbehave == "mid-stream-error" and n == 2:
                    yield f"data: {json.dumps(error_body(b, 500, 'the engine crashed'))}\n\n"
                    return
                if b.misbehave == "unfinished" and event["choices"] and event["choices"][0]["finish_reason"]:
                    return
                yield f"data: {json.dumps(event)}\n\n"
                if b.misbehave == "drip":
                    await asyncio.sleep(0.3)
            yield "data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/models", models), Route("/v1/chat/completions", chat, methods=["POST"])])


def serve(b: Behaviour) -> BackgroundServer:
    return BackgroundServer(app(b))
