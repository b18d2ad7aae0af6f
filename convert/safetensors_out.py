"""Write a safetensors file tensor by tensor (f32 or bf16), so an exported checkpoint never has to fit in memory.

The format is an 8-byte little-endian header length, a JSON header of dtypes, shapes and byte offsets, then the
raw little-endian tensors in header order. Written here (not with the safetensors package) because the header can
be written first from the shapes alone and each tensor dequantized only when its turn comes.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

DTYPES = {"f32": ("F32", 4), "bf16": ("BF16", 2)}
ALIGN = 8  # the header is padded with spaces so that tensor data starts 8-byte aligned


def f32_to_bf16(a: np.ndarray) -> np.ndarray:
    """Round to nearest even (what torch's .to(torch.bfloat16) does), as the uint16 bit patterns."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    rounded = bits + 0x7FFF + ((bits >> 16) & 1)
    return (rounded >> 16).astype(np.uint16)


def write_safetensors(path: Path, tensors: Sequence[tuple[str, tuple[int, ...], Callable[[], np.ndarray]]],
                      dtype: str = "f32", metadata: dict[str, str] | None = None) -> None:
    """``tensors`` are (name, shape, a function returning the float32 array), in file order."""
    code, size = DTYPES[dtype]
    header: dict[str, object] = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    for name, shape, _ in tensors:
        nbytes = int(np.prod(shape, dtype=np.int64)) * size
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-(8 + len(raw)) % ALIGN)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        for name, shape, load in tensors:
            array = np.ascontiguousarray(load(), dtype=np.float32)
            if tuple(array.shape) != tuple(shape):  # pragma: no cover - an internal invariant
                raise ValueError(f"tensor {name}: shape {array.shape}, planned {shape}")
            (f32_to_bf16(array) if dtype == "bf16" else array).astype("<u2" if dtype == "bf16" else "<f4").tofile(fh)
