"""`refusal-edge annotate`: add the refusal metadata (and CONTROL type for the refusal tokens) to any GGUF.

A streaming copy: the header is rewritten with every other metadata entry copied byte for byte, the tensor infos
and the whole tensor data section are copied verbatim (tensor offsets are relative to the data section, so they
stay valid). Only ``refusal.*`` and ``tokenizer.ggml.token_type`` change.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Mapping

from refusal_edge.errors import GGUFFormatError
from refusal_edge.gguf_header import (MAGIC, T_ARRAY, T_INT32, T_STRING, T_UINT32, data_size_needed, encode_key,
                                      encode_value, read_header)
from refusal_edge.metadata import KEY_SCHEMA_VERSION, KEY_SPEC, TOKEN_TYPE_CONTROL, RefusalSpec

from .errors import ConversionError
from .output import atomic_output, check_output, check_space
from .refusal import resolve_spec
from .writer import _progress

TOKENS = "tokenizer.ggml.tokens"
TOKEN_TYPES = "tokenizer.ggml.token_type"
COPY_CHUNK = 16 << 20


def annotate_gguf(
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    categories: Mapping[str, str] | None = None,
    respond: str | None = None,
    default_policy=None,
    force: bool = False,
    progress: bool = True,
) -> RefusalSpec:
    source = Path(source)
    output = check_output(output, force)
    try:
        header = read_header(source)
    except GGUFFormatError as exc:
        raise ConversionError(str(exc)) from None
    if header.get("split.count", 1) > 1:
        raise ConversionError(f"{source} is one part of a split GGUF; merge it first (llama-gguf-split --merge)")
    if TOKENS not in header.kv or TOKEN_TYPES not in header.kv:
        raise ConversionError(f"{source} has no tokenizer vocabulary ({TOKENS}/{TOKEN_TYPES}); cannot annotate it")
    tokens = header.get(TOKENS)
    spec = resolve_spec(tokens, categories, respond, default_policy)
    types = list(header.get(TOKEN_TYPES))
    for i in spec.token_ids:
        types[i] = TOKEN_TYPE_CONTROL
    spec.check_against(lambda i: tokens[i], lambda i: types[i] == TOKEN_TYPE_CONTROL, len(tokens))

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
    head += b"\0" * (-len(head) % header.alignment)
    data = source.stat().st_size - header.data_offset
    if data < data_size_needed(header):
        raise ConversionError(f"{source} is truncated: its tensor data ends early")
    check_space(output.parent, len(head) + data + (16 << 20))

    with atomic_output(output, force) as tmp:
        with open(source, "rb") as fin, open(tmp, "wb") as fout, \
                _progress(data, progress, f"writing {output.name}") as bar:
            fout.write(head)
            fin.seek(header.data_offset)
            while chunk := fin.read(COPY_CHUNK):
                fout.write(chunk)
                bar.update(len(chunk))
    return spec
