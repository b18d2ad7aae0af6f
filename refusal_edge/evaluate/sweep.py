"""Threshold sweeps from stored scores: probabilities once, then one vectorised comparison per point."""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np

from ..errors import PolicyError
from ..metadata import RefusalSpec
from ..policy import Policy
from ..rules import DEFAULT_RULE, REGISTRY
from . import metrics
from .analysis import labels
from .batch import ScoreMatrix, choose
from .data import Example

DEFAULT_RANGE = "0:1:0.05"  # 21 points


def parse_range(text: str) -> np.ndarray:
    """``START:STOP:STEP``, STOP included: ``0:1:0.05`` gives 21 thresholds."""
    try:
        start, stop, step = (float(part) for part in text.split(":"))
    except ValueError:
        raise PolicyError(f"--sweep {text!r}: expected START:STOP:STEP, e.g. 0:1:0.05") from None
    if not (0 <= start <= stop <= 1) or step <= 0:
        raise PolicyError(f"--sweep {text!r}: need 0 <= START <= STOP <= 1 and STEP > 0")
    count = int(np.floor((stop - start) / step + 1e-9)) + 1
    # Rounding keeps 0.1 + 0.2 from printing as 0.30000000000000004 and from missing STOP.
    return np.round(start + step * np.arange(count), 10)


def sweep_policy(policy: Policy, spec: RefusalSpec, threshold: float, category: str | None) -> Policy:
    """The policy with one category's threshold (or all of them) set to ``threshold``.

    A rule with a single threshold (binary) sweeps it; a rule without thresholds (natural) is swept as the
    default rule.
    """
    kind = REGISTRY[policy.rule].thresholds
    if kind == "one":
        return replace(policy, threshold=threshold)
    rule = policy.rule if kind == "per-category" else DEFAULT_RULE
    if category is None:
        return replace(policy, rule=rule, threshold=threshold,
                       thresholds={name: threshold for name in spec.category_names})
    return replace(policy, rule=rule, thresholds={**policy.thresholds, category: threshold})


def sweep(examples: Sequence[Example], matrix: ScoreMatrix, spec: RefusalSpec, policy: Policy,
          grid: np.ndarray, category: str | None = None) -> dict:
    """Refusal rate (TPR), over-refusal (FPR), precision and F1 per threshold, overall and per category."""
    if REGISTRY[policy.rule].thresholds == "one":
        category = None  # one threshold for everything
    probs = matrix.probabilities(spec, policy)  # thresholds do not change probabilities
    y = labels(examples)
    gold = np.array([e.category or "(none)" for e in examples], dtype=object)
    groups = {name: y & (gold == name) for name in dict.fromkeys(gold[y])}
    points = []
    swept = None
    for t in grid:
        swept = sweep_policy(policy, spec, float(t), category)
        refused = choose(probs, spec, swept) > 0
        m = metrics.binary_metrics(refused, y)
        points.append({
            "threshold": float(t), "refusal_rate": m["recall"], "over_refusal": m["over_refusal"],
            "precision": m["precision"], "f1": m["f1"],
            "by_category": {name: metrics.rate(refused[rows]) for name, rows in groups.items()},
        })
    return {"category": category or "all", "rule": swept.rule if swept else policy.rule, "points": points}
