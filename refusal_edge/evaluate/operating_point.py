"""`calibrate` on a scored session: split, search thresholds in both modes, and measure each operating point on
both parts.

The *guaranteed* mode (guarantee.py) promises the targets on new prompts with a stated confidence; the
*empirical* mode (calibrate.py) meets them on the calibration sample only. Both are computed on the same split
so that the report can show, on the held-out part, what the promise buys. Showing it is
report.operating_point_text's job."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from ..policy import Policy
from .analysis import labels
from .batch import choose
from .calibrate import CalibrationError, Target, calibrate, parse_target, stratified_split
from .guarantee import DEFAULT_CONFIDENCE, Promise, guarantee

MODES = ("guaranteed", "empirical")
DEFAULT_MODE = "guaranteed"


@dataclass(frozen=True)
class ModeResult:
    """One mode's thresholds and decisions, or why it found none."""

    mode: str
    policy: Policy | None
    thresholds: np.ndarray | None  # one per category, as spec.category_names
    refused: np.ndarray | None  # (N,) under ``policy``
    promises: list[Promise]  # empty in the empirical mode
    confidence: float | None
    error: str | None = None


@dataclass(frozen=True)
class OperatingPoint:
    """What a calibration found, and where it lands on the calibration and held-out parts."""

    mode: str  # the mode whose policy is written
    results: list[ModeResult]  # the chosen mode first
    targets: list[Target]
    max_over_refusal: float
    y: np.ndarray  # (N,) should refuse
    gold: np.ndarray  # (N,) the category each prompt should get
    parts: list[tuple[str, np.ndarray]]  # ("calibration", rows), ("held out", rows)

    @property
    def chosen(self) -> ModeResult:
        return self.results[0]

    @property
    def policy(self) -> Policy:
        return self.chosen.policy


def calibrate_session(s, target_texts: Sequence[str], max_over_refusal: float, holdout: float, seed: int,
                      mode: str = DEFAULT_MODE, confidence: float = DEFAULT_CONFIDENCE) -> OperatingPoint:
    examples, spec = s.run.examples, s.spec
    y = labels(examples)
    gold = np.array([e.category or "(none)" for e in examples], dtype=object)
    targets = parse_targets(target_texts, spec, examples)
    probs = s.matrix.probabilities(spec, s.policy)
    cal, held = stratified_split(y, gold, holdout, seed)
    if not y[cal].any():
        raise CalibrationError("the calibration part holds no should-refuse prompt; add data or lower --holdout")
    p_cal = probs.categories[cal]

    def run(name: str) -> ModeResult:
        if name == "guaranteed":
            found = guarantee(p_cal, y[cal], gold[cal], targets, max_over_refusal, confidence)
            promises, level = found.promises, confidence
        else:
            found = calibrate(p_cal, y[cal], gold[cal], spec.category_names, targets, max_over_refusal)
            promises, level = [], None
        policy = policy_from_thresholds(s.policy, spec, found.thresholds)
        return ModeResult(name, policy, np.asarray(found.thresholds), choose(probs, spec, policy) > 0, promises,
                          level)

    chosen = run(mode)  # its error is the command's error
    results = [chosen]
    for other in (m for m in MODES if m != mode):
        try:
            results.append(run(other))
        except CalibrationError as exc:  # the comparison is shown, not required
            results.append(ModeResult(other, None, None, None, [], None, str(exc)))
    return OperatingPoint(mode, results, targets, max_over_refusal, y, gold, [("calibration", cal), ("held out", held)])


def parse_targets(texts: Sequence[str], spec, examples) -> list[Target]:
    """Targets name the model's categories, or (for a binary model) the data's categories."""
    data_categories = (e.category for e in examples if e.should_refuse and e.category)
    scopes = list(dict.fromkeys([*spec.category_names, *data_categories]))
    return [parse_target(t, scopes) for t in texts]


def policy_from_thresholds(base: Policy, spec, thresholds: np.ndarray) -> Policy:
    """A binary model keeps the binary rule; otherwise per-category thresholds (biases and temperature kept)."""
    if spec.is_binary:
        return replace(base, rule="binary", threshold=float(thresholds[0]), thresholds={})
    return replace(base, rule="per-category", thresholds=dict(zip(spec.category_names, map(float, thresholds))))
