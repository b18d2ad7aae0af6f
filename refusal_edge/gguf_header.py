"""A fast reader of GGUF headers (metadata and tensor infos), and the raw pieces `annotate` copies verbatim.

gguf.GGUFReader builds numpy views for every array element, which takes seconds on a Llama-3 vocabulary; here
values are decoded only when asked for, and unchanged entries can be copied as the bytes they were.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import GGUFFormatError, ModelLoadError
from .files import is_checkpoint_dir

MAGIC = b"GGUF"
T_UINT8, T_INT8, T_UINT16, T_INT16, T_UINT32, T_INT32, T_FLOAT32, T_BOOL, T_STRING, T_ARRAY = range(10)
T_UINT64, T_INT64, T_FLOAT64 = 10, 11, 12
_SCALARS = {T_UINT8: "B", T_INT8: "b", T_UINT16: "H", T_INT16: "h", T_UINT32: "I", T_INT32: "i", T_FLOAT32: "f",
            T_BOOL: "?", T_UINT64: "Q", T_INT64: "q", T_FLOAT64: "d"}
DEFAULT_ALIGNMENT = 32
CHUNK = 1 << 20  # the header is read in pieces of at least this much, as far as it goes
MAX_STRING_BYTES = 1 << 26  # no GGUF key or string value (a chat template, a token) comes near 64 MiB
MAX_NESTING = 8  # arrays of arrays: GGUF writers nest one level at most
MAX_DIMS = 4  # GGML_MAX_DIMS


@dataclass(frozen=True)
class RawValue:
    vtype: int
    raw: bytes  # the encoded value: type tag + payload, exactly as in the file

    def decode(self):
        value, _ = _decode(self.raw, 4, self.vtype)
        return value


@dataclass
class GGUFHeader:
    path: Path
    version: int
    n_tensors: int
    kv: dict[str, RawValue]
    tensor_infos: bytes  # verbatim
    data_offset: int  # absolute offset of the data section
    alignment: int

    def get(self, key: str, default=None):
        v = self.kv.get(key)
        return default if v is None else v.decode()

    def typed(self, key: str, kind: type | tuple[type, ...], default=None, items: type | None = None):
        """``get``, but a value of another type than ``kind`` (a list of other than ``items``) is a
        GGUFFormatError naming the key: a file whose vocabulary is a number fails in one line."""
        value = self.get(key, default)
        if value is default:
            return value
        wrong = isinstance(value, bool) or not isinstance(value, kind) or (
            items is not None and not all(isinstance(v, items) and not isinstance(v, bool) for v in value))
        if wrong:
            expected = f"a list of {items.__name__}" if items is not None else getattr(kind, "__name__", str(kind))
            raise GGUFFormatError(f"{self.path}: {key} is {type(value).__name__} {str(value)[:40]}, not {expected}")
        return value


class _Cursor:
    """Reads a header from the file as it goes, checking every length and count against the file's size before
    reading or allocating anything: a hostile header costs what it really spans, and fails in one line."""

    def __init__(self, fh, path: Path, size: int):
        self.fh, self.path, self.size = fh, path, size
        self.buf, self.pos = bytearray(), 0

    def need(self, n: int, what: str = "a value") -> None:
        """Bytes ``pos .. pos + n`` are in the buffer."""
        end = self.pos + n
        if end > self.size:
            raise GGUFFormatError(f"{self.path} is truncated or malformed: {what} at byte {self.pos} claims {n} "
                                  f"bytes, past the end of the {self.size}-byte file")
        if end > len(self.buf):
            self.buf += self.fh.read(max(end - len(self.buf), CHUNK))
            if end > len(self.buf):
                raise GGUFFormatError(f"{self.path} is truncated (its header ends early)")

    def take(self, fmt: str, what: str = "a value"):
        size = struct.calcsize("<" + fmt)
        self.need(size, what)
        value = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += size
        return value[0] if len(value) == 1 else value

    def count(self, fmt: str, each: int, what: str) -> int:
        """A count of items each at least ``each`` bytes long: no more than the rest of the file can hold."""
        n = self.take(fmt, what)
        if n * each > self.size - self.pos:
            raise GGUFFormatError(f"{self.path} is truncated or malformed: {what} at byte {self.pos} claims {n} items, "
                                  f"more than the rest of the {self.size}-byte file can hold")
        return n

    def skip(self, n: int, what: str) -> None:
        self.need(n, what)
        self.pos += n

    def skip_string(self, what: str = "a string") -> None:
        n = self.take("Q", what)
        if n > MAX_STRING_BYTES:
            raise GGUFFormatError(f"{self.path} is truncated or malformed: {what} at byte {self.pos - 8} claims {n} "
                                  f"bytes; no GGUF string is over {MAX_STRING_BYTES >> 20} MiB")
        self.skip(n, what)

    def skip_value(self, vtype: int, depth: int = 0) -> None:
        if vtype in _SCALARS:
            self.skip(struct.calcsize("<" + _SCALARS[vtype]), "a number")
        elif vtype == T_STRING:
            self.skip_string()
        elif vtype == T_ARRAY:
            if depth >= MAX_NESTING:
                raise GGUFFormatError(f"{self.path}: a metadata value is nested too deeply")
            sub = self.take("I", "an array's type")
            if sub in _SCALARS:
                size = struct.calcsize("<" + _SCALARS[sub])
                self.skip(self.count("Q", size, "an array") * size, "an array")
            elif sub in (T_STRING, T_ARRAY):
                for _ in range(self.count("Q", 8 if sub == T_STRING else 12, "an array")):
                    self.skip_value(sub, depth + 1)
            else:
                raise GGUFFormatError(f"{self.path}: unknown GGUF value type {sub}")
        else:
            raise GGUFFormatError(f"{self.path}: unknown GGUF value type {vtype}")


def _decode(buf: bytes, pos: int, vtype: int):
    if vtype in _SCALARS:
        fmt = "<" + _SCALARS[vtype]
        return struct.unpack_from(fmt, buf, pos)[0], pos + struct.calcsize(fmt)
    if vtype == T_STRING:
        (n,) = struct.unpack_from("<Q", buf, pos)
        return buf[pos + 8: pos + 8 + n].decode("utf-8", errors="replace"), pos + 8 + n
    sub, n = struct.unpack_from("<IQ", buf, pos)
    pos += 12
    if sub in _SCALARS:
        fmt = _SCALARS[sub]
        size = struct.calcsize("<" + fmt)
        return list(struct.unpack_from(f"<{n}{fmt}", buf, pos)), pos + n * size
    out = []
    for _ in range(n):
        value, pos = _decode(buf, pos, sub)
        out.append(value)
    return out, pos


def read_header(path: str | Path) -> GGUFHeader:
    path = Path(path)
    if not path.is_file():
        raise GGUFFormatError(f"GGUF file not found: {path}")
    size = path.stat().st_size
    with open(path, "rb") as fh:
        magic = fh.read(len(MAGIC))
        if magic != MAGIC:
            raise GGUFFormatError(f"{path} is not a GGUF file (it starts with {magic!r})")
        fh.seek(0)
        try:
            return _parse(_Cursor(fh, path, size))
        except (struct.error, IndexError, OverflowError):  # a count or length past 2**63
            raise GGUFFormatError(f"{path} is truncated (its header ends early)") from None
        except MemoryError:
            raise GGUFFormatError(f"{path}: its header does not fit in memory") from None


def _parse(c: _Cursor) -> GGUFHeader:
    path = c.path
    c.skip(4, "the magic")
    version = c.take("I", "the version")
    if version not in (2, 3):
        raise GGUFFormatError(f"{path}: GGUF version {version} is not supported (big-endian file?)")
    n_tensors, n_kv = c.take("Q", "the tensor count"), c.count("Q", 13, "the metadata count")
    if n_tensors * 24 > c.size - c.pos:  # a tensor's info is at least 24 bytes
        raise GGUFFormatError(f"{path} is truncated or malformed: it claims {n_tensors} tensors, more than the "
                              f"{c.size}-byte file can describe")
    kv: dict[str, RawValue] = {}
    for _ in range(n_kv):
        n = c.take("Q", "a key's length")
        if n > MAX_STRING_BYTES:
            raise GGUFFormatError(f"{path} is truncated or malformed: a key claims {n} bytes")
        c.need(n, "a key")
        key = bytes(c.buf[c.pos:c.pos + n]).decode("utf-8", errors="replace")
        c.pos += n
        start = c.pos
        vtype = c.take("I", f"{key}'s type")
        c.skip_value(vtype)
        kv[key] = RawValue(vtype, bytes(c.buf[start:c.pos]))
    ti_start = c.pos
    for _ in range(n_tensors):
        c.skip_string("a tensor's name")
        n_dims = c.take("I", "a tensor's dimension count")
        if n_dims > MAX_DIMS:
            raise GGUFFormatError(f"{path} is truncated or malformed: a tensor claims {n_dims} dimensions "
                                  f"(GGML has {MAX_DIMS})")
        c.skip(8 * n_dims + 4 + 8, "a tensor's shape, type and offset")
    tensor_infos = bytes(c.buf[ti_start:c.pos])
    alignment = kv["general.alignment"].decode() if "general.alignment" in kv else DEFAULT_ALIGNMENT
    if isinstance(alignment, bool) or not isinstance(alignment, int) or alignment <= 0:
        raise GGUFFormatError(f"{path}: general.alignment {alignment!r} is not a positive integer")
    data_offset = c.pos + (-c.pos % alignment)
    if data_offset > c.size:
        raise GGUFFormatError(f"{path} is truncated (no tensor data)")
    return GGUFHeader(path, version, n_tensors, kv, tensor_infos, data_offset, alignment)


def tensor_extents(header: GGUFHeader) -> list[tuple[str, int, int]]:
    """(name, relative offset, ggml type) of each tensor, in file order."""
    return [(name, offset, ggml_type) for name, _, ggml_type, offset in _tensor_infos(header)]


def _tensor_infos(header: GGUFHeader):
    out, buf, pos = [], header.tensor_infos, 0
    for _ in range(header.n_tensors):
        (n,) = struct.unpack_from("<Q", buf, pos)
        name = buf[pos + 8: pos + 8 + n].decode("utf-8", errors="replace")
        pos += 8 + n
        (n_dims,) = struct.unpack_from("<I", buf, pos)
        dims = struct.unpack_from(f"<{n_dims}Q", buf, pos + 4)
        pos += 4 + 8 * n_dims
        ggml_type, offset = struct.unpack_from("<IQ", buf, pos)
        pos += 12
        out.append((name, dims, ggml_type, offset))
    return out


def data_size_needed(header: GGUFHeader) -> int:
    """Bytes the data section must hold: the end of the furthest tensor."""
    import gguf

    end = 0
    for name, dims, ggml_type, offset in _tensor_infos(header):
        try:
            block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ggml_type)]
        except (ValueError, KeyError):
            raise GGUFFormatError(f"{header.path}: tensor {name} has an unknown type {ggml_type}") from None
        n = 1
        for d in dims:
            n *= d
        end = max(end, offset + n // block * size)
    return end


def check_data(header: GGUFHeader) -> None:
    """The file must hold the tensor data its header promises (a truncated download passes every header check)."""
    try:
        needed = header.data_offset + data_size_needed(header)
    except (struct.error, OverflowError):
        raise GGUFFormatError(f"{header.path}: its tensor table is malformed") from None
    size = header.path.stat().st_size
    if size < needed:
        raise GGUFFormatError(f"{header.path} is truncated: its tensors need {needed} bytes, the file has {size}")


def encode_value(value, vtype: int, sub: int | None = None) -> bytes:
    """Type tag + payload, as stored after a key."""
    out = struct.pack("<I", vtype)
    if vtype in _SCALARS:
        return out + struct.pack("<" + _SCALARS[vtype], value)
    if vtype == T_STRING:
        raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        return out + struct.pack("<Q", len(raw)) + raw
    if vtype == T_ARRAY and sub in _SCALARS:
        return out + struct.pack("<IQ", sub, len(value)) + struct.pack(f"<{len(value)}{_SCALARS[sub]}", *value)
    raise ValueError(f"cannot encode a value of type {vtype}/{sub}")


def encode_key(key: str) -> bytes:
    raw = key.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def read_fields(path: str | Path, keys) -> dict:
    header = read_header(path)
    return {k: header.kv[k].decode() for k in keys if k in header.kv}


def check_gguf_file(path: Path) -> None:
    """Fail early and plainly on what llama.cpp would report obscurely (or crash on)."""
    if not path.exists():
        raise ModelLoadError(f"model file not found: {path}")
    if not path.is_file():
        hint = (" (a Hugging Face checkpoint: convert it with `refusal-edge convert`, or run it on an engine with "
                "--engine URL)" if is_checkpoint_dir(path) else "")
        raise ModelLoadError(f"model path is not a file: {path}{hint}")
    head = _head(path)
    if head != MAGIC:
        raise ModelLoadError(f"{path} is not a GGUF file (it starts with {head!r}, not {MAGIC!r})")


def starts_like_gguf(path: Path) -> bool:
    """A quick look, not a check: ``path`` is a readable file that begins with the GGUF magic."""
    try:
        return _head(path) == MAGIC
    except OSError:
        return False


def _head(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(len(MAGIC))
