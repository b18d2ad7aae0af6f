"""`refusal-edge annotate`: add the refusal metadata (and CONTROL type for the refusal tokens) to any GGUF.

A streaming copy: every metadata key is carried over with its exact type, the tensor data is copied byte for byte
in chunks, and only ``refusal.*`` and ``tokenizer.ggml.token_type`` change.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import gguf

from refusal_edge.metadata import KEY_SCHEMA_VERSION, KEY_SPEC, TOKEN_TYPE_CONTROL, RefusalSpec

from .errors import ConversionError
from .gguf_fields import field_value, open_reader
from .output import atomic_output, check_output, check_space
from .refusal import resolve_spec
from .writer import _progress, write_refusal_fields

TOKENS = gguf.Keys.Tokenizer.LIST
TOKEN_TYPES = gguf.Keys.Tokenizer.TOKEN_TYPE
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
    reader = open_reader(source)
    if "split.count" in reader.fields and int(field_value(reader.fields["split.count"])) > 1:
        raise ConversionError(f"{source} is one part of a split GGUF; merge it first (llama-gguf-split --merge)")
    if TOKENS not in reader.fields or TOKEN_TYPES not in reader.fields:
        raise ConversionError(f"{source} has no tokenizer vocabulary ({TOKENS}/{TOKEN_TYPES}); cannot annotate it")
    tokens = field_value(reader.fields[TOKENS])
    spec = resolve_spec(tokens, categories, respond, default_policy)
    types = list(field_value(reader.fields[TOKEN_TYPES]))
    for i in spec.token_ids:
        types[i] = TOKEN_TYPE_CONTROL
    spec.check_against(lambda i: tokens[i], lambda i: types[i] == TOKEN_TYPE_CONTROL, len(tokens))

    arch = field_value(reader.fields[gguf.Keys.General.ARCHITECTURE])
    w = gguf.GGUFWriter(None, arch, endianess=reader.endianess)
    for name, f in reader.fields.items():
        if name.startswith("GGUF.") or name in (gguf.Keys.General.ARCHITECTURE, KEY_SPEC, KEY_SCHEMA_VERSION):
            continue
        main = f.types[0]
        sub = f.types[-1] if main == gguf.GGUFValueType.ARRAY else None
        value = types if name == TOKEN_TYPES else _raw_value(f)
        if name == gguf.Keys.General.ALIGNMENT:
            w.data_alignment = int(value)
        w.add_key_value(name, value, main, sub_type=sub)
    write_refusal_fields(w, spec)
    total = 0
    for t in reader.tensors:
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        w.add_tensor_info(t.name, shape, gguf.np.dtype(gguf.np.float32), int(t.n_bytes), t.tensor_type)
        total += int(t.n_bytes)
    check_space(output.parent, total + (64 << 20))

    with atomic_output(output, force) as tmp:
        try:
            w.write_header_to_file(path=tmp)
            w.write_kv_data_to_file()
            w.write_ti_data_to_file()
            fout = w.fout[0]
            with open(source, "rb") as fin, _progress(total, progress, f"writing {output.name}") as bar:
                for t in reader.tensors:
                    w.write_padding(fout, fout.tell())
                    fin.seek(int(t.data_offset))
                    left = int(t.n_bytes)
                    while left:
                        chunk = fin.read(min(COPY_CHUNK, left))
                        if not chunk:
                            raise ConversionError(f"{source} is truncated: tensor {t.name} ends past the end")
                        fout.write(chunk)
                        left -= len(chunk)
                        bar.update(len(chunk))
                    w.write_padding(fout, int(t.n_bytes))
            w.flush()
        finally:
            w.close()
    del reader
    return spec


def _raw_value(f: gguf.ReaderField):
    """The value as GGUFWriter.add_key_value wants it (strings as bytes, so invalid UTF-8 survives)."""
    main = f.types[0]
    if main == gguf.GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]])
    if main == gguf.GGUFValueType.ARRAY and f.types[-1] == gguf.GGUFValueType.STRING:
        return [bytes(f.parts[i]) for i in f.data]
    return field_value(f)
