"""Sampling parameters of the answer after the decision token: the one place their defaults and their valid ranges
live, and the one place a value is checked against them.

Plain data, no llama.cpp: the server's wire format and the CLI build these without importing the adapter. A bad
value raises ``SamplingError`` naming the field; the CLI and each server API name it as their users spell it.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields, replace
from typing import Mapping

from .errors import SamplingError, short_repr

INT32_MAX = 2**31 - 1  # llama.cpp's int parameters: larger values would be truncated on the way in


@dataclass(frozen=True)
class Range:
    """The values one numeric field takes: from ``low`` (excluded if ``open_low``) to ``high``, finite."""

    low: float
    high: float = math.inf
    open_low: bool = False
    integer: bool = False

    def describe(self) -> str:
        if self.integer:
            bounds = [f">= {int(self.low)}"] if self.low > -math.inf else []
            bounds += [f"<= {int(self.high)}"] if self.high < math.inf else []
            return "an integer" + (f" {' and '.join(bounds)}" if bounds else "")
        if self.high < math.inf:
            return f"a number in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}]"
        return f"a number {'>' if self.open_low else '>='} {self.low:g}"

    def check(self, field: str, value: object) -> float | int:
        """``value`` as this range's type (int or float), or a SamplingError naming ``field``."""
        number = self._number(value)
        if number is None or not (number > self.low if self.open_low else number >= self.low) \
                or not number <= self.high:
            raise SamplingError(field, f"must be {self.describe()}, got {short_repr(value)}")
        return number

    def _number(self, value: object) -> float | int | None:
        if isinstance(value, bool):  # JSON's true is not 1
            return None
        if self.integer:
            return int(value) if isinstance(value, numbers.Integral) else None
        if not isinstance(value, numbers.Real):
            return None
        try:  # an integer too large for a float (10**400) is out of every range, not a crash
            number = float(value)
        except OverflowError:
            return None
        return number if math.isfinite(number) else None


# Where llama.cpp's samplers are defined: what a value outside these would mean is undefined or a crash.
RANGES = {
    "temperature": Range(0.0),
    "top_k": Range(0, INT32_MAX, integer=True),
    "top_p": Range(0.0, 1.0, open_low=True),
    "min_p": Range(0.0, 1.0),
    "repeat_penalty": Range(0.0, open_low=True),
    "repeat_last_n": Range(-1, INT32_MAX, integer=True),  # -1: the whole context, 0: none
    "max_tokens": Range(0, integer=True),  # 0: the decision only
}
SEED = Range(-math.inf, integer=True)  # any integer (llama.cpp keeps its low 32 bits), or None for a random one


@dataclass(frozen=True)
class SamplingParams:
    """How an answer is decoded; ``temperature == 0`` decodes greedily. The defaults are llama.cpp's own (its
    ``create_completion``) and serve the Python API; see CLI_DEFAULTS and SERVER_DEFAULTS for the other surfaces."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    seed: int | None = None
    max_tokens: int = 512
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name, valid in RANGES.items():
            object.__setattr__(self, name, valid.check(name, getattr(self, name)))
        if self.seed is not None:
            object.__setattr__(self, "seed", SEED.check("seed", self.seed))
        object.__setattr__(self, "stop", _stop(self.stop))

    @classmethod
    def from_fields(cls, values: Mapping[str, object], defaults: "SamplingParams",
                    narrower: Mapping[str, Range] | None = None) -> "SamplingParams":
        """``defaults`` with the ``values`` given (None: not given), each checked against its range, or against
        ``narrower`` where an interface takes less (OpenAI's temperature stops at 2)."""
        names = {f.name for f in fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise TypeError(f"not sampling fields: {', '.join(sorted(unknown))}")
        given = {k: v for k, v in values.items() if v is not None}
        for name, valid in (narrower or {}).items():
            if name in given:
                given[name] = valid.check(name, given[name])
        return replace(defaults, **given)


def _stop(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(s, str) for s in value):
        return tuple(value)
    raise SamplingError("stop", f"must be a string or a list of strings, got {short_repr(value)}")


# Each surface starts from the same defaults and differs only where its users expect something else:
# - the CLI chats with small local models, where a cooler temperature and a mild repeat penalty (llama.cpp's own
#   chat CLI's long-standing values) keep short answers from looping;
# - the server speaks OpenAI's API, so the fields OpenAI defines take OpenAI's defaults (temperature 1, top_p 1);
#   its llama.cpp extensions (top_k, min_p, repeat_penalty) keep llama.cpp's, as llama.cpp's own server does.
CLI_DEFAULTS = replace(SamplingParams(), temperature=0.7, repeat_penalty=1.1)
SERVER_DEFAULTS = replace(SamplingParams(), temperature=1.0, top_p=1.0)
