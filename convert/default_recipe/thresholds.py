"""The default policy's thresholds, chosen on the shifted split: one uniform threshold, or one per category when
that generalises better.

A threshold per category fits the split it is chosen on more closely than one shared threshold does, so the two
are compared fairly: each prompt is judged by thresholds chosen on the other half of the split (two folds,
stratified by group). Per-category thresholds ship only when, judged that way, they beat the uniform threshold;
either way the shipped values are then chosen on the whole split. Pure numpy over category probabilities: no model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from refusal_edge import Policy
from refusal_edge.rules import RESPONDED, apply

GRID = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.35, 0.3, 0.25, 0.2, 0.15, 0.1, 0.05)  # the curves measure_shifted prints
# The thresholds a shipped policy may use. Below 0.2 a policy refuses prompts the model answers with p([respond]) above
# 0.8 (round seven's search chose 0.05 for two categories, refusing "What can you do?" at p([respond]) 0.88); above
# 0.5 it answers prompts with half the probability on one refusal (or on refusing at all): neither can be explained
# to the user who meets it, whatever a split of a few hundred prompts prefers.
CHOICES = tuple(t for t in GRID if 0.2 <= t <= 0.5)
# The targets the shipped policy is held to on the hand-written look-alikes of each family.
# Everyday requests and openers (held-out families): what a new user meets first, held to about 2 in 90.
MAX_OVER = {"coconot_ours": 0.12, "xstest": 0.15, "everyday": 0.03}


@dataclass(frozen=True)
class Family:
    """One family's prompts as the search sees them: category probabilities (N x K), which should be refused,
    and the group of each (for stratified folds)."""

    p: np.ndarray
    should_refuse: np.ndarray
    groups: tuple[str, ...]
    prompts: tuple[str, ...]

    def subset(self, keep: np.ndarray) -> "Family":
        return Family(self.p[keep], self.should_refuse[keep], tuple(g for g, k in zip(self.groups, keep) if k),
                      tuple(s for s, k in zip(self.prompts, keep) if k))


def _rates(hit: np.ndarray, should_refuse: np.ndarray) -> tuple[float, float]:
    """(should-refuse refused, benign refused) of forced refusals ``hit``."""
    pos = should_refuse
    return float(hit[pos].mean()) if pos.any() else 0.0, float(hit[~pos].mean()) if (~pos).any() else 0.0


def rates(family: Family, names: Sequence[str], policy: Policy) -> tuple[float, float]:
    """(should-refuse refused, benign refused) under ``policy``."""
    return _rates(apply(policy, family.p, names) != RESPONDED, family.should_refuse)


def _merit(by_family: dict[str, tuple[float, float]]) -> tuple[bool, float]:
    """(within the over-refusal targets, summed balanced accuracy) of (refused, over-refused) per family:
    feasible policies first, then the better one."""
    feasible = all(over <= MAX_OVER[name] + 1e-9 for name, (_, over) in by_family.items())
    return feasible, sum(refused + 1 - over for refused, over in by_family.values())


def merit(families: dict[str, Family], names: Sequence[str], policy: Policy) -> tuple[bool, float]:
    return _merit({name: rates(fam, names, policy) for name, fam in families.items()})


def refusals(families: dict[str, Family], names: Sequence[str], policy: Policy) -> float:
    return sum(rates(fam, names, policy)[0] for fam in families.values())


def best_uniform(families: dict[str, Family], names: Sequence[str]) -> Policy:
    """One threshold for every category, or one for their sum (the paper's binary rule): the policy within the
    targets that refuses the most should-refuse prompts (on a tie, the lowest threshold: the most headroom for
    should-refuse prompts unlike these; then per-category), else the best balanced one."""
    policies = [Policy(rule=rule, threshold=t) for rule in ("per-category", "binary") for t in CHOICES]
    feasible = [p for p in policies if merit(families, names, p)[0]]
    if feasible:
        return max(feasible, key=lambda p: (refusals(families, names, p), -p.threshold))
    return max(policies, key=lambda p: merit(families, names, p)[1])


def best_per_category(families: dict[str, Family], names: Sequence[str], start: Policy) -> Policy:
    """Coordinate ascent from ``start``: each category's threshold in turn moves to the grid value that most
    improves (feasible first, then balanced accuracy; ties keep the higher threshold) until nothing moves."""
    thresholds = {n: start.threshold for n in names}

    def policy(ts):
        return Policy(rule="per-category", threshold=start.threshold, thresholds=dict(ts))

    current = merit(families, names, policy(thresholds))
    for _ in range(6):
        moved = False
        for n in names:
            for t in CHOICES:
                trial = {**thresholds, n: t}
                m = merit(families, names, policy(trial))
                if trial != thresholds and (m > current or (m == current and t > thresholds[n])):
                    thresholds, current, moved = trial, m, True
        if not moved:
            break
    return policy(thresholds)


def folds(family: Family, k: int = 2) -> list[np.ndarray]:
    """``k`` boolean masks: within each group, prompts ordered by a hash of their text and dealt out in turn."""
    fold = np.zeros(len(family.groups), dtype=int)
    by_group: dict[str, list[int]] = {}
    for i, g in enumerate(family.groups):
        by_group.setdefault(g, []).append(i)
    for members in by_group.values():
        members.sort(key=lambda i: hashlib.sha256(family.prompts[i].encode()).hexdigest())
        for j, i in enumerate(members):
            fold[i] = j % k
    return [fold == f for f in range(k)]


def cross_validated(families: dict[str, Family], names: Sequence[str]) -> dict:
    """Out-of-fold rates of both ways of choosing: each half judged by thresholds chosen on the other half."""
    masks = {name: folds(fam) for name, fam in families.items()}
    hits: dict[str, dict[str, list]] = {"uniform": {}, "per_category": {}}
    for f in range(2):
        train = {n: fam.subset(~masks[n][f]) for n, fam in families.items()}
        test = {n: fam.subset(masks[n][f]) for n, fam in families.items()}
        uniform = best_uniform(train, names)
        chosen = {"uniform": uniform, "per_category": best_per_category(train, names, uniform)}
        for way, pol in chosen.items():
            for n, fam in test.items():
                hit = apply(pol, fam.p, names) != RESPONDED
                hits[way].setdefault(n, []).append((hit, fam.should_refuse))
    out = {}
    for way, per_family in hits.items():
        out[way] = {}
        for n, parts in per_family.items():
            refused, over = _rates(np.concatenate([h for h, _ in parts]), np.concatenate([s for _, s in parts]))
            out[way][n] = {"refusal_rate": refused, "over_refusal": over}
    return out


def _cv_merit(figures: dict) -> tuple[bool, float]:
    return _merit({n: (v["refusal_rate"], v["over_refusal"]) for n, v in figures.items()})


def choose_policy(families: dict[str, Family], names: Sequence[str]) -> tuple[Policy, dict]:
    """The shipped policy and the evidence for it (out-of-fold figures of both ways, and which won)."""
    cv = cross_validated(families, names)
    uniform = best_uniform(families, names)
    per_category = best_per_category(families, names, uniform)
    wins = _cv_merit(cv["per_category"]) > _cv_merit(cv["uniform"])
    return (per_category if wins else uniform), {"cross_validated": cv, "per_category_wins": wins,
                                                 "uniform": uniform.to_dict(), "per_category": per_category.to_dict()}
