"""A copy of a GGUF with new refusal metadata (and CONTROL type for the refusal tokens), tensors untouched.

A streaming copy: the header is rewritten with every other metadata entry copied byte for byte, the tensor infos
and the whole tensor data section are copied verbatim (tensor offsets are relative to the data section, so they
stay valid). Only ``refusal.*`` and ``tokenizer.ggml.token_type`` change. Shared by the converter's ``annotate``
and ``calibrate --write-default``; the caller owns the output file (overwrite checks, atomic rename).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .errors import GGUFFormatError
from .gguf_header import (MAGIC, T_ARRAY, T_INT32, T_STRING, T_UINT32, GGUFHeader, data_size_needed, encode_key,
                          encode_value, read_header)
from .metadata import KEY_SCHEMA_VERSION, KEY_SPEC, TOKEN_TYPE_CONTROL, RefusalSpec

TOKENS = "tokenizer.ggml.tokens"
TOKEN_TYPES = "tokenizer.ggml.token_type"
COPY_CHUNK = 16 << 20


@dataclass(frozen=True)
class Annotation:
    source: Path
    spec: RefusalSpec
    head: bytes  # the new header, tensor infos and padding: everything before the data section
    data_offset: int  # where the source's data section starts
    data_size: int

    @property
    def size(self) -> int:
        return len(self.head) + self.data_size


def plan_annotation(source: str | Path, spec_for: Callable[[Sequence[str]], RefusalSpec]) -> Annotation:
    """Read ``source``'s header, take the spec ``spec_for(vocabulary)`` and build the new header in memory."""
    source = Path(source)
    header = read_header(source)
    if header.typed("split.count", int, 1) > 1:
        raise GGUFFormatError(f"{source} is one part of a split GGUF; merge it first (llama-gguf-split --merge)")
    if TOKENS not in header.kv or TOKEN_TYPES not in header.kv:
        raise GGUFFormatError(f"{source} has no tokenizer vocabulary ({TOKENS}/{TOKEN_TYPES}); cannot annotate it")
    tokens = header.typed(TOKENS, list, items=str)
    spec = spec_for(tokens)
    types = list(header.typed(TOKEN_TYPES, list, items=int))
    for i in spec.token_ids:
        types[i] = TOKEN_TYPE_CONTROL
    spec.check_against(lambda i: tokens[i], lambda i: types[i] == TOKEN_TYPE_CONTROL, len(tokens))
    data = source.stat().st_size - header.data_offset
    if data < data_size_needed(header):
        raise GGUFFormatError(f"{source} is truncated: its tensor data ends early")
    return Annotation(source, spec, _head(header, types, spec), header.data_offset, data)


def write_annotation(plan: Annotation, dest: str | Path, progress: bool = False, desc: str = "writing") -> None:
    """Write the new header and copy the tensor data to ``dest`` (a temporary file the caller renames)."""
    from .progress import Progress

    with open(plan.source, "rb") as fin, open(dest, "wb") as fout, \
            Progress(desc, plan.data_size, unit="B", enabled=progress) as bar:
        fout.write(plan.head)
        fin.seek(plan.data_offset)
        while chunk := fin.read(COPY_CHUNK):
            fout.write(chunk)
            bar.update(len(chunk))


def _head(header: GGUFHeader, types: list[int], spec: RefusalSpec) -> bytes:
    entries = []
    for key, value in header.kv.items():
        if key in (KEY_SPEC, KEY_SCHEMA_VERSION):
            continue
        raw = encode_value(types, T_ARRAY, T_INT32) if key == TOKEN_TYPES else value.raw
        entries.append(encode_key(key) + raw)
    for key, value in spec.gguf_fields().items():
        raw = encode_value(value, T_UINT32) if isinstance(value, int) else encode_value(value, T_STRING)
        entries.append(encode_key(key) + raw)
    head = MAGIC + struct.pack("<IQQ", header.version, header.n_tensors, len(entries)) + b"".join(entries)
    head += header.tensor_infos
    return head + b"\0" * (-len(head) % header.alignment)
