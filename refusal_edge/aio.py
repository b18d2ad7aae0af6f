"""asyncio: a RefusalModel's calls from an event loop without blocking it.

Each call runs in a worker thread and takes the model's own lock (access.py), so coroutines, threads and the
event loop may share one model: a call waits for the one before it in its worker thread, never in the loop.
A stream runs on a thread of its own (the lock's holder for as long as the stream is open) and is consumed
with ``async for``; ``async with model.aio.stream(...) as events:`` closes it at the end of the block.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Iterator

if TYPE_CHECKING:  # typed keywords, never evaluated at run time (keywords.py)
    from typing_extensions import Unpack

    from .keywords import StreamOptions

_END = object()  # a worker's "the stream is exhausted" (StopIteration cannot cross a future)


class AsyncRefusalModel:
    """``model.aio``: the same calls as ``RefusalModel``, awaitable. ``stream`` returns an async iterator."""

    def __init__(self, model) -> None:
        self.model = model

    async def decide(self, messages, policy=None, **options):
        return await asyncio.to_thread(self.model.decide, messages, policy, **options)

    async def generate(self, messages, policy=None, **sampling: Unpack[StreamOptions]):
        return await asyncio.to_thread(self.model.generate, messages, policy, **sampling)

    async def scores(self, messages, temperature: float = 1.0, **options):
        return await asyncio.to_thread(self.model.scores, messages, temperature, **options)

    async def score_many(self, conversations, temperature: float = 1.0, **options) -> list:
        """Every result at once (scores and prefill statistics, or an error in a conversation's place)."""
        conversations = list(conversations)
        return await asyncio.to_thread(lambda: list(self.model.score_many(conversations, temperature, **options)))

    def stream(self, messages, policy=None, **options: Unpack[StreamOptions]) -> "AsyncStream":
        return AsyncStream(lambda: self.model.stream(messages, policy, **options))


class AsyncStream:
    """A model stream driven from a thread of its own, one event per ``await``: the model's lock stays with that
    thread, and nothing runs ahead of the consumer."""

    def __init__(self, start: Callable[[], Iterator]) -> None:
        self._start = start
        self._events: Iterator | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="refusal-edge-stream")
        self._done = False

    def __aiter__(self) -> "AsyncStream":
        return self

    async def __anext__(self) -> Any:
        if self._done:
            raise StopAsyncIteration
        try:
            event = await asyncio.get_running_loop().run_in_executor(self._thread, self._next)
        except BaseException:
            await self.aclose()
            raise
        if event is _END:
            await self.aclose()
            raise StopAsyncIteration
        return event

    async def aclose(self) -> None:
        """Close the stream (releasing the model) on its own thread, then stop that thread."""
        if not self._done:
            self._done = True
            await asyncio.get_running_loop().run_in_executor(self._thread, self._close)
            self._thread.shutdown(wait=False)

    async def __aenter__(self) -> "AsyncStream":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    def __del__(self) -> None:
        # Dropped half-way without aclose (a ``break`` out of ``async for``): close it on its thread anyway.
        if not getattr(self, "_done", True):
            self._done = True
            try:
                self._thread.submit(self._close)
                self._thread.shutdown(wait=False)
            except RuntimeError:  # the interpreter is shutting down
                pass

    def _next(self) -> Any:
        if self._events is None:
            self._events = self._start()
        return next(self._events, _END)

    def _close(self) -> None:
        close = getattr(self._events, "close", None)
        if close is not None:
            close()
