"""Slots: each model instance (one llama.cpp context) is owned by one worker thread.

A llama.cpp context is not thread-safe, so no request ever touches a model directly: it becomes a Job on a
queue, a slot's thread runs it, and events travel back to the request's event loop. A cancelled job (its
client went away) stops at the next token, and a queued one is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from typing import Iterator, Protocol, Sequence

from .. import settings
from ..engines.remote.deadline import abandoned_when
from ..errors import RefusalEdgeError
from .errors import ApiError

log = logging.getLogger("refusal_edge.server")
CANCELLED = object()  # put on a job's event queue when its client disconnects, to wake whoever waits
RETRY_AFTER_S = 1  # what a 503 (queue full) tells clients to wait: slots free up within a generation


class Work(Protocol):
    """A parsed request: a chat (requests.ChatRequest) or decisions only (decisions.DecisionRequest)."""

    prompt_field: str  # the request field holding the prompt, which an error about it names ("messages", "input")

    def run(self, model) -> Iterator: ...


class Job:
    """One request's trip through a slot. Events: what ``request.run(model)`` yields (for a chat: a Decision,
    then Chunks, the last with a finish_reason; for a decision request: one Decision per input), or an
    exception in place of any of them."""

    def __init__(self, request: Work, loop: asyncio.AbstractEventLoop) -> None:
        self.request = request
        self.events: asyncio.Queue = asyncio.Queue()
        self._loop = loop
        self._cancelled = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def cancel_event(self) -> threading.Event:
        """Set once the job is cancelled (worker side: what a blocked engine read watches)."""
        return self._cancelled

    def cancel_from_any_thread(self) -> None:
        """Cancel from outside the event loop (shutdown): wakes the waiting request if its loop still runs."""
        self._cancelled.set()
        try:
            self._loop.call_soon_threadsafe(self.events.put_nowait, CANCELLED)
        except RuntimeError:  # the loop has closed: nobody waits
            pass

    def cancel(self) -> None:
        """Event-loop side: stop this job's generation (or skip it if still queued)."""
        if not self._cancelled.is_set():
            self._cancelled.set()
            self.events.put_nowait(CANCELLED)

    def emit(self, event: object) -> bool:
        """Worker side: hand an event to the event loop; False if nobody could receive it.

        Cancellation is read before handing over, not after: a client that hangs up right after the last event
        (as every finished request does) must not turn a delivered answer into a "cancelled" one.
        """
        if self._cancelled.is_set():
            return False
        try:
            self._loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the event loop has closed: the server is shutting down
            self._cancelled.set()
            return False
        return True


class SlotPool:
    """``len(models)`` slots serving one FIFO queue of at most ``max_queue`` waiting jobs."""

    def __init__(self, models: Sequence, max_queue: int = settings.SERVER_MAX_QUEUE) -> None:
        if not models:
            raise ValueError("a slot pool needs at least one model")
        self.models = list(models)
        self.max_queue = max_queue
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._running: set[Job] = set()  # what the slots work on now: cancelled at close, so shutdown is quick
        self._lock = threading.Lock()
        self.stats = {"busy": 0, "completed": 0, "cancelled": 0, "failed": 0}

    def start(self) -> None:
        for i, model in enumerate(self.models):
            thread = threading.Thread(target=self._serve, args=(model,), name=f"refusal-edge-slot-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, request: Work) -> Job:
        """Called on the event loop, so the queue-length check cannot race another submit."""
        if self._queue.qsize() >= self.max_queue:
            raise ApiError(503, f"the server is busy: {self._queue.qsize()} requests are waiting for a slot; "
                                "retry later (refusal-edge serve --max-queue, --parallel)",
                           code="server_busy", kind="server_error", headers={"Retry-After": str(RETRY_AFTER_S)})
        job = Job(request, asyncio.get_running_loop())
        self._queue.put(job)
        return job

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def close(self, timeout: float = 5.0) -> None:
        """Cancel the jobs the slots run (a remote engine's reads are abandoned within a moment, whatever the engine
        does), then stop each slot's thread, waiting ``timeout`` seconds in all: the threads are daemons, so one
        stuck in a native call cannot hold the process (a SIGTERM ends the server within seconds)."""
        with self._lock:
            running = list(self._running)
        for job in running:
            job.cancel_from_any_thread()
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()

    def _serve(self, model) -> None:
        while (job := self._queue.get()) is not None:
            if job.cancelled:
                self._count("cancelled")
                continue
            self._count("busy")
            with self._lock:
                self._running.add(job)
            try:
                with abandoned_when(job.cancel_event):  # a remote engine's reads end when the client leaves
                    self._count(self._run(model, job))
            finally:
                with self._lock:
                    self._running.discard(job)
                self._count("busy", -1)

    @staticmethod
    def _run(model, job: Job) -> str:
        events = job.request.run(model)
        try:
            for event in events:
                if not job.emit(event):
                    return "cancelled"
            return "completed"
        except Exception as exc:  # noqa: BLE001 - the request gets the error, the slot serves on
            if not isinstance(exc, RefusalEdgeError):  # a bug, not a bad request: keep the traceback
                log.exception("generation failed")
            return "failed" if job.emit(exc) else "cancelled"
        finally:
            events.close()  # frees the sampler; the KV cache stays for the next request's prefix reuse

    def _count(self, name: str, step: int = 1) -> None:
        with self._lock:
            self.stats[name] += step
