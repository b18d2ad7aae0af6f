"""`calibrate` on a scored session: split, search thresholds, and show the operating point on both parts."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Callable, Sequence

import numpy as np

from ..metadata import short_name
from ..policy import Policy, to_toml
from . import metrics
from .analysis import labels
from .batch import choose
from .calibrate import CalibrationError, Target, calibrate, parse_target, stratified_split
from .report import table


def calibrate_session(s, target_texts: Sequence[str], max_over_refusal: float, holdout: float, seed: int,
                      echo: Callable[[str], None] = print) -> Policy:
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

    echo(f"calibration part: {len(cal)} prompts ({int(y[cal].sum())} should refuse, {int((~y[cal]).sum())} benign); "
         f"held out: {len(held)} ({int(y[held].sum())} should refuse, {int((~y[held]).sum())} benign)")
    if not (~y).any():
        echo("note: no benign prompts, so over-refusal is not measured; add --contrast data")
    echo("thresholds: " + ", ".join(f"{short_name(n)} {t:g}" for n, t in zip(spec.category_names, found.thresholds)))
    echo("")
    echo(operating_table(targets, max_over_refusal, refused, y, gold, [("calibration", cal), ("held out", held)]))
    return policy


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


def operating_table(targets: Sequence[Target], max_over_refusal: float, refused, y, gold, parts) -> str:
    parts = [(name, rows) for name, rows in parts if len(rows)]
    rows = []
    for t in targets:
        row = [str(t)]
        for _, r in parts:
            value = t.measure(refused[r], y[r], gold[r])
            row.append(f"{metrics_text(value)} {'ok' if t.met(value) else 'MISSED'}")
        rows.append(row)
    over = Target("overall", "over-refusal", "<=", max_over_refusal)
    rows.append([f"over-refusal <= {max_over_refusal:g}"] + [
        f"{metrics_text(over.measure(refused[r], y[r], gold[r]))} "
        f"{'ok' if over.met(over.measure(refused[r], y[r], gold[r])) or not (~y[r]).any() else 'MISSED'}"
        for _, r in parts])
    for key, label in (("recall", "refusal rate (all should-refuse)"), ("precision", "precision"), ("f1", "F1")):
        rows.append([label] + [metrics_text(metrics.binary_metrics(refused[r], y[r])[key]) for _, r in parts])
    for name in dict.fromkeys(gold[y]):
        rows.append([f"  refusal rate: {short_name(name)}"] + [
            metrics_text(metrics.rate(refused[r][y[r] & (gold[r] == name)])) for _, r in parts])
    return table(["operating point"] + [name for name, _ in parts], rows)


def metrics_text(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def policy_text(policy: Policy, path: str) -> str:
    if path.lower().endswith(".json"):
        return json.dumps(policy.to_dict(), indent=2, ensure_ascii=False) + "\n"
    return to_toml(policy)
