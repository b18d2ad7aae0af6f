"""Proof that a written GGUF works, before it gets its final name: llama.cpp loads it in a child process.

The child (``load_check_child``) loads the file as the runtime will, checks the vocabulary and the decision tokens
(recorded text, CONTROL, not producible by typed text), tokenizes a sample text and decodes one 2-token batch. Here
the parent turns a refusal, a crash or a problem into a ``ConversionError`` that quotes llama.cpp's own log line
(e.g. ``error loading model vocabulary: unordered_map::at``), compares the sample's tokens with the checkpoint's own
tokenizer where it can, and, where the source checkpoint and torch are at hand, compares the logits of both
positions with transformers'. Callers run it on the temporary file and rename only when it passes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ConversionError
from .load_check_child import MARKER, SAMPLE_TEXT

TIMEOUT_S = 900.0  # a 70B model's mmap'd load and one decode on a slow disk; a tiny model takes about a second
# The largest logit difference accepted, relative to the largest logit, by the coarsest weight type in the file.
# Correct conversions of the tiny test checkpoints stay below 3e-5 (f32) and 2e-3 (f16) of the scale at the two
# positions; wrong conventions move them by 0.24 (Q/K rows unpermuted) to 1.0 (Gemma's 1 + w norms), but a wrong
# attention scale only by 4e-3, which only the f32 tolerance catches: two positions are a load check, not --verify.
LOGIT_TOLERANCE = {"f32": 2e-3, "f16": 1e-2, "bf16": 3e-2, "q8_0": 0.1}  # finest first


def coarsest(*weight_types: str | None) -> str | None:
    """The coarsest of the weight types a file holds (None: one without a tolerance, so no logit comparison)."""
    order = list(LOGIT_TOLERANCE)
    ranks = [order.index(t) if t in order else len(order) for t in weight_types if t is not None]
    return order[max(ranks)] if ranks and max(ranks) < len(order) else None


# llama.cpp log lines that say why a load failed
_REFUSAL = re.compile(r"error|failed|exception|what\(\)|GGML_ASSERT|terminate called|unable|invalid", re.I)
_NOISE = re.compile(r"^(llama_model_load_from_file_impl: failed to load model|llama_model_load: error loading model: "
                    r"error loading model)$")


@dataclass
class LoadCheck:
    """What the child saw: llama.cpp's vocabulary size, the decision tokens, timings and the logit comparison."""

    n_vocab: int
    decision: list[dict]
    seconds: float
    max_logit_delta: float | None = None  # relative to the largest logit
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        control = "refusal tokens CONTROL" if self.decision else "no refusal metadata"
        compared = ("" if self.max_logit_delta is None
                    else f"; logits match the source checkpoint (max |dlogit| {self.max_logit_delta:.1e} of the scale)")
        return (f"checked: llama.cpp loads it (vocabulary of {self.n_vocab}, a 2-token decode, {control}){compared} "
                f"in {self.seconds:.1f} s")


def check_gguf_loads(path: str | os.PathLike, *, source: Path | None = None, weight_type: str | None = None,
                     threads: int | None = None, timeout: float = TIMEOUT_S, command: list[str] | None = None,
                     what: str | None = None) -> LoadCheck:
    """Load ``path`` in a child llama.cpp; raise ConversionError naming what failed. ``source`` (a Hugging Face
    checkpoint directory) adds the tokenizer comparison and, with ``weight_type`` (a key of LOGIT_TOLERANCE) and
    torch installed, the logit comparison. ``command`` replaces the child's command line (tests)."""
    path = Path(path)
    try:
        return _check(path, source, weight_type, threads, timeout, command, what or path.name)
    except ConversionError as exc:
        if what is None or what == path.name:
            raise
        raise ConversionError(f"{exc}; so {what} was not written") from None  # checked under a temporary name


def _check(path: Path, source, weight_type, threads, timeout, command, what: str) -> LoadCheck:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="refusal-edge-load-check-") as tmp:
        argv = (command or [sys.executable, "-m", "refusal_edge.convert.load_check_child"]) + [
            str(path), tmp, str(threads or max(1, min(4, os.cpu_count() or 1)))]
        result, stderr = _run(argv, timeout, what)
        if "error" in result:
            raise ConversionError(f"llama.cpp cannot load {what}: {_refusal_detail(stderr, result['error'])}")
        logits = np.load(Path(tmp) / "logits.npy")
    check = LoadCheck(int(result["n_vocab"]), list(result["decision"]), 0.0)
    if result["problems"]:
        raise ConversionError(f"{what} loads in llama.cpp, but: {'; '.join(result['problems'])}")
    if source is not None:
        _compare_tokenization(source, result["sample"], check)
        if weight_type in LOGIT_TOLERANCE:
            _compare_logits(source, result["decode"], logits, weight_type, check, what)
    check.seconds = time.perf_counter() - t0
    return check


def _run(argv: list[str], timeout: float, what: str) -> tuple[dict, str]:
    try:
        child = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=timeout,
                               stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ConversionError(f"llama.cpp did not load {what} within {timeout:g} s") from None
    except OSError as exc:
        raise ConversionError(f"cannot start the llama.cpp load check: {exc}") from None
    if child.returncode < 0:
        try:
            name = signal.Signals(-child.returncode).name
        except ValueError:
            name = f"signal {-child.returncode}"
        raise ConversionError(f"llama.cpp crashed ({name}) loading or running {what}: "
                              f"{_refusal_detail(child.stderr, 'no message')}")
    lines = [ln[len(MARKER):] for ln in child.stdout.splitlines() if ln.startswith(MARKER)]
    if child.returncode != 0 or not lines:
        raise ConversionError(f"the llama.cpp load check of {what} exited with {child.returncode}: "
                              f"{_refusal_detail(child.stderr, 'no message')}")
    try:
        return json.loads(lines[-1]), child.stderr
    except ValueError:
        raise ConversionError(f"the llama.cpp load check of {what} printed {lines[-1][:200]!r}") from None


def _refusal_detail(stderr: str, fallback: str) -> str:
    """llama.cpp's log lines that say what it refused, most specific first, without repeats."""
    found: list[str] = []
    for line in stderr.splitlines():
        line = line.strip()
        if _REFUSAL.search(line) and not _NOISE.match(line) and line not in found and not line.startswith("Traceback"):
            found.append(line)
    return "; ".join(found[:3])[:600] if found else fallback


def _compare_tokenization(source: Path, ids: list[int], check: LoadCheck) -> None:
    tokenizer_json = source / "tokenizer.json"
    try:
        import tokenizers
    except ImportError:
        check.notes.append("tokenization not compared: the tokenizers package is not installed")
        return
    if not tokenizer_json.is_file():
        check.notes.append("tokenization not compared: the checkpoint has no tokenizer.json")
        return
    try:
        want = tokenizers.Tokenizer.from_file(str(tokenizer_json)).encode(SAMPLE_TEXT, add_special_tokens=False).ids
    except Exception as exc:  # the library's own parse errors: the comparison is a bonus, not a requirement
        check.notes.append(f"tokenization not compared: tokenizers cannot read {tokenizer_json.name}: {exc}")
        return
    if list(want) != list(ids):
        raise ConversionError(
            f"llama.cpp tokenizes {SAMPLE_TEXT!r} as {ids}, the checkpoint's tokenizer as {list(want)}: the "
            "pre-tokenizer or vocabulary is wrong (name llama.cpp's pre-tokenizer with --pre-tokenizer)")


def _compare_logits(source: Path, ids: list[int], logits: np.ndarray, weight_type: str, check: LoadCheck,
                    what: str) -> None:
    reason = _reference_unavailable(source)
    if reason:
        check.notes.append(f"logits not compared with the source checkpoint: {reason}")
        return
    from .verify import TorchReference

    try:
        reference = TorchReference(source)
    except Exception as exc:  # transformers cannot build this checkpoint (remote code, a newer model type)
        check.notes.append(f"logits not compared: transformers cannot load {source}: {str(exc)[:200]}")
        return
    try:
        want = reference.position_logits(ids)
    finally:
        reference.close()
    scale = float(np.abs(want).max()) or 1.0
    delta = float(np.abs(want - logits).max()) / scale
    check.max_logit_delta = delta
    if not delta <= LOGIT_TOLERANCE[weight_type]:
        raise ConversionError(
            f"{what} computes other logits than the source checkpoint: for tokens {ids} the largest difference is "
            f"{delta:.3g} of the logit scale {scale:.3g} (at most {LOGIT_TOLERANCE[weight_type]:g} is rounding for "
            f"{weight_type} weights): a convention of this architecture is not converted right")


def _reference_unavailable(source: Path) -> str | None:
    """Why transformers cannot be the reference here: not installed, or the float32 model would not fit in memory."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        return "torch and transformers are not installed (the torch extra)"
    from .hf_source import HFCheckpoint

    needed = sum(4 * int(t.n_elements) for t in HFCheckpoint(source).tensors.values())
    free = available_memory()
    if free is not None and needed > free // 2:
        from refusal_edge.files import human_size

        return f"the float32 model needs {human_size(needed)}, more than half of the {human_size(free)} available"
    return None


def available_memory() -> int | None:
    """Bytes of memory available now (Linux: MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
