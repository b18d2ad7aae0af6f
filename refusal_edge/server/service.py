"""The answer path every API shares: settings, the ``Service`` (slots, settings, the terms requests are checked
against), running a request on a slot, and one event loop that streams a job's answer through an API's wire codec
(``Wire``: its framing, its error shape, its field names). An API module (openai.py, ollama.py, decisions.py) holds
only its routes and codec; requests.py reads and validates requests, errors.py shapes what fails."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from ..policy import Policy
from .errors import ApiError, as_api_error
from .browser_guard import Access
from .headers import decision_headers
from .requests import Limits, RequestTerms
from .slots import CANCELLED, Job, SlotPool, Work

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy may hold tokens back


@dataclass(frozen=True)
class ServerSettings:
    model_id: str
    policy: Policy
    limits: Limits = field(default_factory=Limits)
    api_key: str | None = None
    ui: bool = True  # the dials page at / (refusal-edge serve --no-ui turns it off)
    access: Access = field(default_factory=Access)  # other web origins and Host names allowed (browser_guard.py)
    refusal_message: bool = True  # a refused answer's text also in OpenAI's message.refusal (openai_wire.refusal_text)

    def __post_init__(self) -> None:
        if self.api_key is not None and not self.api_key.strip():  # blank: matches no client anyone means
            raise ValueError("api_key is blank: give a key, or None to serve without one")


@dataclass(frozen=True)
class Service:
    """What every API (OpenAI, Ollama, moderation, the page) shares: slots, settings, what every request is checked
    against and the model's card, so no API re-implements them. The API key is checked before any API handler runs
    (app.guarded)."""

    pool: SlotPool
    settings: ServerSettings
    terms: RequestTerms  # the server's policy and limits, the model's categories and decision tokens (requests.py)
    model_card: Callable[[], dict]


class Wire(Protocol):
    """One API's way of streaming one answer: what it sends first, per piece of text and at the end, how one
    message is framed (server-sent events, NDJSON) and what an error mid-stream looks like."""

    media_type: str
    trailer: str  # sent after the last message of a finished answer ("" for none)

    def frame(self, payload: dict) -> str: ...

    def error(self, exc: ApiError) -> dict: ...

    def opening(self) -> list[dict]: ...

    def text(self, text: str) -> dict: ...

    def finish(self, last) -> list[dict]: ...


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


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
            response = stream(job, first)
        else:
            response = JSONResponse(await complete(job, first))
        response.headers.update(decision_headers([first]))  # before the first byte: the decision is made
        return response
    except ClientGone:
        return Response(status_code=499)  # nginx's "client closed request"; nobody is there to read it
    except BaseException:
        job.cancel()
        raise
    finally:
        watcher.cancel()


class JobStream(StreamingResponse):
    """A job's answer streamed through a ``Wire``; the job is cancelled however the response ends: finished,
    failed, or disconnected (Starlette cancels the body iterator on disconnect, possibly before it ever started)."""

    def __init__(self, job: Job, wire: Wire) -> None:
        super().__init__(stream_events(job, wire), media_type=wire.media_type, headers=STREAM_HEADERS)
        self.job = job

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.job.cancel()


async def stream_events(job: Job, wire: Wire):
    """The one streaming loop: the opening, then each piece of text, then the end (or the error that cut it)."""
    for payload in wire.opening():
        yield wire.frame(payload)
    while True:
        try:
            event = await next_event(job)
        except ClientGone:
            return
        except ApiError as exc:  # mid-stream failure: clients raise on an error message
            yield wire.frame(wire.error(exc))
            return
        if event.text:
            yield wire.frame(wire.text(event.text))
        if event.finish_reason:
            for payload in wire.finish(event):
                yield wire.frame(payload)
            if wire.trailer:
                yield wire.trailer
            return


def compact_json(payload: dict) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


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
        raise as_api_error(event, job.request.prompt_field)
    return event


async def cancel_on_disconnect(request: Request, job: Job) -> None:
    """With the body read, the next ASGI message is the disconnect (or the end of the response)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    job.cancel()
