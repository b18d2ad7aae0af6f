"""Which CPU kernels llama.cpp loads a model with: its extra buffer types (weight repacking, Intel AMX) or not.

llama.cpp's CPU backend puts quantized weights into "extra buffer types" when ``llama_model_params.use_extra_bufts``
is true (its default): the repacked kernels that make most CPUs fast, and on a build compiled with AMX on an AMX CPU
(Intel Xeon 4th gen and later) the AMX matmul, which in the llama.cpp that llama-cpp-python 0.3.36 vendors crashes
(general protection fault in ``ggml_backend_amx_mul_mat``) on any batch of two or more tokens (llama.cpp issue
#20824). Turning them off loses only speed. So the choice is made once per llama.cpp build and CPU:

- ``REFUSAL_EDGE_REPACK=on|off`` (or ``repack=`` when loading, or ``--repack``) forces it;
- otherwise, where the build has an extra buffer type at all, a canary (``kernel_canary``: a tiny quantized model
  written here, decoded with a two-token batch with and without them, in a child process) decides: a child that
  dies of a signal, or logits that differ, mean off (said once on stderr). The result is cached per build and CPU
  (``$REFUSAL_EDGE_CACHE/kernels/``), so the canary costs its ~1 s once per machine and llama-cpp-python install,
  not per start-up; it also catches the next such crash, which a list of known-bad CPUs would not;
- where the canary cannot run (no writable cache, no child process), the known facts decide: AMX build on an AMX
  CPU means off, anything else on.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ...errors import ModelLoadError
from ...files import cache_dir, write_text

REPACK_ENV = "REFUSAL_EDGE_REPACK"
MODES = ("auto", "on", "off")
CANARY_VERSION = 1  # part of the cache key: a changed canary is run again
CANARY_TIMEOUT_S = 120.0
CANARY_MODULE = "refusal_edge.engines.llama.kernel_canary"
# CPU flags (from /proc/cpuinfo) that decide which kernels llama.cpp may take: part of the cache key.
KERNEL_FLAGS = ("amx_tile", "amx_int8", "amx_bf16", "avx512f", "avx512_vnni", "avx512bw", "avx512_bf16",
                "avx_vnni", "avx2", "fma", "f16c")
PLAIN_PASSED = '"plain": "ok"'  # the child's first line: the decode without extra buffer types worked
EXTRA_BUFFER_FEATURES = ("AMX_INT8", "REPACK", "KLEIDIAI")  # system-info features that mean an extra buffer type


@dataclass(frozen=True)
class HostFacts:
    """What the choice depends on: the llama.cpp build (llama-cpp-python version and llama.cpp's system info) and
    the CPU (model name and kernel-relevant flags)."""

    llama_cpp_python: str
    system_info: str
    cpu_model: str
    cpu_flags: tuple[str, ...]

    def feature(self, name: str) -> bool:
        return f"{name} = 1" in self.system_info

    @property
    def extra_buffer_types(self) -> tuple[str, ...]:
        return tuple(f for f in EXTRA_BUFFER_FEATURES if self.feature(f))

    @property
    def amx_path(self) -> bool:
        """A build with AMX kernels on a CPU with AMX: the path that crashed."""
        return self.feature("AMX_INT8") and "amx_int8" in self.cpu_flags

    @property
    def key(self) -> str:
        text = json.dumps([CANARY_VERSION, asdict(self)], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CanaryResult:
    """``outcome``: "ok", "crash" (the child died of a signal with extra buffer types), "wrong" (logits differ with
    them), "broken" (it died even without them), or "inconclusive" (the child could not run: no verdict)."""

    outcome: str
    detail: str
    seconds: float = 0.0
    cached: bool = False


@dataclass(frozen=True)
class KernelChoice:
    use_extra_bufts: bool
    reason: str
    mode: str  # auto, on or off
    canary: CanaryResult | None = None

    @property
    def fell_back(self) -> bool:
        return self.canary is not None and self.canary.outcome in ("crash", "wrong", "broken")

    def describe(self) -> str:
        state = "on" if self.use_extra_bufts else "off"
        return f"extra CPU buffer types (weight repacking, AMX) {state}: {self.reason}"


def parse_mode(value: str | None, what: str = f"${REPACK_ENV}") -> str:
    mode = (value or "auto").strip().lower()
    if mode not in MODES:
        raise ModelLoadError(f"{what} is {value!r}: expected one of {', '.join(MODES)}")
    return mode


def decide(facts: HostFacts, mode: str, canary) -> KernelChoice:
    """The choice: a pure function of the facts, the mode and ``canary`` (called only when a canary is needed,
    returning a CanaryResult)."""
    if mode == "on":
        return KernelChoice(True, "forced on", mode)
    if mode == "off":
        return KernelChoice(False, "forced off", mode)
    extra = facts.extra_buffer_types
    if not extra:
        return KernelChoice(True, "this llama.cpp build has no extra CPU buffer type (nothing to choose)", mode)
    result = canary()
    kinds = "/".join(extra)
    if result.outcome == "ok":
        return KernelChoice(True, f"a two-token canary decode with {kinds} passed ({_when(result)})", mode, result)
    if result.outcome == "broken":
        return KernelChoice(False, f"a two-token canary decode {result.detail} ({_when(result)}): this "
                                   "llama.cpp build does not work on this CPU; reinstall llama-cpp-python", mode, result)
    if result.outcome in ("crash", "wrong"):
        return KernelChoice(False, f"a two-token canary decode with {kinds} {result.detail} ({_when(result)}); "
                                   f"loading without them (set {REPACK_ENV}=on to force)", mode, result)
    if facts.amx_path:
        return KernelChoice(False, f"the canary could not run ({result.detail}); this build's AMX kernels on an AMX "
                                   "CPU crash on batches in llama.cpp issue #20824, so they stay off", mode, result)
    return KernelChoice(True, f"the canary could not run ({result.detail}); no AMX path on this CPU", mode, result)


def _when(result: CanaryResult) -> str:
    return "cached result for this build and CPU" if result.cached else f"measured now, {result.seconds:.1f} s"


# --- facts -------------------------------------------------------------------------------------------------------

def cpu_facts(cpuinfo: str) -> tuple[str, tuple[str, ...]]:
    """The CPU's model name and its kernel-relevant flags, from /proc/cpuinfo's text."""
    model, flags = "", set()
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        name = name.strip()
        if name in ("model name", "Model", "Hardware") and not model:
            model = value.strip()
        elif name in ("flags", "Features") and not flags:
            flags = set(value.split())
    return model, tuple(f for f in KERNEL_FLAGS if f in flags)


@functools.lru_cache(maxsize=1)
def host_facts() -> HostFacts:
    from .lib import llama_build

    version, system_info = llama_build()
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:  # not Linux: the platform string stands in for the model name
        import platform

        cpuinfo = f"model name : {platform.processor() or platform.machine()}"
    model, flags = cpu_facts(cpuinfo)
    return HostFacts(version, system_info, model, flags)


# --- the canary, cached ------------------------------------------------------------------------------------------

def canary_dir() -> Path:
    return cache_dir() / "kernels"


def canary_command() -> list[str]:
    return [sys.executable, "-m", CANARY_MODULE, str(canary_dir())]


def run_canary(facts: HostFacts, command: list[str] | None = None, timeout: float = CANARY_TIMEOUT_S) -> CanaryResult:
    """The canary's verdict for this build and CPU: from the cache, or from a child process (then cached).
    ``command`` replaces the child's command line (tests make it crash on purpose)."""
    record = canary_dir() / f"{facts.key}.json"
    try:
        cached = json.loads(record.read_text(encoding="utf-8"))
        return CanaryResult(cached["outcome"], cached["detail"], float(cached["seconds"]), cached=True)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    result = _run_child(command or canary_command(), timeout)
    if result.outcome != "inconclusive":  # a verdict on the kernels; anything else is tried again next time
        try:
            write_text(record, json.dumps({**asdict(result), "facts": asdict(facts)}, indent=1))
        except OSError:
            pass
    return result


def _run_child(command: list[str], timeout: float) -> CanaryResult:
    t0 = time.perf_counter()
    env = {**os.environ, REPACK_ENV: "auto"}
    try:
        child = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env,
                               stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return CanaryResult("inconclusive", f"the child did not finish within {timeout:g} s")
    except OSError as exc:
        return CanaryResult("inconclusive", f"cannot start a child process: {exc}")
    seconds = time.perf_counter() - t0
    if child.returncode < 0:
        try:
            name = signal.Signals(-child.returncode).name
        except ValueError:
            name = f"signal {-child.returncode}"
        if PLAIN_PASSED not in child.stdout:  # it died before the extra buffer types were even tried
            return CanaryResult("broken", f"crashed even without them ({name})", seconds)
        return CanaryResult("crash", f"crashed ({name})", seconds)
    lines = child.stdout.strip().splitlines()
    if child.returncode != 0 or not lines:
        last = (child.stderr.strip().splitlines() or ["no output"])[-1]
        return CanaryResult("inconclusive", f"the child exited with {child.returncode}: {last[:200]}", seconds)
    try:
        verdict = json.loads(lines[-1])
        return CanaryResult(str(verdict["outcome"]), str(verdict["detail"]), seconds)
    except (ValueError, KeyError, TypeError):
        return CanaryResult("inconclusive", f"the child printed {lines[-1][:200]!r}", seconds)


# --- the choice for a load ---------------------------------------------------------------------------------------

_lock = threading.Lock()
_chosen: KernelChoice | None = None
_announced = False


def choose(repack: str | None = None) -> KernelChoice:
    """The choice for a model load in this process: ``repack`` ("auto", "on", "off"), else $REFUSAL_EDGE_REPACK,
    else auto. Auto is decided once per process (and its canary once per build and CPU)."""
    global _chosen, _announced
    mode = parse_mode(repack, "repack") if repack is not None else parse_mode(os.environ.get(REPACK_ENV))
    if mode != "auto":
        return decide(host_facts(), mode, canary=lambda: None)
    with _lock:
        if _chosen is None:
            facts = host_facts()
            _chosen = decide(facts, mode, canary=lambda: run_canary(facts))
        if _chosen.fell_back and not _announced:
            _announced = True
            print(f"refusal-edge: {_chosen.describe()}", file=sys.stderr)
        return _chosen


def forget() -> None:
    """Drop this process's choice (tests; a changed environment)."""
    global _chosen, _announced
    with _lock:
        _chosen, _announced = None, False
    getattr(host_facts, "cache_clear", lambda: None)()  # (tests may have replaced it)


# --- llama-server ------------------------------------------------------------------------------------------------

def llama_server_flags(cpu_flags: tuple[str, ...], use_extra_bufts: bool) -> list[str]:
    """The llama-server flags that give in-process numbers on this machine, from the same facts: flash attention
    off (on, the default model's probabilities moved by up to 0.17 on borderline prompts; off they match to 1e-7),
    and ``--no-repack`` where the in-process choice is off or the CPU has AMX (a llama-server built for this CPU
    compiles the AMX kernels in, and they crash on its first batch: llama.cpp issue #20824)."""
    flags = ["--flash-attn", "off"]
    if not use_extra_bufts or "amx_int8" in cpu_flags:
        flags.append("--no-repack")
    return flags


def llama_server_flags_here(repack: str | None = None) -> list[str]:
    return llama_server_flags(host_facts().cpu_flags, choose(repack).use_extra_bufts)
