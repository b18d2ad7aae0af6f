"""A deadline on every socket operation of an exchange with an engine, so that ``--engine-timeout`` bounds the whole
exchange and not each read: httpx's timeouts restart with every byte, so a body dripped at one byte a second, or
headers sent the same way, would never time out.

The deadline is the calling thread's (``within``): the HTTP client sets it around each blocking call, and the
connection pool's sockets (``DeadlineBackend``, httpcore's public network-backend interface) cut every connect,
read and write to what is left of it, failing with httpcore's own timeout errors once it has passed.

A thread may also name an event that abandons its reads (``abandoned_when``): the server's slot sets its job's
cancellation, so a client that leaves frees its slot within ``POLL_S`` even while the engine sends nothing.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

_local = threading.local()
POLL_S = 0.2  # how often a read waiting on the engine looks at its thread's abandon event


@contextmanager
def within(deadline: float | None):
    """Socket operations of this thread end by ``deadline`` (time.monotonic()) inside the block."""
    outer = getattr(_local, "deadline", None)
    _local.deadline = deadline if outer is None or deadline is None else min(deadline, outer)
    try:
        yield
    finally:
        _local.deadline = outer


@contextmanager
def abandoned_when(event: threading.Event | None):
    """Reads of this thread inside the block fail (httpcore.ReadError) soon after ``event`` is set."""
    outer = getattr(_local, "abandon", None)
    _local.abandon = event
    try:
        yield
    finally:
        _local.abandon = outer


def _left(timeout: float | None, error) -> float | None:
    deadline = getattr(_local, "deadline", None)
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("the exchange's deadline passed")
    return left if timeout is None else min(timeout, left)


def deadline_transport(httpx, **options):
    """httpx's own transport, its pool's sockets bounded by the calling thread's deadline. Falls back to the plain
    transport if this httpx keeps its pool elsewhere (the loops in http.py still bound streams then)."""
    import httpcore

    transport = httpx.HTTPTransport(**options)
    pool = getattr(transport, "_pool", None)
    inner = getattr(pool, "_network_backend", None)
    if inner is not None:
        pool._network_backend = DeadlineBackend(inner, httpcore)
    return transport


class DeadlineBackend:
    def __init__(self, inner, httpcore) -> None:
        self.inner, self.httpcore = inner, httpcore

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        stream = self.inner.connect_tcp(host, port, _left(timeout, self.httpcore.ConnectTimeout), local_address,
                                        socket_options)
        return DeadlineStream(stream, self.httpcore)

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        stream = self.inner.connect_unix_socket(path, _left(timeout, self.httpcore.ConnectTimeout), socket_options)
        return DeadlineStream(stream, self.httpcore)

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


class DeadlineStream:
    def __init__(self, inner, httpcore) -> None:
        self.inner, self.httpcore = inner, httpcore

    def read(self, max_bytes: int, timeout=None) -> bytes:
        abandon = getattr(_local, "abandon", None)
        if abandon is None:
            return self.inner.read(max_bytes, _left(timeout, self.httpcore.ReadTimeout))
        end = None if timeout is None else time.monotonic() + timeout
        while True:  # short reads, looking at the abandon event between them
            if abandon.is_set():
                raise self.httpcore.ReadError("abandoned: the request's client went away")
            left = _left(None if end is None else end - time.monotonic(), self.httpcore.ReadTimeout)
            if left is not None and left <= 0:
                raise self.httpcore.ReadTimeout("timed out")
            try:
                return self.inner.read(max_bytes, POLL_S if left is None else min(left, POLL_S))
            except self.httpcore.ReadTimeout:
                if left is not None and left <= POLL_S:
                    raise

    def write(self, buffer: bytes, timeout=None) -> None:
        self.inner.write(buffer, _left(timeout, self.httpcore.WriteTimeout))

    def close(self) -> None:
        self.inner.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None):
        stream = self.inner.start_tls(ssl_context, server_hostname, _left(timeout, self.httpcore.ConnectTimeout))
        return DeadlineStream(stream, self.httpcore)

    def get_extra_info(self, info):
        return self.inner.get_extra_info(info)
