"""A resumable, append-only JSON Lines store of first-token scores (and generated answers).

Every record names the model by the SHA-256 of its GGUF file, and the prompt by a key over the rendered
messages and the temperature, so one store can serve several models and nothing is scored twice. Records
are appended and flushed one by one: a run killed at any point loses at most the line being written, and
that torn last line is cut off the next time the store is opened.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Mapping, Sequence

from ..decision import FirstTokenScores
from ..errors import RefusalEdgeError
from ..metadata import RefusalSpec
from ..files import cache_dir, sha256_file, write_text


class StoreError(RefusalEdgeError):
    """The score store is unreadable or holds a corrupt record."""


def default_store_path(model_sha256: str) -> Path:
    return cache_dir() / "scores" / f"{model_sha256[:16]}.jsonl"


def file_sha256(path: str | Path, memo: Path | None = None) -> str:
    """SHA-256 of a model file. Hashing gigabytes takes seconds, so results are remembered by (path, size, mtime)."""
    path = Path(path).resolve()
    stat = path.stat()
    stamp = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    memo = memo or cache_dir() / "file-hashes.json"
    known = _read_json(memo)
    if stamp in known:
        return known[stamp]
    known[stamp] = sha256_file(path)
    try:
        write_text(memo, json.dumps(known, indent=1))
    except OSError:
        pass  # a read-only cache only costs the next run a re-hash
    return known[stamp]


def prompt_key(messages: Sequence[Mapping], temperature: float) -> str:
    canonical = json.dumps({"messages": list(messages), "temperature": float(temperature)},
                           ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def answer_key(key: str, token_id: int, max_tokens: int) -> str:
    """Greedy decoding after a given first token is deterministic: that is all an answer depends on."""
    return f"{key}|{token_id}|{max_tokens}"


class ScoreStore:
    def __init__(self, path: str | Path, model_sha256: str):
        self.path = Path(path)
        self.model = model_sha256
        self.spec: RefusalSpec | None = None
        self.scores: dict[str, dict] = {}
        self.answers: dict[str, str] = {}
        self._fh = None
        self._load()

    def __contains__(self, key: str) -> bool:
        return key in self.scores

    def get(self, key: str) -> FirstTokenScores:
        return FirstTokenScores.from_dict(self.scores[key])

    def set_spec(self, spec: RefusalSpec) -> None:
        if self.spec is None or self.spec.to_json() != spec.to_json():
            self._append({"model": self.model, "spec": json.loads(spec.to_json())})
        self.spec = spec

    def add(self, key: str, scores: FirstTokenScores) -> None:
        record = scores.to_dict()
        self._append({"model": self.model, "key": key, "scores": record})
        self.scores[key] = record

    def add_answer(self, key: str, text: str) -> None:
        self._append({"model": self.model, "answer_key": key, "answer": text})
        self.answers[key] = text

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "ScoreStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # internals ---------------------------------------------------------------------------------
    def _load(self) -> None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StoreError(f"cannot read score store {self.path}: {exc.strerror or exc}") from None
        lines = raw.split(b"\n")
        torn = lines.pop()  # after the last newline: empty, or a record a crash cut short
        for number, line in enumerate(lines, 1):
            if line.strip():
                record = self._parse(line, number)
                try:
                    self._take(record)
                except (KeyError, TypeError, ValueError, AttributeError) as exc:  # {"model": ..., "scores": {}}
                    raise StoreError(f"{self.path}:{number}: corrupt score record (no valid {exc}); delete the "
                                     "file to rescore from scratch") from None
        if torn.strip():
            # Cut the torn record off so that the next append starts on a line of its own.
            with open(self.path, "r+b") as fh:
                fh.truncate(len(raw) - len(torn))

    def _parse(self, line: bytes, number: int) -> dict:
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("model"), str):
                raise ValueError("not a store record")
            return record
        except (ValueError, UnicodeDecodeError) as exc:
            raise StoreError(
                f"{self.path}:{number}: corrupt score record ({exc}); delete the file to rescore from scratch"
            ) from None

    def _take(self, record: dict) -> None:
        if record["model"] != self.model:
            return
        if "scores" in record:
            FirstTokenScores.from_dict(record["scores"])  # a record the scorer could not have written fails here
            self.scores[str(record["key"])] = record["scores"]
        elif "answer" in record:
            self.answers[record["answer_key"]] = record["answer"]
        elif "spec" in record:
            self.spec = RefusalSpec.from_json(json.dumps(record["spec"]))

    def _append(self, record: dict) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")
        self._fh.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
        self._fh.flush()


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}
