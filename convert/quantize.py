"""Quantization through llama.cpp's own quantizer (llama-cpp-python's ``llama_model_quantize``).

llama.cpp copies every metadata key of the input, so the refusal metadata and the CONTROL token types survive;
the result is checked afterwards all the same.
"""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path

from refusal_edge.files import human_size

from .errors import ConversionError
from .output import SPACE_MARGIN, atomic_output, check_output, check_space

# name -> (llama_ftype attribute, approximate bits per weight for the disk-space estimate)
QUANT_TYPES = {
    "q4_0": ("LLAMA_FTYPE_MOSTLY_Q4_0", 4.5), "q4_1": ("LLAMA_FTYPE_MOSTLY_Q4_1", 5.0),
    "q5_0": ("LLAMA_FTYPE_MOSTLY_Q5_0", 5.5), "q5_1": ("LLAMA_FTYPE_MOSTLY_Q5_1", 6.0),
    "q8_0": ("LLAMA_FTYPE_MOSTLY_Q8_0", 8.5),
    "q2_k": ("LLAMA_FTYPE_MOSTLY_Q2_K", 3.4), "q3_k_s": ("LLAMA_FTYPE_MOSTLY_Q3_K_S", 3.5),
    "q3_k_m": ("LLAMA_FTYPE_MOSTLY_Q3_K_M", 3.9), "q3_k_l": ("LLAMA_FTYPE_MOSTLY_Q3_K_L", 4.3),
    "q4_k_s": ("LLAMA_FTYPE_MOSTLY_Q4_K_S", 4.6), "q4_k_m": ("LLAMA_FTYPE_MOSTLY_Q4_K_M", 4.9),
    "q5_k_s": ("LLAMA_FTYPE_MOSTLY_Q5_K_S", 5.5), "q5_k_m": ("LLAMA_FTYPE_MOSTLY_Q5_K_M", 5.7),
    "q6_k": ("LLAMA_FTYPE_MOSTLY_Q6_K", 6.6),
    "iq4_nl": ("LLAMA_FTYPE_MOSTLY_IQ4_NL", 4.5), "iq4_xs": ("LLAMA_FTYPE_MOSTLY_IQ4_XS", 4.3),
    "f16": ("LLAMA_FTYPE_MOSTLY_F16", 16.0), "bf16": ("LLAMA_FTYPE_MOSTLY_BF16", 16.0),
    "f32": ("LLAMA_FTYPE_ALL_F32", 32.0),
}
EMBEDDING_TYPES = {"f32": "GGML_TYPE_F32", "f16": "GGML_TYPE_F16", "bf16": "GGML_TYPE_BF16",
                   "q8_0": "GGML_TYPE_Q8_0", "q6_k": "GGML_TYPE_Q6_K"}


def check_quant_type(name: str) -> str:
    key = name.lower()
    if key not in QUANT_TYPES:
        raise ConversionError(f"unknown quantization type {name!r}: choose one of {', '.join(QUANT_TYPES)}")
    return key


def quantize_gguf(
    source: str | os.PathLike,
    output: str | os.PathLike,
    qtype: str,
    *,
    checked: bool = False,
    keep_embeddings: str | None = None,
    force: bool = False,
    threads: int | None = None,
    progress: bool = True,
    verbose: bool = False,
    allow_requantize: bool = False,
    check_load: bool = True,
    log=None,
) -> Path:
    """Quantize ``source`` into ``output`` (atomically); ``keep_embeddings`` holds token_embd and output at that type;
    ``checked``: the caller has checked the output path and the free space already (`convert --quant`).

    llama.cpp's log is captured (shown with ``verbose``) and its error lines end up in the error message. Unless
    ``check_load`` is off, llama.cpp must then load the result in a child process (``load_check``) before it gets
    its name.
    """
    from refusal_edge.gguf_header import check_gguf_file
    from refusal_edge.errors import ModelLoadError

    key = check_quant_type(qtype)
    source, output = Path(source), (Path(output) if checked else check_output(output, force, inputs=(Path(source),)))
    try:
        check_gguf_file(source)
    except ModelLoadError as exc:
        raise ConversionError(str(exc)) from None
    if keep_embeddings is not None and keep_embeddings not in EMBEDDING_TYPES:
        raise ConversionError(f"--keep-embeddings {keep_embeddings!r}: choose one of {', '.join(EMBEDDING_TYPES)}")
    estimate = int(source.stat().st_size * QUANT_TYPES[key][1] / 16) + SPACE_MARGIN
    if not checked:
        check_space(output.parent, estimate)

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANT_TYPES[key][0])
    params.nthread = threads or 0
    params.allow_requantize = allow_requantize
    if keep_embeddings is not None:
        ggml_type = getattr(llama_cpp, EMBEDDING_TYPES[keep_embeddings])
        params.token_embedding_type = ggml_type
        params.output_tensor_type = ggml_type
    with atomic_output(output, force) as tmp:
        label = f"quantizing {output.name} ({key})"  # the output's name: tmp is a temporary file's
        code, llama_log = _run_quantize(llama_cpp, source, tmp, params, progress and label, estimate, verbose)
        if code != 0:
            import shutil

            if shutil.disk_usage(output.parent).free < (64 << 20):
                raise ConversionError(f"disk full while quantizing into {output}: free some space and run again")
            detail = " ".join(line.strip() for line in llama_log if "error" in line.lower() or "failed" in line.lower())
            hint = " (the input is already quantized: pass --allow-requantize)" if "requantiz" in detail else ""
            raise ConversionError(
                f"llama.cpp could not quantize {source} to {key}: {detail or f'error code {code}'}{hint}")
        _check_metadata_kept(source, tmp)
        if check_load:
            from .load_check import check_gguf_loads

            checked = check_gguf_loads(tmp, threads=threads, what=output.name)
            if log is not None:
                log(checked.summary())
    return output


_LOG_CALLBACK = None  # keeps the ctypes callback alive while llama.cpp may call it


def _run_quantize(llama_cpp, source: Path, tmp: Path, params, progress: str | bool, estimate: int, verbose: bool):
    """Run the quantizer in a thread (it releases the GIL) while a progress display (labelled ``progress``, if any)
    follows the output's size."""
    global _LOG_CALLBACK
    import sys

    from llama_cpp import _logger

    log: list[str] = []

    @llama_cpp.llama_log_callback
    def capture(level, text, user_data):
        log.append(text.decode("utf-8", errors="replace"))
        if verbose:
            print(log[-1], end="", flush=True, file=sys.stderr)

    _LOG_CALLBACK = capture
    result: dict = {}

    def work():
        try:
            result["code"] = llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(),
                                                            ctypes.byref(params))
        except Exception as exc:  # pragma: no cover - ctypes errors
            result["error"] = exc

    llama_cpp.llama_log_set(capture, ctypes.c_void_p(0))
    try:
        thread = threading.Thread(target=work, name="llama-quantize", daemon=True)
        thread.start()
        from refusal_edge.progress import Progress

        with Progress(str(progress), estimate, unit="B", enabled=bool(progress)) as bar:
            while thread.is_alive():
                thread.join(0.25)
                size = tmp.stat().st_size if tmp.exists() else 0
                bar.update(max(0, min(size, estimate) - bar.n))
    finally:
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
    if "error" in result:  # pragma: no cover
        raise ConversionError(f"llama.cpp's quantizer failed: {result['error']}")
    return int(result.get("code", 1)), log


def _check_metadata_kept(source: Path, output: Path) -> None:
    """The refusal metadata of the input must be in the output, byte for byte."""
    from refusal_edge.gguf_header import read_fields

    keys = ("refusal.spec", "refusal.schema_version")
    before, after = read_fields(source, keys), read_fields(output, keys)
    if before != after:
        raise ConversionError(f"llama.cpp's quantizer dropped or changed the refusal metadata ({before} -> {after})")


def describe(path: Path) -> str:
    return f"{path} ({human_size(path.stat().st_size)})"

