"""The refusal decision: a pure function of first-token scores and a policy. No llama.cpp in here."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Mapping

import numpy as np

from . import rules
from .errors import NonFiniteScoresError
from .metadata import RefusalSpec
from .policy import RESPOND, Policy


@dataclass(frozen=True)
class FirstTokenScores:
    """What the decision needs from the full-vocabulary logits, in O(categories) space.

    ``logits`` are raw, laid out as ``spec.token_ids`` (respond, then categories). ``rest_logsumexp`` is
    logsumexp(rest / temperature) over every other vocabulary entry, so probabilities stay a softmax over
    the FULL vocabulary after biases are added to the refusal tokens. ``top_rest_*`` is the model's best
    non-refusal token, needed when the model is left to choose. ``exact`` is False when an engine could only bound
    a decision token's probability from above (remote engines that report the top k; see engines/remote/firsttoken.py).
    """

    logits: np.ndarray
    rest_logsumexp: float
    top_rest_id: int
    top_rest_logit: float
    temperature: float = 1.0
    exact: bool = True

    @classmethod
    def from_logits(cls, logits: np.ndarray, spec: RefusalSpec, temperature: float = 1.0) -> "FirstTokenScores":
        ids = np.asarray(spec.token_ids)
        rest = np.array(logits, dtype=np.float32)  # a copy: llama.cpp's buffer stays untouched
        special = rest[ids].astype(np.float64)
        rest[ids] = -np.inf
        top = int(rest.argmax())
        top_logit = float(rest[top])
        # In place and in float32 (summed in float64): this runs once per prompt over up to 128k entries.
        with np.errstate(invalid="ignore", over="ignore"):  # non-finite logits fail closed just below
            if temperature != 1.0:
                rest *= np.float32(1.0 / temperature)
            scaled_max = float(rest[top])
            rest -= np.float32(scaled_max)
            np.exp(rest, out=rest)
            lse = scaled_max + float(np.log(rest.sum(dtype=np.float64)))
        check_finite(special, lse, top_logit)  # so that no NaN reaches a decision or a score store
        return cls(special, lse, top, top_logit, temperature)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["logits"] = [float(x) for x in self.logits]
        return d

    @classmethod
    def from_dict(cls, raw: Mapping) -> "FirstTokenScores":
        return cls(np.asarray(raw["logits"], dtype=np.float64), float(raw["rest_logsumexp"]),
                   int(raw["top_rest_id"]), float(raw["top_rest_logit"]), float(raw.get("temperature", 1.0)),
                   bool(raw.get("exact", True)))


@dataclass(frozen=True)
class Decision:
    """Which first response token was chosen, why, and every probability that went into it."""

    token_id: int
    token: str
    category: str | None
    refused: bool
    forced: bool
    rule: str
    probabilities: dict[str, float]
    respond_probability: float
    policy: Policy
    decision_token: bool = True  # False when the model's own first token is ordinary text
    prefill_ms: float = 0.0
    decision_ms: float = 0.0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    meta: dict = field(default_factory=dict)

    @property
    def refusal_probability(self) -> float:
        return float(sum(self.probabilities.values()))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["policy"] = self.policy.to_dict()
        d["refusal_probability"] = self.refusal_probability
        d["thresholds_in_force"] = rules.thresholds_in_force(self.policy, list(self.probabilities))
        return d


def probabilities(scores: FirstTokenScores, spec: RefusalSpec, policy: Policy) -> tuple[float, np.ndarray]:
    """(p(respond), p(category) per category), full-vocabulary softmax with the policy's biases."""
    check_temperature(scores.temperature, policy)
    p = softmax_rows((scores.logits + bias_vector(spec, policy))[None, :], np.array([scores.rest_logsumexp]),
                     scores.temperature)[0]
    check_finite(p, scores.rest_logsumexp, scores.top_rest_logit)
    return float(p[0]), p[1:]


def softmax_rows(biased: np.ndarray, rest_logsumexp: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities of the decision tokens (N x (1 + K)) in a softmax over the full vocabulary: the rest of it
    enters through its logsumexp (already at ``temperature``)."""
    # NaN/inf inputs are refused by check_finite right after, with a clear error: numpy's warnings are noise.
    with np.errstate(invalid="ignore", over="ignore"):
        z = biased / temperature
        lse = np.logaddexp(rest_logsumexp, np.logaddexp.reduce(z, axis=1))
        return np.exp(z - lse[:, None])


def check_finite(*values) -> None:
    """Fail closed: every comparison with NaN is False, so a NaN probability would quietly become [respond]."""
    if not all(np.isfinite(v).all() for v in values):
        raise NonFiniteScoresError(
            "the first-token scores are not finite (NaN or infinite logits from the model): no decision is made"
        )


def check_temperature(computed: float, policy: Policy) -> None:
    """Scores carry the temperature of their softmax; a policy at another temperature needs new scores."""
    if not np.isclose(policy.temperature, computed):
        raise ValueError(f"scores were computed at temperature {computed}, the policy asks for {policy.temperature}")


def decide(scores: FirstTokenScores, spec: RefusalSpec, policy: Policy) -> Decision:
    """The policy's rule (rules.REGISTRY) on this one prompt's probabilities."""
    p_respond, p_cat = probabilities(scores, spec, policy)
    code = int(rules.apply(policy, p_cat[None, :], spec.category_names)[0])
    if code == rules.MODEL_CHOICE:
        return _model_choice(scores, spec, policy, p_respond, p_cat)
    return _build(spec, policy, p_respond, p_cat, None if code == rules.RESPONDED else code - 1, forced=True)


def _model_choice(scores, spec, policy, p_respond, p_cat) -> Decision:
    """The model's own greedy first token, refusal tokens biased. The runtime may re-sample it."""
    biased = scores.logits + bias_vector(spec, policy)
    best = int(rules.natural_choice(biased[None, :], np.array([scores.top_rest_logit]))[0])
    if best != rules.OWN:
        return _build(spec, policy, p_respond, p_cat, None if best == rules.RESPONDED else best - 1, forced=False)
    return Decision(
        token_id=scores.top_rest_id, token="", category=None, refused=False, forced=False, rule=policy.rule,
        probabilities=dict(zip(spec.category_names, map(float, p_cat))), respond_probability=p_respond,
        policy=policy, decision_token=False,
    )


def _build(spec, policy, p_respond, p_cat, chosen: int | None, forced: bool) -> Decision:
    ref = spec.respond if chosen is None else spec.categories[chosen]
    return Decision(
        token_id=ref.id, token=ref.token, category=None if chosen is None else ref.name, refused=chosen is not None,
        forced=forced, rule=policy.rule, probabilities=dict(zip(spec.category_names, map(float, p_cat))),
        respond_probability=p_respond, policy=policy,
    )


def bias_vector(spec: RefusalSpec, policy: Policy) -> np.ndarray:
    """The policy's logit biases laid out as ``spec.token_ids`` (respond, then categories)."""
    if not policy.biases:
        return np.zeros(len(spec.token_ids))
    return np.array([policy.biases.get(RESPOND, 0.0), *(policy.biases.get(n, 0.0) for n in spec.category_names)])


def assistant_message(text: str, decision: Decision) -> dict:
    """The turn as the history records it: with the decision token, so a re-render matches what the model saw."""
    message = {"role": "assistant", "content": text}
    if decision.decision_token:
        message["refusal_token"] = decision.token
    return message


def decision_for_token(token_id: int, spec: RefusalSpec, base: Decision, token_text: str = "") -> Decision:
    """Re-label a decision after the runtime sampled the model's own first token."""
    category = spec.category_of(token_id)
    if token_id == spec.respond.id:
        token_text = spec.respond.token
    elif category is not None:
        token_text = next(c.token for c in spec.categories if c.id == token_id)
    return replace(base, token_id=token_id, token=token_text, category=category, refused=category is not None,
                   decision_token=token_id in spec.token_ids)
