"""One caller at a time on a model whose engine is not thread-safe (a llama.cpp context and its KV cache).

Two threads in one llama.cpp context at once abort the process (a GGML_ASSERT), so ``RefusalModel`` takes this
lock around every call that runs the engine; a stream holds it from its first event until it is exhausted or
closed. The cache then holds one caller's history at a time and the next caller re-prefills what differs, so
prefix reuse stays correct whatever the interleaving. Thread-safe engines (remote ones) are not serialized.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Generator, Iterator, TypeVar

from .errors import ModelBusyError

T = TypeVar("T")


class ModelLock:
    """A lock that refuses, instead of deadlocking, a thread that already holds it (its own stream still open),
    and that may be released from another thread (a stream dropped there is closed by garbage collection)."""

    def __init__(self, serialize: bool = True) -> None:
        self._lock = threading.Lock() if serialize else None
        self._owner: int | None = None

    @contextmanager
    def hold(self, blocking: bool = True, timeout: float | None = None) -> Iterator[None]:
        self.acquire(blocking, timeout)
        try:
            yield
        finally:
            self.release()

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> None:
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        if self._lock is None:
            return
        if self._owner == threading.get_ident():
            raise ModelBusyError("this thread still holds the model: one of its streams is open; exhaust or close() "
                                 "it first (or use `with model.stream(...) as events:`)")
        if not blocking or timeout == 0:
            acquired = self._lock.acquire(blocking=False)
        else:
            acquired = self._lock.acquire(timeout=-1 if timeout is None else timeout)
        if not acquired:
            waited = f" after waiting {timeout:g} s" if blocking and timeout else ""
            raise ModelBusyError(f"the model is busy with another caller's request{waited}; retry, or wait for it "
                                 "(blocking=True, the default)")
        self._owner = threading.get_ident()

    @contextmanager
    def closing(self) -> Iterator[None]:
        """For closing the engine: wait for other threads' calls to finish; this thread's own open stream (which
        can never finish once the engine is gone) does not hold it up."""
        own = self._lock is None or self._owner == threading.get_ident()
        if not own:
            self.acquire()
        try:
            yield
        finally:
            if not own:
                self.release()

    def release(self) -> None:
        if self._lock is not None:
            self._owner = None
            self._lock.release()


class Stream(Iterator[T]):
    """A model's stream of events. It holds the model from its first event until it is exhausted or closed;
    ``with model.stream(...) as events:`` closes it at the end of the block, and a stream dropped half-way is
    closed when it is garbage-collected, so an abandoned one never holds the model for good."""

    def __init__(self, events: Generator[T, None, None]) -> None:
        self._events = events

    def __iter__(self) -> "Stream[T]":
        return self

    def __next__(self) -> T:
        return next(self._events)

    def close(self) -> None:
        self._events.close()

    def __enter__(self) -> "Stream[T]":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        events = getattr(self, "_events", None)
        if events is not None:
            events.close()
