"""Reading GGUF metadata with the gguf package (header only; tensor data is never touched)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import gguf
import numpy as np

from .errors import ConversionError


def open_reader(path: str | Path) -> gguf.GGUFReader:
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"GGUF file not found: {path}")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise ConversionError(f"{path} is not a GGUF file (it starts with {magic!r})")
    try:
        return gguf.GGUFReader(path, "r")
    except (ValueError, IndexError, KeyError, OSError) as exc:
        raise ConversionError(f"{path} is not a readable GGUF file (truncated?): {exc}") from None


def field_value(field: gguf.ReaderField):
    """A field's value; string arrays come back as lists of str (invalid UTF-8 replaced)."""
    main = field.types[0]
    if main == gguf.GGUFValueType.ARRAY and field.types[-1] == gguf.GGUFValueType.STRING:
        return [bytes(field.parts[i]).decode("utf-8", errors="replace") for i in field.data]
    if main == gguf.GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")
    if main == gguf.GGUFValueType.ARRAY:
        return [v.item() if isinstance(v, np.generic) else v for v in field.contents()]
    return field.contents()


def read_fields(path: str | Path, keys: Iterable[str]) -> dict:
    reader = open_reader(path)
    return {k: field_value(reader.fields[k]) for k in keys if k in reader.fields}
