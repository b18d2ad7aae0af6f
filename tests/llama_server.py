"""A real llama.cpp ``llama-server`` on loopback for the remote-engine tests and benchmarks.

The binary is built once per machine by ``.ci/build-llama-server`` (from the llama.cpp that the pinned
llama-cpp-python sdist vendors) and found through $REFUSAL_EDGE_LLAMA_SERVER or that script's cache. Without it the
tests skip with the reason, except under CI=true, where a missing engine is a failure.
"""

from __future__ import annotations

import importlib.metadata
import os
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from refusal_edge.engines.llama.kernels import llama_server_flags_here

ENV = "REFUSAL_EDGE_LLAMA_SERVER"
STARTUP_S = 120.0


def binary() -> Path | None:
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    version = importlib.metadata.version("llama-cpp-python")
    root = os.environ.get("REFUSAL_EDGE_TOOL_CACHE") or \
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "refusal-edge-tools"
    path = Path(root) / f"llama-server-{version}" / "llama-server"
    return path if path.is_file() else None


def require_binary() -> Path:
    path = binary()
    if path is None or not (path.is_file() and os.access(path, os.X_OK)):
        missing_engine(f"llama-server is not built (${ENV} unset, no cached binary): run .ci/build-llama-server, "
                       f"or export {ENV}=/path/to/llama-server")
    return path


def missing_engine(reason: str) -> None:
    """Skip with the reason; under CI=true, where the engine is installed, fail instead."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def wait_healthy(server, name: str, startup_s: float, poll_s: float, log) -> None:
    """Wait until ``server.url``'s /health answers 200; if ``server.process`` exits or the time runs out, stop the
    server and raise with ``log()`` (its output). Shared by the llama-server and vLLM fixtures."""
    deadline = time.monotonic() + startup_s
    with httpx.Client(trust_env=False, timeout=2) as http:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(f"{name} exited ({server.process.returncode}):\n{log()}")
            try:
                if http.get(server.url + "/health").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(poll_s)
    server.__exit__()
    raise RuntimeError(f"{name} did not start within {startup_s:g} s:\n{log()}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LlamaServer:
    """``with LlamaServer(model, slots=2) as server: server.url``: one process on 127.0.0.1, killed on exit."""

    def __init__(self, model: Path, *, slots: int = 1, n_ctx: int = 256, threads: int = 1, log: Path | None = None,
                 extra: tuple[str, ...] = (), executable: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log or Path(f"/tmp/llama-server-{self.port}.log")
        self.command = [str(executable or require_binary()), "-m", str(model), "--host", "127.0.0.1",
                        "--port", str(self.port), "--threads", str(threads), "--threads-batch", str(threads),
                        "-c", str(n_ctx * slots),
                        "-np", str(slots), "--no-webui",
                        # What makes its numbers the in-process ones on this machine: flash attention off (llama-server
                        # turns it on by default, llama-cpp-python off), and no AMX kernels where they crash.
                        *llama_server_flags_here(), *extra]
        self.process = None

    def __enter__(self) -> "LlamaServer":
        with open(self.log, "w") as out:
            self.process = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT)
        wait_healthy(self, "llama-server", STARTUP_S, poll_s=0.1, log=self.log.read_text)
        return self

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
