"""`calibrate` on a scored session: split, search thresholds, and measure the operating point on both parts.

Showing it is report.operating_point_text's job."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from ..policy import Policy
from .analysis import labels
from .batch import choose
from .calibrate import CalibrationError, Target, calibrate, parse_target, stratified_split


@dataclass(frozen=True)
class OperatingPoint:
    """What a calibration found, and where it lands on the calibration and held-out parts."""

    policy: Policy
    thresholds: np.ndarray  # one per category, as spec.category_names
    targets: list[Target]
    max_over_refusal: float
    refused: np.ndarray  # (N,) under ``policy``
    y: np.ndarray  # (N,) should refuse
    gold: np.ndarray  # (N,) the category each prompt should get
    parts: list[tuple[str, np.ndarray]]  # ("calibration", rows), ("held out", rows)


def calibrate_session(s, target_texts: Sequence[str], max_over_refusal: float, holdout: float,
                      seed: int) -> OperatingPoint:
    examples, spec = s.run.examples, s.spec
    y = labels(examples)
    gold = np.array([e.category or "(none)" for e in examples], dtype=object)
    targets = parse_targets(target_texts, spec, examples)
    probs = s.matrix.probabilities(spec, s.policy)
    cal, held = stratified_split(y, gold, holdout, seed)
    if not y[cal].any():
        raise CalibrationError("the calibration part holds no should-refuse prompt; add data or lower --holdout")
    found = calibrate(probs.categories[cal], y[cal], gold[cal], spec.category_names, targets, max_over_refusal)
    policy = policy_from_thresholds(s.policy, spec, found.thresholds)
    refused = choose(probs, spec, policy) > 0
    return OperatingPoint(policy, np.asarray(found.thresholds), targets, max_over_refusal, refused, y, gold,
                          [("calibration", cal), ("held out", held)])


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
