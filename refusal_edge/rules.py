"""The decision rules, in one registry: rule name -> one vectorised function over the category probabilities.

A rule maps category probabilities (N prompts x K categories, laid out as ``spec.category_names``) to one
choice code per prompt: ``RESPONDED``, ``1 + category index`` (force that token), or ``MODEL_CHOICE`` (leave
the first token to the model). The per-prompt decision (``decision.decide``) runs the rule on one row and a
sweep (``evaluate.batch.choose``) on a whole score matrix, so the two cannot disagree; ``policy.Policy`` accepts only
the names in ``RULES``, so a rule that is named but not implemented cannot exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Protocol, Sequence

import numpy as np


class PolicyView(Protocol):
    """What a rule reads of a policy (``policy.Policy`` satisfies it; policy.py imports this registry, so the rules
    name the fields they need instead of importing it back)."""

    rule: str
    threshold: float
    thresholds: Mapping[str, float]

    def threshold_for(self, category: str) -> float: ...

OWN = -1  # the model's own first token, neither [respond] nor a refusal token
RESPONDED = 0  # [respond]; category c is c + 1, as in spec.token_ids
MODEL_CHOICE = -2  # a rule leaves the first token to the model: resolved by ``natural_choice``


@dataclass(frozen=True)
class Rule:
    choose: Callable[[np.ndarray, Sequence[str], "PolicyView"], np.ndarray]
    # Which thresholds the rule reads, so that a sweep knows what to move: "one" (``policy.threshold``),
    # "per-category" (``policy.threshold_for``), "none" (the model decides).
    thresholds: str
    summary: str  # what the rule does, for people (the dials page shows it beside the rule)
    # The threshold each category's probability is held to (None: none), and the one the summed refusal
    # probability is held to (None: none), so that a display draws them without knowing the rule.
    in_force: Callable[["PolicyView", Sequence[str]], tuple[dict[str, float | None], float | None]]


def _binary(p: np.ndarray, names: Sequence[str], policy: "PolicyView") -> np.ndarray:
    """The paper's rule: refuse iff the summed refusal probability reaches the threshold; the likeliest category."""
    return np.where(p.sum(axis=1) >= policy.threshold, p.argmax(axis=1) + 1, RESPONDED)


def _per_category(p: np.ndarray, names: Sequence[str], policy: "PolicyView") -> np.ndarray:
    """The likeliest category that passes its own threshold (ties: the first, as argmax takes it), else respond."""
    eligible = p >= np.array([policy.threshold_for(n) for n in names])
    best_eligible = np.where(eligible, p, -np.inf).argmax(axis=1)
    return np.where(eligible.any(axis=1), best_eligible + 1, RESPONDED)


def _paper_category(p: np.ndarray, names: Sequence[str], policy: "PolicyView") -> np.ndarray:
    """The paper's released code: the likeliest category c*; controlled c* is forced iff p(c*) >= t(c*)."""
    best = p.argmax(axis=1)
    controlled = np.array([n in policy.thresholds for n in names])
    limits = np.array([policy.thresholds.get(n, np.inf) for n in names])
    forced = np.where(p[np.arange(len(p)), best] >= limits[best], best + 1, RESPONDED)
    return np.where(controlled[best], forced, MODEL_CHOICE)


def _natural(p: np.ndarray, names: Sequence[str], policy: "PolicyView") -> np.ndarray:
    """No intervention: the model's own first token (biases still apply)."""
    return np.full(len(p), MODEL_CHOICE)


def _none(policy: "PolicyView", names: Sequence[str]) -> dict[str, float | None]:
    return dict.fromkeys(names)


REGISTRY: dict[str, Rule] = {
    "binary": Rule(_binary, "one", "Refuse when all categories together reach the default threshold.",
                   lambda policy, names: (_none(policy, names), policy.threshold)),
    "paper-category": Rule(_paper_category, "per-category",
                           "Threshold only the likeliest category, if it has a threshold of its own.",
                           lambda policy, names: ({n: policy.thresholds.get(n) for n in names}, None)),
    "per-category": Rule(_per_category, "per-category",
                         "Refuse with the likeliest category whose probability reaches its threshold.",
                         lambda policy, names: ({n: policy.threshold_for(n) for n in names}, None)),
    "natural": Rule(_natural, "none", "The model picks its first token itself; biases still apply.",
                    lambda policy, names: (_none(policy, names), None)),
}
RULES = tuple(REGISTRY)
DEFAULT_RULE = "per-category"


def summaries() -> dict[str, str]:
    """Rule name -> what it does, in registry order (the server's model card lists them for the dials page)."""
    return {name: rule.summary for name, rule in REGISTRY.items()}


def thresholds_in_force(policy: "PolicyView", names: Sequence[str]) -> dict:
    """Which threshold each probability is held to under the policy's rule, as a decision reports it:
    ``{"categories": {name: threshold or None}, "refusal_probability": threshold or None}`` (the latter for a rule
    that thresholds the summed refusal probability)."""
    categories, total = REGISTRY[policy.rule].in_force(policy, names)
    return {"categories": categories, "refusal_probability": total}


def apply(policy: "PolicyView", p_categories: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Choice codes (RESPONDED, 1 + category, or MODEL_CHOICE) of the policy's rule for each row."""
    return REGISTRY[policy.rule].choose(p_categories, names, policy)


def natural_choice(biased_logits: np.ndarray, top_rest_logit: np.ndarray) -> np.ndarray:
    """The model's greedy first token with the biases applied: index into spec.token_ids, or OWN when the best
    non-decision token beats every decision token."""
    best = biased_logits.argmax(axis=1)
    wins = biased_logits[np.arange(len(best)), best] >= top_rest_logit
    return np.where(wins, best, OWN)
