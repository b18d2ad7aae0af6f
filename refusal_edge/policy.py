"""Refusal policies: which rule, which thresholds, which logit biases. Plain data, validated once."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterable, Mapping

from .errors import PolicyError
from .files import read_text, write_text
from .rules import DEFAULT_RULE, RULES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

RESPOND = "respond"  # bias key for the respond token


@dataclass(frozen=True)
class Policy:
    """How the first response token is chosen.

    ``threshold`` is the binary rule's threshold and the fallback of ``per-category`` for categories
    without their own. Under ``paper-category`` only categories listed in ``thresholds`` are controlled.
    Biases are added to the logits (keys: category names or ``respond``) before the softmax at ``temperature``.
    """

    rule: str = DEFAULT_RULE
    threshold: float = 0.5
    thresholds: Mapping[str, float] = field(default_factory=dict)
    biases: Mapping[str, float] = field(default_factory=dict)
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise PolicyError(f"policy field 'rule': {self.rule!r} is not one of {', '.join(RULES)}")
        _check_threshold("threshold", self.threshold)
        for name, value in self.thresholds.items():
            _check_threshold(f"thresholds.{name}", value)
        for name, value in self.biases.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise PolicyError(f"policy field 'biases.{name}': {value!r} is not a finite number")
        t = self.temperature
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t) or t <= 0:
            raise PolicyError(f"policy field 'temperature': {t!r} must be a positive finite number")
        object.__setattr__(self, "thresholds", dict(self.thresholds))
        object.__setattr__(self, "biases", dict(self.biases))

    def threshold_for(self, category: str) -> float:
        return self.thresholds.get(category, self.threshold)

    def resolved(self, categories: Iterable[str]) -> "Policy":
        """Canonical category names (case-insensitive unique prefixes accepted); unknown names are errors."""
        names = tuple(categories)
        return replace(
            self,
            thresholds={resolve_category(k, names, "policy field 'thresholds'"): v for k, v in self.thresholds.items()},
            biases={resolve_category(k, (*names, RESPOND), "policy field 'biases'"): v for k, v in self.biases.items()},
        )

    def with_threshold(self, category: str, value: float) -> "Policy":
        return replace(self, thresholds={**self.thresholds, category: value})

    def with_bias(self, name: str, value: float) -> "Policy":
        return replace(self, biases={**self.biases, name: value})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping, categories: Iterable[str] | None = None) -> "Policy":
        if not isinstance(raw, Mapping):
            raise PolicyError("a policy must be a table/object")
        unknown = set(raw) - {"rule", "threshold", "thresholds", "biases", "temperature"}
        if unknown:
            raise PolicyError(f"unknown policy field(s): {', '.join(sorted(unknown))}")
        for table in ("thresholds", "biases"):
            if not isinstance(raw.get(table, {}), Mapping):
                raise PolicyError(f"policy field '{table}' must be a table/object of name = number")
        policy = cls(**{k: _plain(v) for k, v in raw.items()})
        return policy.resolved(categories) if categories is not None else policy

    @classmethod
    def load(cls, path: str | Path, categories: Iterable[str] | None = None) -> "Policy":
        """Read a policy from a ``.toml`` or ``.json`` file."""
        path = Path(path)
        text = read_text(path, "policy file", PolicyError)
        try:
            raw = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
            raise PolicyError(f"policy file {path} is not valid {path.suffix.lstrip('.').upper() or 'TOML'}: {exc}") from None
        try:
            return cls.from_dict(raw, categories)
        except PolicyError as exc:
            raise PolicyError(f"{path}: {exc}") from None

    def save(self, path: str | Path) -> None:
        """Write a ``.json`` file, else TOML; the file appears whole or not at all."""
        path = Path(path)
        if path.suffix.lower() == ".json":
            write_text(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")
        else:
            write_text(path, to_toml(self))


def to_toml(policy: Policy) -> str:
    lines = [f'rule = "{policy.rule}"', f"threshold = {policy.threshold!r}", f"temperature = {policy.temperature!r}"]
    for table in ("thresholds", "biases"):
        values = getattr(policy, table)
        if values:
            lines += ["", f"[{table}]"] + [f"{json.dumps(k, ensure_ascii=False)} = {float(v)!r}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def resolve_category(name: str, categories: Iterable[str], where: str = "category") -> str:
    """Exact match first, then a case-insensitive unique prefix (``safety`` finds nothing, ``req`` is ambiguous)."""
    names = tuple(categories)
    if name in names:
        return name
    low = name.strip().lower()
    hits = [c for c in names if c.lower() == low] or [c for c in names if c.lower().startswith(low)]
    if not hits:
        # Users naturally say "safety" for "Requests with safety concerns": accept a unique word match too.
        hits = [c for c in names if low and any(w.startswith(low) for w in c.lower().split())]
    if len(hits) == 1:
        return hits[0]
    choices = ", ".join(repr(c) for c in names)
    if not hits:
        raise PolicyError(f"{where}: unknown category {name!r}; known: {choices}")
    raise PolicyError(f"{where}: {name!r} is ambiguous between {', '.join(map(repr, hits))}")


def _check_threshold(where: str, value: object) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
        raise PolicyError(f"policy field '{where}': {value!r} is not a probability in [0, 1]")


def _plain(value: object) -> object:
    return dict(value) if isinstance(value, Mapping) else value
