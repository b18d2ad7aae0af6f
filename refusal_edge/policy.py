"""Refusal policies: which rule, which thresholds, which logit biases. Plain data, validated once."""

from __future__ import annotations

import json
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
# What a policy may ask for. Outside these ranges the softmax over- or underflows (1e-40 or 1e300 make every
# probability NaN), and a decision computed from NaN would silently be [respond]: such policies are refused.
TEMPERATURE_RANGE = (0.01, 100.0)
BIAS_LIMIT = 100.0  # |logit bias|, OpenAI's logit_bias range; 100 already forces or bans a token outright


@dataclass(frozen=True)
class Policy:
    """How the first response token is chosen.

    ``threshold`` is the binary rule's threshold and the fallback of ``per-category`` for categories
    without their own. Under ``paper-category`` only categories listed in ``thresholds`` are controlled.
    Biases are added to the logits (keys: category names or ``respond``) before the softmax at ``temperature``.
    ``temperature`` lies in ``TEMPERATURE_RANGE`` ([0.01, 100]) and each bias in [-BIAS_LIMIT, BIAS_LIMIT].
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
            if not _is_number(value) or not -BIAS_LIMIT <= value <= BIAS_LIMIT:
                raise PolicyError(f"policy field 'biases.{name}': {value!r} is not a number in "
                                  f"[{-BIAS_LIMIT:g}, {BIAS_LIMIT:g}]")
        t, (low, high) = self.temperature, TEMPERATURE_RANGE
        if not _is_number(t) or not low <= t <= high:
            raise PolicyError(f"policy field 'temperature': {t!r} must be a number in [{low:g}, {high:g}]")
        object.__setattr__(self, "thresholds", dict(self.thresholds))
        object.__setattr__(self, "biases", dict(self.biases))

    def threshold_for(self, category: str) -> float:
        return self.thresholds.get(category, self.threshold)

    def resolved(self, categories: Iterable[str]) -> "Policy":
        """Canonical category names (case-insensitive unique prefixes accepted); unknown names are errors."""
        names = tuple(categories)
        return replace(self, thresholds=_resolve_keys(self.thresholds, names, "thresholds"),
                       biases=_resolve_keys(self.biases, (*names, RESPOND), "biases"))

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
            raise PolicyError(f"unknown policy field(s): {', '.join(sorted(map(str, unknown)))}")
        for table in ("thresholds", "biases"):
            value = raw.get(table, {})
            if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
                raise PolicyError(f"policy field '{table}' must be a table/object of name = number")
        policy = cls(**{k: _plain(v) for k, v in raw.items()})
        return policy.resolved(categories) if categories is not None else policy

    @classmethod
    def default_of(cls, spec) -> "Policy":
        """A model's default policy: the one its refusal spec carries (``default_policy``), else the built-in one."""
        return cls.from_dict(spec.default_policy, spec.category_names) if spec.default_policy else cls()

    @classmethod
    def load(cls, path: str | Path, categories: Iterable[str] | None = None) -> "Policy":
        """Read a policy from a ``.toml`` or ``.json`` file."""
        path = Path(path)
        kind = "JSON" if path.suffix.lower() == ".json" else "TOML"
        text = read_text(path, "policy file", PolicyError)
        try:
            raw = json.loads(text) if kind == "JSON" else tomllib.loads(text)
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
            raise PolicyError(f"policy file {path} is not valid {kind}: {exc}") from None
        except RecursionError:
            raise PolicyError(f"policy file {path} is not valid {kind}: nested too deeply") from None
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


def _resolve_keys(table: Mapping[str, float], names: tuple[str, ...], field: str) -> dict[str, float]:
    """Keys resolved to canonical names; two keys for one name (``safety`` and ``Safety``) are an error, not
    a silent last-one-wins."""
    resolved: dict[str, float] = {}
    given: dict[str, str] = {}
    for key, value in table.items():
        name = resolve_category(key, names, f"policy field '{field}'")
        if name in resolved:
            raise PolicyError(f"policy field '{field}': {given[name]!r} and {key!r} both name {name!r}; keep one")
        resolved[name], given[name] = value, key
    return resolved


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_threshold(where: str, value: object) -> None:
    if not _is_number(value) or not 0.0 <= value <= 1.0:
        raise PolicyError(f"policy field '{where}': {value!r} is not a probability in [0, 1]")


def _plain(value: object) -> object:
    return dict(value) if isinstance(value, Mapping) else value
