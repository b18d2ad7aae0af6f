"""Decisions for many prompts at once: numpy over a score matrix, the same result as ``decision.decide`` per row.

A sweep applies dozens of policies to the same stored scores; doing it row by row in Python would cost
more than the metrics. The probabilities depend only on the biases and temperature, so they are computed
once (``ScoreMatrix.probabilities``) and every threshold setting is a comparison on them (``choose``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from ..decision import FirstTokenScores, bias_vector, check_finite
from ..metadata import RefusalSpec
from ..policy import Policy

OWN = -1  # the model's own first token, neither [respond] nor a refusal token (natural rule only)
RESPONDED = 0  # [respond]; category c is c + 1, as in spec.token_ids


@dataclass(frozen=True)
class ScoreMatrix:
    logits: np.ndarray  # (N, 1 + K), laid out as spec.token_ids
    rest_logsumexp: np.ndarray  # (N,)
    top_rest_id: np.ndarray  # (N,)
    top_rest_logit: np.ndarray  # (N,)
    temperature: float = 1.0

    @classmethod
    def from_scores(cls, scores: Sequence[FirstTokenScores], width: int | None = None) -> "ScoreMatrix":
        temps = {s.temperature for s in scores}
        if len(temps) > 1:
            raise ValueError(f"scores computed at several temperatures: {sorted(temps)}")
        width = width if width is not None else (len(scores[0].logits) if scores else 1)
        return cls(
            np.array([s.logits for s in scores], dtype=np.float64).reshape(len(scores), width),
            np.array([s.rest_logsumexp for s in scores], dtype=np.float64),
            np.array([s.top_rest_id for s in scores], dtype=np.int64),
            np.array([s.top_rest_logit for s in scores], dtype=np.float64),
            temps.pop() if temps else 1.0,
        )

    def __len__(self) -> int:
        return len(self.rest_logsumexp)

    def take(self, rows: np.ndarray) -> "ScoreMatrix":
        return replace(self, logits=self.logits[rows], rest_logsumexp=self.rest_logsumexp[rows],
                       top_rest_id=self.top_rest_id[rows], top_rest_logit=self.top_rest_logit[rows])

    def probabilities(self, spec: RefusalSpec, policy: Policy) -> "Probabilities":
        """Full-vocabulary softmax with the policy's biases, as decision.probabilities computes it per row."""
        if not np.isclose(policy.temperature, self.temperature):
            raise ValueError(f"scores were computed at temperature {self.temperature}, "
                             f"the policy asks for {policy.temperature}")
        biased = self.logits + bias_vector(spec, policy)
        z = biased / self.temperature
        lse = np.logaddexp(self.rest_logsumexp, np.logaddexp.reduce(z, axis=1))
        p = np.exp(z - lse[:, None])
        check_finite(p, self.rest_logsumexp, self.top_rest_logit)
        return Probabilities(p[:, 0], p[:, 1:], self._natural(biased))

    def _natural(self, biased: np.ndarray) -> np.ndarray:
        """The model's greedy first token with the biases applied: a decision token if it beats the rest."""
        best = biased.argmax(axis=1)
        wins = biased[np.arange(len(best)), best] >= self.top_rest_logit
        return np.where(wins, best, OWN)


@dataclass(frozen=True)
class Probabilities:
    respond: np.ndarray  # (N,)
    categories: np.ndarray  # (N, K)
    natural: np.ndarray  # (N,) choice codes of the natural rule

    @property
    def refusal(self) -> np.ndarray:
        return self.categories.sum(axis=1)


def choose(probs: Probabilities, spec: RefusalSpec, policy: Policy) -> np.ndarray:
    """Choice codes per row: OWN, RESPONDED, or 1 + category index. Mirrors decision.decide rule by rule."""
    p = probs.categories
    names = spec.category_names
    first_best = p.argmax(axis=1)  # argmax takes the first of equal maxima, like decide's max()
    if policy.rule == "binary":
        return np.where(probs.refusal >= policy.threshold, first_best + 1, RESPONDED)
    if policy.rule == "per-category":
        eligible = p >= np.array([policy.threshold_for(n) for n in names])
        best_eligible = np.where(eligible, p, -np.inf).argmax(axis=1)
        return np.where(eligible.any(axis=1), best_eligible + 1, RESPONDED)
    if policy.rule == "paper-category":
        controlled = np.array([n in policy.thresholds for n in names])
        limits = np.array([policy.thresholds.get(n, np.inf) for n in names])
        forced = np.where(p[np.arange(len(p)), first_best] >= limits[first_best], first_best + 1, RESPONDED)
        return np.where(controlled[first_best], forced, probs.natural)
    return probs.natural


def token_ids(choices: np.ndarray, matrix: ScoreMatrix, spec: RefusalSpec) -> np.ndarray:
    """The first token each choice stands for (the model's own top token for OWN)."""
    ids = np.asarray(spec.token_ids)
    return np.where(choices == OWN, matrix.top_rest_id, ids[np.maximum(choices, 0)])


def choice_names(spec: RefusalSpec) -> list[str]:
    """Column names for choice codes 0..K (OWN is shown as 'other')."""
    return ["respond", *spec.category_names]
