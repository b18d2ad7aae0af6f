"""Thresholds that keep their promise on new prompts: Learn-then-Test with exact binomial bounds.

The empirical search (calibrate.py) picks the thresholds that just meet the targets *on the sample*; on new
prompts they miss about half the time, and five free thresholds fitted to a few hundred prompts miss more.
Here the candidates lie on one path fixed before the data is seen: **one shared threshold t for every
category** (refuse when any category's probability reaches t; for a binary model, its one threshold), from
t = 1 (refuse nothing) down. Refusals only grow as t falls, so every rate along the path is monotone.

Each target is a statement about a rate on new prompts: ``<=`` (over-refusal, the ``--max-over-refusal``
budget) is tested with a Clopper–Pearson *upper* bound, ``>=`` (refusal rates) with a *lower* bound. The path
is tested in a fixed sequence from the conservative end, stopping at the first candidate whose upper bounds
exceed a limit (fixed-sequence testing needs no multiplicity correction along the path), and the most refusing
candidate that passed is taken; the ``>=`` targets are then checked there. With m statements each is bounded at
confidence 1 - (1 - confidence) / m (Bonferroni), so all hold together with the stated confidence.

Why a shared threshold and not per-category thresholds ordered by the data: a path chosen from the same
prompts it is tested on is no longer fixed in advance, and ordering per category would need a second split of
benign prompts that CoCoNot-sized data does not have (categories with no benign look-alikes get thresholds
near 0, exactly the over-fit this mode exists to avoid). One threshold is also the shape of the shipped default.

Validity needs only exchangeability (calibration prompts and future prompts drawn from one distribution), not
a model of the scores: the chosen threshold t^ admits at most k benign calibration prompts with U(k) <= limit,
so if the true rate at t^ exceeded the limit, so would the rate at a fixed threshold admitting no more, whose
bound falls below its true rate with probability at most 1 - confidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .binomial import fewest_events_within, lower_bound, most_events_within, trials_needed, upper_bound
from .calibrate import OVERALL, CalibrationError, Target, threshold_between

DEFAULT_CONFIDENCE = 0.9


@dataclass(frozen=True)
class Promise:
    """One bounded statement at the chosen threshold."""

    target: Target
    rows: int  # calibration prompts it is bounded on
    events: int  # of them refused at the chosen threshold
    bound: float  # Clopper–Pearson bound (upper for <=, lower for >=) at ``confidence``
    confidence: float  # this statement's share of the overall confidence


@dataclass(frozen=True)
class Guarantee:
    threshold: float  # shared by every category
    thresholds: np.ndarray  # the same, one per model category
    refused: np.ndarray  # on the calibration rows
    promises: list[Promise]
    confidence: float  # of all promises together


def budget_target(max_over_refusal: float) -> Target:
    return Target(OVERALL, "over-refusal", "<=", max_over_refusal)


def guarantee(p: np.ndarray, y: np.ndarray, gold: np.ndarray, targets: Sequence[Target],
              max_over_refusal: float | None, confidence: float = DEFAULT_CONFIDENCE) -> Guarantee:
    """The lowest shared threshold whose bounds meet every target, over probabilities ``p`` (N x K)."""
    if not 0 < confidence < 1:
        raise CalibrationError(f"confidence {confidence!r} must lie strictly between 0 and 1")
    statements = list(targets) + ([budget_target(max_over_refusal)] if max_over_refusal is not None else [])
    if not statements:
        raise CalibrationError("nothing to guarantee: give --max-over-refusal or a --target")
    each = 1.0 - (1.0 - confidence) / len(statements)
    limits = [_limit(t, t.rows(y, gold), each, confidence, len(statements)) for t in statements]

    score = p.max(axis=1)  # refused under a shared threshold t exactly when score >= t
    candidates = _candidates(score)
    counts = [_refused_counts(score[rows], candidates) for _, rows, _ in limits]  # grow down the list
    chosen = None
    for j in range(len(candidates)):  # fixed sequence from the conservative end: stop at the first failure
        if any(c[j] > k for (t, _, k), c in zip(limits, counts) if t.op == "<="):
            break
        chosen = j
    if chosen is None:
        caps = ", ".join(str(t) for t, _, _ in limits if t.op == "<=")
        raise CalibrationError(f"no threshold keeps {caps} with confidence {confidence:g}: even refusing "
                               "nothing refuses some calibration prompts (probability 1)")
    threshold = float(candidates[chosen])
    refused = score >= threshold
    short = [t for t, rows, k in limits if t.op == ">=" and refused[rows].sum() < k]
    if short:
        raise CalibrationError(
            f"the targets conflict at confidence {confidence:g}: the lowest shared threshold that keeps "
            f"{', '.join(str(t) for t, _, _ in limits if t.op == '<=')} ({threshold:g}) cannot promise "
            f"{', '.join(map(str, short))}. Lower a target, allow more over-refusal, add data, lower --confidence, "
            "or use --mode empirical (no promise)")
    promises = [_promise(t, rows, refused, each) for t, rows, _ in limits]
    return Guarantee(threshold, np.full(p.shape[1], threshold), refused, promises, confidence)


def _limit(target: Target, rows: np.ndarray, each: float, confidence: float, statements: int):
    """(target, its rows, the event count it allows: at most k for <=, at least k for >=); too little data is
    an error that says how much would do."""
    n = int(rows.sum())
    kind = "should-refuse" if target.metric == "tpr" else "benign"
    scope = "" if target.scope == OVERALL else f" of {target.scope}"
    if n == 0:
        raise CalibrationError(f"target {target}: the calibration data holds no {kind} prompt{scope}, so it "
                               "cannot be promised; add such prompts or use --mode empirical")
    # Either way the rate is that of refused prompts among ``rows``: <= bounds it from above, >= from below.
    upper = target.op == "<="
    k = (most_events_within if upper else fewest_events_within)(n, target.value, each)
    if k is None:
        needed = trials_needed(target.value if upper else 1.0 - target.value, each)
        share = "" if statements == 1 else f" ({each:.4g} each for {statements} statements)"
        if needed is None:
            raise CalibrationError(f"target {target}: a rate of exactly {target.value:g} can never be promised "
                                   "from a sample; loosen it or use --mode empirical")
        raise CalibrationError(
            f"too little data to promise {target} with confidence {confidence:g}{share}: that needs at least "
            f"{needed} {kind} prompts{scope} in the calibration part, which has {n}. Add {kind} prompts, loosen "
            "the target, lower --confidence or --holdout, or use --mode empirical (no promise)")
    return target, rows, k


def _candidates(score: np.ndarray) -> np.ndarray:
    """1 (refuse nothing short of probability 1), then one threshold per distinct score below 1, placed between
    it and the next one down (geometrically, as the empirical search places its thresholds)."""
    values = np.unique(score[score < 1.0])[::-1]
    below = np.r_[values[1:], 0.0]
    return np.array([1.0] + [threshold_between(float(b), float(v)) for b, v in zip(below, values)])


def _refused_counts(scores: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """How many of ``scores`` reach each candidate threshold."""
    return len(scores) - np.searchsorted(np.sort(scores), candidates, side="left")


def _promise(target: Target, rows: np.ndarray, refused: np.ndarray, each: float) -> Promise:
    n, k = int(rows.sum()), int(refused[rows].sum())
    bound = upper_bound(k, n, each) if target.op == "<=" else lower_bound(k, n, each)
    return Promise(target, n, k, bound, each)
