"""Scoring prompts on an assembled GGUF: refusal probabilities, forced decisions, AUROC.

Shared by the trainer (which picks the shipped policy on the shifted split, measure_shifted.py) and the
measurement scripts. Runs on the runtime itself, so the numbers are the shipped model's.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from refusal_edge import FirstTokenScores, Policy, RefusalModel
from refusal_edge.decision import decide, probabilities
from refusal_edge.evaluate import metrics


def score(model: RefusalModel, prompts: Sequence[str]) -> list[FirstTokenScores]:
    return [model.scores(p) for p in prompts]


def refusal_probability(model: RefusalModel, scores: Sequence[FirstTokenScores]) -> np.ndarray:
    """Total probability of the category tokens (full-vocabulary softmax, no policy biases)."""
    return category_probabilities(model, scores).sum(axis=1)


def category_probabilities(model: RefusalModel, scores: Sequence[FirstTokenScores]) -> np.ndarray:
    """Each category token's probability (N x K, as ``model.spec.category_names``), no policy biases."""
    plain = Policy()
    rows = [probabilities(s, model.spec, plain)[1] for s in scores]
    return np.array(rows, dtype=float).reshape(len(scores), len(model.spec.category_names))


def likeliest_right(p_categories: np.ndarray, names: Sequence[str], labels: Sequence[str]) -> float:
    """Share of should-refuse prompts whose likeliest category token is their label, whatever a policy would do:
    how well the model names categories, apart from which prompts a threshold refuses."""
    if not len(labels):
        return float("nan")
    return float(np.mean([names[int(k)] == label for k, label in zip(np.argmax(p_categories, axis=1), labels)]))


def auroc(positive: np.ndarray, negative: np.ndarray) -> float | None:
    """Probability that a random positive outscores a random negative (ties count half): the evaluation's AUROC
    over the two samples (None when one is empty)."""
    positive, negative = np.asarray(positive, dtype=float), np.asarray(negative, dtype=float)
    labels = np.r_[np.ones(positive.size, dtype=bool), np.zeros(negative.size, dtype=bool)]
    return metrics.auroc(np.concatenate([positive, negative]), labels)


def refused(model: RefusalModel, scores: Sequence[FirstTokenScores], policy: Policy) -> list[str | None]:
    """The forced category per prompt under ``policy`` (None: respond)."""
    return [decide(s, model.spec, policy).category for s in scores]


def uniform_policy(threshold: float) -> Policy:
    return Policy(rule="per-category", threshold=round(float(threshold), 3))
