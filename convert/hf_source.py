"""A Hugging Face checkpoint read lazily: config.json, then tensors one at a time (safetensors, or PyTorch .bin).

Nothing here loads a whole checkpoint. Safetensors shards are parsed from their JSON headers; rows of a tensor are
read with plain file reads (not mmap, so the pages never count against the process), converted to float32 in
chunks. PyTorch ``.bin`` shards need torch and are opened one at a time with ``mmap=True``.
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterator

import numpy as np

from refusal_edge.extras import install_hint

from .errors import ConversionError

# safetensors dtype -> (numpy dtype of the stored bytes, bytes per element); BF16 is read as uint16.
_SAFETENSORS_DTYPES = {"F32": (np.float32, 4), "F16": (np.float16, 2), "BF16": (np.uint16, 2), "F64": (np.float64, 8)}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
HUB_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model", "*.jinja", "merges.txt", "vocab.json"]


def bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    return (raw.astype(np.uint32) << 16).view(np.float32)


class LazyTensor:
    """A 2-D (or 1-D) tensor whose rows are read on demand as float32. Subclasses implement ``rows``."""

    name: str
    shape: tuple[int, ...]
    source_dtype: str

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def rows(self, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError

    def numpy(self) -> np.ndarray:
        return self.rows(0, self.shape[0]) if self.shape else self.rows(0, 1).reshape(())


@dataclass
class SafetensorsTensor(LazyTensor):
    name: str
    path: Path
    source_dtype: str
    shape: tuple[int, ...]
    offset: int  # absolute offset of the first byte in the file

    def rows(self, start: int, stop: int) -> np.ndarray:
        np_dtype, size = _SAFETENSORS_DTYPES[self.source_dtype]
        row = int(np.prod(self.shape[1:], dtype=np.int64)) if len(self.shape) > 1 else 1
        count = (stop - start) * row
        with open(self.path, "rb") as fh:
            fh.seek(self.offset + start * row * size)
            raw = np.fromfile(fh, dtype=np_dtype, count=count)
        if raw.size != count:
            raise ConversionError(f"{self.path} is truncated: tensor {self.name!r} ends past the end of the file")
        out = bf16_to_f32(raw) if self.source_dtype == "BF16" else raw.astype(np.float32, copy=False)
        return out.reshape((stop - start, *self.shape[1:]))


class TorchTensor(LazyTensor):
    """A tensor of a PyTorch .bin shard; the shard is opened (mmap) on first use and kept while it is read."""

    _open: tuple[Path, dict] | None = None  # one shard at a time, shared by every TorchTensor

    def __init__(self, name: str, path: Path, dtype: str, shape: tuple[int, ...]):
        self.name, self.path, self.source_dtype, self.shape = name, path, dtype, shape

    def rows(self, start: int, stop: int) -> np.ndarray:
        import torch

        t = _torch_shard(self.path)[self.name]
        return t.reshape(self.shape)[start:stop].to(torch.float32).numpy()


def _torch_shard(path: Path) -> dict:
    if TorchTensor._open is None or TorchTensor._open[0] != path:
        TorchTensor._open = None
        TorchTensor._open = (path, _torch_load(path))
    return TorchTensor._open[1]


def _torch_load(path: Path) -> dict:
    try:
        import torch
    except ImportError:
        raise ConversionError(
            f"{path.parent} holds a PyTorch .bin checkpoint, which needs torch to read: {install_hint('torch')} "
            "(or save the model as safetensors)"
        ) from None
    try:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as exc:  # torch raises many kinds (pickle, zip, runtime)
        raise ConversionError(f"cannot read PyTorch checkpoint {path}: {exc}") from None
    return state.get("state_dict", state) if isinstance(state, dict) else state


_TORCH_DTYPES = {"torch.float32": "F32", "torch.float16": "F16", "torch.bfloat16": "BF16", "torch.float64": "F64"}


def read_safetensors_header(path: Path) -> dict[str, SafetensorsTensor]:
    try:
        size = path.stat().st_size
        fh = open(path, "rb")
    except OSError as exc:  # a symlink loop, a dangling link, no permission
        raise ConversionError(f"cannot read {path}: {exc.strerror or exc}") from None
    with fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ConversionError(f"{path} is not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, 100 * 2**20):
            raise ConversionError(f"{path} is not a safetensors file (bad header length)")
        try:
            header = json.loads(fh.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConversionError(f"{path} is not a safetensors file: {exc}") from None
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
        if dtype in _SAFETENSORS_DTYPES:
            expected = int(np.prod(shape, dtype=np.int64)) * _SAFETENSORS_DTYPES[dtype][1]
            if end - begin != expected:
                raise ConversionError(f"{path}: tensor {name!r} has {end - begin} bytes, its shape needs {expected}")
        if base + end > size:
            raise ConversionError(f"{path} is truncated: tensor {name!r} ends past the end of the file")
        out[name] = SafetensorsTensor(name, path, dtype, shape, base + begin)
    return out


class HFCheckpoint:
    """config.json plus a name -> LazyTensor index over every shard."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        config = self.root / "config.json"
        if not config.is_file():
            raise ConversionError(f"{self.root} has no config.json: not a Hugging Face model directory")
        try:
            self.config: dict = json.loads(config.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConversionError(f"{config} is not valid JSON: {exc}") from None
        except RecursionError:
            raise ConversionError(f"{config} is not valid JSON: nested too deeply") from None
        if not isinstance(self.config, dict):
            raise ConversionError(f"{config} is not a JSON object")

    @cached_property
    def weight_files(self) -> list[Path]:
        for index_name, pattern in (("model.safetensors.index.json", "*.safetensors"),
                                    ("pytorch_model.bin.index.json", "pytorch_model*.bin")):
            index = self.root / index_name
            if index.is_file():
                try:
                    weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                except (json.JSONDecodeError, KeyError, UnicodeDecodeError) as exc:
                    raise ConversionError(f"{index} is not a valid shard index: {exc}") from None
                files = [self.root / f for f in dict.fromkeys(weight_map.values())]
                missing = [f.name for f in files if not f.is_file()]
                if missing:
                    raise ConversionError(f"{self.root}: shard(s) listed in {index_name} are missing: {', '.join(missing)}")
                return files
        files = sorted(p for p in self.root.glob("*.safetensors") if p.name != "consolidated.safetensors")
        files = files or sorted(self.root.glob("pytorch_model*.bin"))
        if not files:
            raise ConversionError(f"{self.root} holds no weights (no *.safetensors or pytorch_model*.bin files)")
        return files

    @cached_property
    def tensors(self) -> dict[str, LazyTensor]:
        out: dict[str, LazyTensor] = {}
        for path in self.weight_files:
            if path.suffix == ".safetensors":
                out.update(read_safetensors_header(path))
            else:
                state = _torch_load(path)
                for name, t in state.items():
                    dtype = _TORCH_DTYPES.get(str(t.dtype), str(t.dtype).replace("torch.", "").upper())
                    out[name] = TorchTensor(name, path, dtype, tuple(t.shape))
                del state
        return out

    @property
    def nbytes(self) -> int:
        return sum(p.stat().st_size for p in self.weight_files)

    def __iter__(self) -> Iterator[LazyTensor]:
        return iter(self.tensors.values())


def resolve_source(source: str, revision: str | None = None) -> Path:
    """A local model directory, or a hub id fetched into (or found in) the Hugging Face cache."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ConversionError(f"{source} is a file: SOURCE must be a Hugging Face model directory or a hub id "
                                  "(to add refusal metadata to a GGUF, use `refusal-edge annotate`)")
        return path
    if not _HUB_ID.match(source) or source.startswith((".", "/", "~")):
        raise ConversionError(f"source not found: {source} is neither a local directory nor a Hugging Face hub id "
                              "(owner/name)")
    return _download(source, revision)


def _download(repo: str, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    where = f"{repo}" + (f"@{revision}" if revision else "")
    try:
        root = Path(snapshot_download(repo, revision=revision, allow_patterns=HUB_PATTERNS))
        if not any(root.glob("*.safetensors")):
            root = Path(snapshot_download(repo, revision=revision, allow_patterns=["pytorch_model*.bin"]))
    except LocalEntryNotFoundError:
        raise ConversionError(
            f"{where} is not in the Hugging Face cache and the hub cannot be reached (HF_HUB_OFFLINE set, or no network)"
        ) from None
    except GatedRepoError:
        raise ConversionError(f"{where} is gated: accept its licence on the hub and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise ConversionError(f"{repo} was not found on the Hugging Face hub (private? set HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise ConversionError(f"{repo} has no revision {revision!r}") from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise ConversionError(f"cannot fetch {where} from the Hugging Face hub: {exc}") from None
    return root
