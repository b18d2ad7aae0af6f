"""The refusal-token models on this machine, by name: what `refusal-edge list`, `pull`, `rm` and `show` work on, and
what a model argument may name instead of a path.

Nothing is recorded besides the files themselves: the models are the embedded default model (once built) and every
GGUF with refusal metadata in huggingface-hub's cache (``hub.py``), which is where `pull` and ``owner/repo/file.gguf``
arguments put them. A model's readable name comes from its own header: ``general.name`` and the quantization,
Ollama-style (``smollm2-135m-instruct-refusal-tokens:q8_0``); ``default`` names the model used
when none is given.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Mapping

from . import hub
from .errors import ModelLoadError, RefusalEdgeError

DEFAULT_NAME = "default"
EMBEDDED = "embedded"  # the source of the embedded default model
MODEL_ENV = "REFUSAL_EDGE_MODEL"


@dataclass(frozen=True)
class Entry:
    name: str  # readable: slug of general.name, ":", the quantization
    source: str  # how to fetch it again: owner/repo/file.gguf, "embedded", or the path $REFUSAL_EDGE_MODEL names
    path: Path
    title: str  # general.name as written
    quantization: str  # as `inspect` says it: Q8_0, F16, ...
    size_bytes: int
    default: bool  # what a command uses when no model is given

    def to_dict(self) -> dict:
        return {**asdict(self), "path": str(self.path)}


def readable_name(title: str, quantization: str) -> str:
    """``general.name`` and the quantization as one Ollama-style name: ``tiny-refusal-test:f32``. Remarks in
    parentheses are left out (``… refusal tokens (refusal-edge default)``: the list marks the default itself)."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", re.sub(r"\([^)]*\)", " ", title.lower())).strip("-._") or "model"
    known = quantization and quantization != "unknown" and not quantization.startswith("file type")
    return f"{slug}:{quantization.lower()}" if known else slug


def name_of_metadata(metadata: Mapping[str, object], fallback: str) -> str:
    """A loaded model's readable name, from its metadata (llama.cpp gives every value as a string)."""
    from .inspection import quantization_name

    return readable_name(str(metadata.get("general.name") or fallback),
                         quantization_name(metadata.get("general.file_type")))


def entries() -> list[Entry]:
    """Every model on this machine: the default first, then the hub cache's, by name."""
    default = default_path()
    first = []
    if default.path is not None and default.path.is_file():
        try:
            first.append(checked_entry(default.path, default.source, default=True))
        except RefusalEdgeError:  # $REFUSAL_EDGE_MODEL names no refusal-token model: commands say so when used
            pass
    others = []
    for file, path in hub.cached_files().items():
        if first and path.resolve() == first[0].path.resolve():
            continue
        try:
            others.append(checked_entry(path, str(file), default=False))
        except RefusalEdgeError:  # not a refusal-token model (another tool's GGUF), or unreadable: not ours to list
            continue
    others.sort(key=lambda e: (e.name, e.source))
    if default.path is None and default.source != EMBEDDED:  # $REFUSAL_EDGE_MODEL may give a listed name
        try:
            chosen = pick(others, default.source)
            others = [replace(e, default=True) if e is chosen else e for e in others]
        except ModelLoadError:
            pass
    return first + others


@dataclass(frozen=True)
class DefaultModel:
    path: Path | None  # None: $REFUSAL_EDGE_MODEL gives a name, or a hub file not fetched yet
    source: str


def default_path() -> DefaultModel:
    """Where the default model is (or will be built), without building or fetching anything."""
    named = os.environ.get(MODEL_ENV)
    if named and named != DEFAULT_NAME:
        path = Path(named).expanduser()
        if path.exists():
            return DefaultModel(path, named)
        spec = hub_file(named)
        return DefaultModel(hub.cached(spec) if spec else None, named)
    from .default_model import default_model_path

    return DefaultModel(default_model_path(), EMBEDDED)


def find(name: str) -> Entry:
    """The model a name names: its readable name, that name without the quantization tag, or its source."""
    return pick(entries(), name)


def pick(everything: list[Entry], name: str) -> Entry:
    for key in (lambda e: e.name, lambda e: e.source, lambda e: e.name.partition(":")[0]):
        matches = [e for e in everything if key(e) == name]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ModelLoadError(f"{name!r} names {len(matches)} models: "
                                 + ", ".join(f"{e.name} ({e.source})" for e in matches) + "; give the source instead")
    known = ", ".join(e.name for e in everything) or "none yet"
    raise ModelLoadError(f"no model named {name!r} (models on this machine: {known}; `refusal-edge pull owner/repo` "
                         "fetches one)")


def names_a_model(word: str) -> bool:
    """Whether a word is ``default`` or a listed model's full ``name:tag`` (a positional [MODEL] argument, not a
    prompt). Only words shaped like a tagged name are looked up: an ordinary prompt costs no header reads."""
    if word == DEFAULT_NAME:
        return True
    if not _TAGGED_NAME.match(word):
        return False
    try:
        find(word)
    except ModelLoadError:
        return False
    return True


def hub_file(spec: str) -> hub.HubFile | None:
    """``owner/repo/file.gguf`` or ``owner/repo:file.gguf`` (the file may sit in a folder), else None."""
    match = _HUB_SPEC.match(spec)
    if match is None or spec.startswith((".", "/", "~")):
        return None
    return hub.HubFile(match["repo"], match["file"])


def hub_repo(spec: str) -> str | None:
    """``owner/repo`` alone, else None."""
    return spec if _HUB_REPO.match(spec) and not spec.startswith((".", "~")) else None


_TAGGED_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*:[a-z0-9._-]+$")
_HUB_REPO = re.compile(r"^[\w.-]+/[\w.-]+$")
_HUB_SPEC = re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+)(?:[:/](?P<file>.+\.gguf))$")


def checked_entry(path: Path, source: str, default: bool | None = None) -> Entry:
    """A file's entry, or a ModelLoadError when it is no refusal-token model. ``default``: None to find out."""
    from .inspection import describe

    if default is None:
        known = default_path().path
        default = known is not None and known.exists() and known.resolve() == path.resolve()
    info = describe(path)
    if not info["tokens"] or info["refusal_metadata"] == "invalid":
        raise ModelLoadError("no refusal metadata and no refusal tokens: not a refusal-token model (refusal-edge "
                             "annotate adds the metadata to a model trained with the tokens)")
    title = info["name"] or path.stem
    return Entry(readable_name(title, info["quantization"]), source, path, title, info["quantization"],
                 info["size_bytes"], default)
