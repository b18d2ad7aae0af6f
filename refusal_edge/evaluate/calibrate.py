"""Choose per-category thresholds from stored probabilities to meet refusal targets.

Under the per-category rule a prompt is refused exactly when some category's probability reaches that
category's threshold, so lowering a threshold only ever adds refusals. The search exploits that:

1. Targets first. For ``CAT:tpr>=X`` the threshold of CAT's own token is lowered just far enough (when
   the model has no token for CAT, e.g. a binary model, every threshold may move, as for ``overall``).
2. Then the over-refusal budget (``--max-over-refusal``) is spent greedily: each step lowers the one
   threshold whose next refusals buy the most should-refuse prompts per benign prompt refused, while every
   ``<=`` target and the budget still hold. It stops when no step adds a should-refuse prompt.

A threshold is placed midway (geometrically) between the last prompt it admits and the next one, not on
a prompt's own probability, so it does not sit exactly on the calibration data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import PolicyError, RefusalEdgeError
from ..policy import resolve_category

OVERALL = "overall"
_TARGET = re.compile(r"^\s*(?P<scope>[^:]+?)\s*:\s*(?P<metric>[a-z_-]+)\s*(?P<op>>=|<=)\s*(?P<value>[0-9.]+)\s*$")
_METRICS = {"tpr": "tpr", "recall": "tpr", "refusal": "tpr", "refusal-rate": "tpr",
            "fpr": "over-refusal", "over-refusal": "over-refusal", "over_refusal": "over-refusal"}


class CalibrationError(RefusalEdgeError):
    """The targets cannot all be met on this data."""


@dataclass(frozen=True)
class Target:
    scope: str  # a category name, or OVERALL
    metric: str  # "tpr" (refusal rate of should-refuse prompts) or "over-refusal" (of benign prompts)
    op: str  # ">=" or "<="
    value: float

    def __str__(self) -> str:
        return f"{self.scope}:{self.metric}{self.op}{self.value:g}"

    def rows(self, y: np.ndarray, gold: np.ndarray) -> np.ndarray:
        rows = y if self.metric == "tpr" else ~y
        return rows if self.scope == OVERALL else rows & (gold == self.scope)

    def measure(self, refused: np.ndarray, y: np.ndarray, gold: np.ndarray) -> float | None:
        rows = self.rows(y, gold)
        return float(refused[rows].mean()) if rows.any() else None

    def met(self, value: float | None) -> bool:
        if value is None:
            return False
        return value >= self.value - 1e-12 if self.op == ">=" else value <= self.value + 1e-12


def parse_target(text: str, names: Sequence[str]) -> Target:
    """``safety:tpr>=0.95``, ``overall:over-refusal<=0.1``; names resolve like --threshold (unique prefixes)."""
    match = _TARGET.match(text.lower() if text.strip().lower().startswith(OVERALL) else text)
    if not match:
        raise PolicyError(f"--target {text!r}: expected CATEGORY:METRIC>=VALUE, e.g. safety:tpr>=0.95")
    metric = _METRICS.get(match["metric"].lower())
    if metric is None:
        raise PolicyError(f"--target {text!r}: unknown metric {match['metric']!r}; use tpr or over-refusal")
    try:
        value = float(match["value"])
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise PolicyError(f"--target {text!r}: {match['value']!r} is not a rate in [0, 1]")
    scope = match["scope"]
    scope = OVERALL if scope.lower() in (OVERALL, "all") else resolve_category(scope, names, "--target")
    return Target(scope, metric, match["op"], value)


@dataclass
class Calibration:
    thresholds: np.ndarray  # per model category
    refused: np.ndarray  # on the calibration rows


def calibrate(p: np.ndarray, y: np.ndarray, gold: np.ndarray, categories: Sequence[str], targets: Sequence[Target],
              max_over_refusal: float | None) -> Calibration:
    """Thresholds for the per-category rule over probabilities ``p`` (N x K) of the calibration rows."""
    if not y.any():
        raise CalibrationError("the calibration data holds no should-refuse prompt")
    for t in targets:
        if not t.rows(y, gold).any():
            kind = "should-refuse" if t.metric == "tpr" else "benign"
            raise CalibrationError(f"target {t}: the calibration data holds no {kind} prompt of {t.scope}")
    search = _Search(p, y, gold, list(categories), targets, max_over_refusal)
    for target in targets:
        if target.op == ">=":
            search.reach(target)
    broken = [t for t in targets if t.op == "<=" and not t.met(t.measure(search.refused, y, gold))]
    if broken or not search.within_budget(search.refused):
        over = float(search.refused[~y].mean()) if (~y).any() else 0.0
        what = ", ".join(map(str, broken)) or f"over-refusal {over:.3f} > {max_over_refusal:g}"
        raise CalibrationError(
            f"the targets conflict on this data: meeting {', '.join(str(t) for t in targets if t.op == '>=')} "
            f"already breaks {what}. Lower a target or allow more over-refusal"
        )
    if max_over_refusal is not None:
        search.spend_budget()
    return Calibration(search.thresholds, search.refused)


class _Search:
    """Thresholds start at 1 (refuse nothing) and only come down; ``refused`` follows them."""

    def __init__(self, p, y, gold, categories, targets, max_over_refusal):
        self.p, self.y, self.gold, self.categories = p, y, gold, categories
        self.budget = None if max_over_refusal is None else int(np.floor(max_over_refusal * (~y).sum() + 1e-9))
        self.caps = [(t.rows(y, gold), t.value * t.rows(y, gold).sum()) for t in targets if t.op == "<="]
        self.thresholds = np.ones(p.shape[1])
        self.refused = (p >= self.thresholds).any(axis=1)

    def within_budget(self, refused: np.ndarray) -> bool:
        return self.budget is None or int((refused & ~self.y).sum()) <= self.budget

    def reach(self, target: Target) -> None:
        """Lower thresholds until ``target`` holds: its own category's token only, if the model has one."""
        own = target.scope in self.categories
        knobs = [self.categories.index(target.scope)] if own else range(len(self.categories))
        wanted = target.rows(self.y, self.gold)
        while not target.met(target.measure(self.refused, self.y, self.gold)):
            # The smallest step that admits a wanted prompt: targets cost as little over-refusal as possible.
            best = None
            for k in knobs:
                steps = self._steps(k)
                if steps is None:
                    continue
                hits = np.flatnonzero(np.cumsum(wanted[steps.order])[steps.ends] > 0)
                if hits.size:
                    j = hits[0]
                    key = (steps.fp[j], -steps.tp[j])
                    if best is None or key < best[0]:
                        best = (key, steps, j)
            if best is None:
                value = target.measure(self.refused, self.y, self.gold)
                raise CalibrationError(f"target {target} cannot be met on this data: the best reachable is "
                                       f"{value if value is None else round(value, 4)}")
            self._apply(best[1], best[2])

    def spend_budget(self) -> None:
        """Greedy: the step with the most should-refuse prompts per benign prompt refused, within every limit."""
        while True:
            fp_now = int((self.refused & ~self.y).sum())
            best = None
            for k in range(len(self.categories)):
                steps = self._steps(k)
                if steps is None:
                    continue
                ok = steps.tp > 0
                if self.budget is not None:
                    ok &= fp_now + steps.fp <= self.budget
                for rows, cap in self.caps:
                    ok &= (self.refused & rows).sum() + np.cumsum(rows[steps.order])[steps.ends] <= cap + 1e-9
                for j in np.flatnonzero(ok):
                    key = (steps.tp[j] / max(steps.fp[j], 1e-9), steps.tp[j])
                    if best is None or key > best[0]:
                        best = (key, steps, j)
            if best is None:
                return
            self._apply(best[1], best[2])

    def _steps(self, k: int) -> "_Steps | None":
        """Every distinct lowering of threshold k: step j admits the open prompts down to tie group j."""
        open_rows = np.flatnonzero(~self.refused & (self.p[:, k] < self.thresholds[k]))
        if not open_rows.size:
            return None
        order = open_rows[np.argsort(-self.p[open_rows, k], kind="stable")]
        values = self.p[order, k]
        ends = np.r_[np.flatnonzero(np.diff(values)), len(values) - 1]  # last row of each tie group
        return _Steps(k, order, values, ends, np.cumsum(self.y[order])[ends], np.cumsum(~self.y[order])[ends])

    def _apply(self, steps: "_Steps", j: int) -> None:
        end = steps.ends[j]
        below = steps.values[end + 1] if end + 1 < len(steps.values) else 0.0
        self.thresholds[steps.knob] = threshold_between(float(below), float(steps.values[end]))
        self.refused = (self.p >= self.thresholds).any(axis=1)


@dataclass
class _Steps:
    knob: int
    order: np.ndarray  # open rows, most probable first
    values: np.ndarray  # their probabilities
    ends: np.ndarray  # index in order of each tie group's last row
    tp: np.ndarray  # should-refuse prompts admitted by step j (cumulative)
    fp: np.ndarray  # benign prompts admitted by step j (cumulative)


def threshold_between(below: float, at: float) -> float:
    """A round threshold in (below, at]: geometric midpoint, 2 significant digits when they still fit."""
    mid = float(np.sqrt(below * at)) if below > 0 else at / 2
    for digits in (2, 3, 4, 6):
        rounded = float(f"{mid:.{digits}g}")
        if below < rounded <= at:
            return rounded
    return float(at)


def stratified_split(y: np.ndarray, gold: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(calibration rows, held-out rows), stratified by label and category; a stratum of one stays in calibration."""
    rng = np.random.default_rng(seed)
    held = np.zeros(len(y), dtype=bool)
    if fraction > 0:
        strata = [f"{int(a)}|{b}" for a, b in zip(y, gold)]
        for name in sorted(set(strata)):
            rows = np.flatnonzero(np.array(strata) == name)
            n = min(int(round(fraction * len(rows))), len(rows) - 1)
            held[rng.permutation(rows)[:n]] = True
    return np.flatnonzero(~held), np.flatnonzero(held)
