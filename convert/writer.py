"""Write a GGUF from (architecture parameters, tokenizer fields, named tensors, refusal spec), tensor by tensor.

``write_gguf`` is the one entry point, reusable by anything that builds a refusal-token GGUF (the converter, the
embedded default model). Tensors may be numpy arrays or ``LazyTensor`` objects whose rows are read in chunks, so a
checkpoint never has to fit in memory. The refusal metadata is written only through ``refusal_edge.metadata``:
``spec.gguf_fields()``, after forcing the refusal tokens to CONTROL and checking them with ``spec.check_against``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Mapping

import gguf
import numpy as np

from refusal_edge.metadata import TOKEN_TYPE_CONTROL, RefusalSpec

from .errors import ConversionError
from .hf_source import LazyTensor
from .llama_tensors import ArchParams, ArrayTensor
from .output import SPACE_MARGIN, atomic_output, check_output, check_space

Q = gguf.GGMLQuantizationType
OUTTYPES = {"f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0}
FILE_TYPES = {Q.F32: gguf.LlamaFileType.ALL_F32, Q.F16: gguf.LlamaFileType.MOSTLY_F16,
              Q.BF16: gguf.LlamaFileType.MOSTLY_BF16, Q.Q8_0: gguf.LlamaFileType.MOSTLY_Q8_0}
EMBEDDING_TENSORS = ("token_embd.weight", "output.weight")
CHUNK_ELEMENTS = 1 << 22  # 16 MB of float32 per read


def tensor_type(name: str, shape: tuple[int, ...], outtype: str, overrides: Mapping[str, str] | None = None):
    """llama.cpp's convention: 1-D tensors (norms, biases, rope factors) stay F32; matrices take the outtype."""
    if len(shape) < 2:
        return Q.F32
    qtype = OUTTYPES[(overrides or {}).get(name, outtype)]
    block, _ = gguf.GGML_QUANT_SIZES[qtype]
    if shape[-1] % block:
        return Q.F16  # rows that do not split into blocks (as llama.cpp's converter does)
    return qtype


def tensor_nbytes(shape: tuple[int, ...], qtype) -> int:
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    return int(np.prod(shape, dtype=np.int64)) // block * size


def encode(rows: np.ndarray, qtype) -> np.ndarray:
    if qtype == Q.F16:
        return rows.astype(np.float16)
    return gguf.quants.quantize(np.ascontiguousarray(rows, dtype=np.float32), qtype)


def write_gguf(
    path: str | os.PathLike,
    arch: ArchParams,
    tokenizer,  # convert.tokenizer.TokenizerFields
    tensors: Iterable[tuple[str, "np.ndarray | LazyTensor"]],
    spec: RefusalSpec | None,
    *,
    checked: bool = False,
    outtype: str = "f16",
    tensor_types: Mapping[str, str] | None = None,
    extra_fields: Mapping[str, object] | None = None,
    force: bool = False,
    progress: bool = True,
    check: Callable[[Path], None] | None = None,
    label: str | None = None,
) -> Path:
    """Write a GGUF atomically. ``tensors`` are (GGUF name, numpy array or LazyTensor) in file order.
    ``label`` names the job in the progress display [default: writing NAME] (``path`` may be a temporary file).

    ``checked``: the caller has checked the path and the free space already.

    ``tensor_types`` overrides the outtype per tensor name (e.g. ``{"token_embd.weight": "f32"}``). The refusal
    tokens of ``spec`` are written as CONTROL whatever ``tokenizer.types`` says. ``extra_fields`` are extra string,
    int, float or bool metadata (e.g. ``general.source.url``). ``check`` is called with the complete temporary file
    before it is renamed (``load_check``: llama.cpp must load it); if it raises, nothing is left behind.
    """
    if outtype not in OUTTYPES:
        raise ConversionError(f"unsupported outtype {outtype!r}: choose one of {', '.join(OUTTYPES)}")
    path = Path(path) if checked else check_output(path, force)
    items = [(name, t if isinstance(t, LazyTensor) else ArrayTensor(name, t)) for name, t in tensors]
    if spec is not None:
        tokenizer = tokenizer.with_control(spec.token_ids)
        spec.check_against(lambda i: tokenizer.tokens[i], lambda i: tokenizer.types[i] == TOKEN_TYPE_CONTROL,
                           len(tokenizer.tokens))
    plan = [(name, t, tensor_type(name, tuple(t.shape), outtype, tensor_types)) for name, t in items]
    total = sum(tensor_nbytes(tuple(t.shape), q) for _, t, q in plan)
    if not checked:
        check_space(path.parent, total + SPACE_MARGIN)

    w = gguf.GGUFWriter(None, arch.arch)
    arch.write(w)
    w.add_file_type(FILE_TYPES[OUTTYPES[outtype]])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    tokenizer.write(w)
    for key, value in (extra_fields or {}).items():
        _add_value(w, key, value)
    if spec is not None:
        spec.write_gguf_fields(w)
    for name, t, qtype in plan:
        w.add_tensor_info(name, tuple(t.shape), np.dtype(np.float32), tensor_nbytes(tuple(t.shape), qtype), qtype)

    with atomic_output(path, force) as tmp:
        try:
            w.write_header_to_file(path=tmp)
            w.write_kv_data_to_file()
            w.write_ti_data_to_file()
            fout = w.fout[0]
            with _progress(total, progress, label or f"writing {path.name}") as bar:
                for name, t, qtype in plan:
                    _write_tensor(w, fout, name, t, qtype, bar)
            w.flush()
        finally:
            w.close()
        if check is not None:
            check(tmp)
    return path


def _write_tensor(w: gguf.GGUFWriter, fout, name: str, t: LazyTensor, qtype, bar) -> None:
    shape = tuple(t.shape)
    w.write_padding(fout, fout.tell())
    n_rows = shape[0] if shape else 1
    row = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else max(n_rows, 1)
    step = n_rows if len(shape) < 2 else max(1, CHUNK_ELEMENTS // max(row, 1))
    written = 0
    for start in range(0, n_rows, step):
        stop = min(n_rows, start + step)
        rows = t.rows(start, stop)
        expected = (stop - start, *shape[1:])
        if tuple(rows.shape) != expected:
            raise ConversionError(f"tensor {name}: read rows of shape {tuple(rows.shape)}, expected {expected}")
        if not np.all(np.isfinite(rows)):
            raise ConversionError(f"tensor {name} holds NaN or infinite values: the checkpoint is corrupt")
        data = encode(rows, qtype)
        data.tofile(fout)
        written += data.nbytes
        bar.update(data.nbytes)
    expected_bytes = tensor_nbytes(shape, qtype)
    if written != expected_bytes:  # pragma: no cover - an internal invariant
        raise ConversionError(f"tensor {name}: wrote {written} bytes, planned {expected_bytes}")
    w.write_padding(fout, written)
    w.tensors[0].pop(name, None)


def _add_value(w: gguf.GGUFWriter, key: str, value: object) -> None:
    if isinstance(value, bool):
        w.add_bool(key, value)
    elif isinstance(value, int):
        w.add_uint32(key, value) if value >= 0 else w.add_int32(key, value)
    elif isinstance(value, float):
        w.add_float32(key, value)
    elif isinstance(value, str):
        w.add_string(key, value)
    else:
        raise ConversionError(f"metadata {key}: unsupported value {value!r}")


def _progress(total: int, enabled: bool, desc: str):
    from refusal_edge.progress import Progress

    return Progress(desc, total, unit="B", enabled=enabled)
