"""Decisions for many prompts at once: numpy over a score matrix, the same result as ``decision.decide`` per row.

A sweep applies dozens of policies to the same stored scores; doing it row by row in Python would cost
more than the metrics. The probabilities depend only on the biases and temperature, so they are computed
once (``ScoreMatrix.probabilities``) and every threshold setting is a comparison on them (``choose``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from ..decision import FirstTokenScores, bias_vector, check_finite, check_temperature, softmax_rows
from ..metadata import RefusalSpec
from ..policy import Policy
from ..rules import MODEL_CHOICE, OWN, RESPONDED, apply, natural_choice  # noqa: F401  (OWN, RESPONDED: re-exported)


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
        check_temperature(self.temperature, policy)
        biased = self.logits + bias_vector(spec, policy)
        p = softmax_rows(biased, self.rest_logsumexp, self.temperature)
        check_finite(p, self.rest_logsumexp, self.top_rest_logit)
        return Probabilities(p[:, 0], p[:, 1:], natural_choice(biased, self.top_rest_logit))


@dataclass(frozen=True)
class Probabilities:
    respond: np.ndarray  # (N,)
    categories: np.ndarray  # (N, K)
    natural: np.ndarray  # (N,) the model's own choice (rules.natural_choice), where a rule leaves it the token

    @property
    def refusal(self) -> np.ndarray:
        return self.categories.sum(axis=1)


def choose(probs: Probabilities, spec: RefusalSpec, policy: Policy) -> np.ndarray:
    """Choice codes per row: OWN, RESPONDED, or 1 + category index: the policy's rule, as decision.decide runs it."""
    codes = apply(policy, probs.categories, spec.category_names)
    return np.where(codes == MODEL_CHOICE, probs.natural, codes)


def token_ids(choices: np.ndarray, matrix: ScoreMatrix, spec: RefusalSpec) -> np.ndarray:
    """The first token each choice stands for (the model's own top token for OWN)."""
    ids = np.asarray(spec.token_ids)
    return np.where(choices == OWN, matrix.top_rest_id, ids[np.maximum(choices, 0)])


def choice_names(spec: RefusalSpec) -> list[str]:
    """Column names for choice codes 0..K (OWN is shown as 'other')."""
    return ["respond", *spec.category_names]
