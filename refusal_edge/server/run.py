"""Running the app under uvicorn on a socket we bind ourselves, so that port 0 works and the URL is known
before the first request; BackgroundServer does the same in a thread, for tests, benchmarks and embedding."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from ..errors import RefusalEdgeError

STARTUP_TIMEOUT_S = 60.0
GRACEFUL_SHUTDOWN_S = 5


def bind(host: str, port: int) -> socket.socket:
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.create_server(address[:2], family=family, backlog=128)
    except OSError as exc:
        raise RefusalEdgeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    # Accepted connections inherit this. Without it each response's body waits for the client's delayed ACK of
    # its headers (Nagle): 40 ms per request. asyncio sets it only on sockets it binds itself.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def make_server(app, *, log_level: str = "info", quiet: bool = False) -> uvicorn.Server:
    config = uvicorn.Config(app, log_level=log_level, access_log=not quiet, lifespan="on",
                            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
                            **({"log_config": None} if quiet else {}))
    return uvicorn.Server(config)


class BackgroundServer:
    """``with BackgroundServer(app) as server: httpx.get(server.url + "/health")`` on 127.0.0.1, a free port."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0) -> None:
        self.socket = bind(host, port)
        self.url = url_of(self.socket)
        self._server = make_server(app, log_level="warning", quiet=True)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self.socket]},
                                        name="refusal-edge-server", daemon=True)

    def __enter__(self) -> "BackgroundServer":
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError("the server did not start (see the log above)")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join(STARTUP_TIMEOUT_S)
        self.socket.close()
