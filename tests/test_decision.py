"""The decision rules against hand-computed expectations, with no model involved."""

import math

import numpy as np
import pytest

from refusal_edge.decision import FirstTokenScores, decide, probabilities
from refusal_edge.metadata import RefusalSpec, TokenRef
from refusal_edge.policy import Policy

NAMES = ("A", "B", "C")
SPEC = RefusalSpec(TokenRef("respond", "[respond]", 10), tuple(TokenRef(n, f"[{n}]", 11 + i) for i, n in enumerate(NAMES)))


def scores_from_probs(p_respond, p_cats, p_rest_top, n_rest=1):
    """Scores whose full-vocabulary softmax is exactly the given probabilities (rest spread over n_rest tokens)."""
    rest_mass = 1.0 - p_respond - sum(p_cats)
    assert rest_mass > 0
    logits = np.log([p_respond, *p_cats])
    return FirstTokenScores(logits, math.log(rest_mass), top_rest_id=3, top_rest_logit=math.log(p_rest_top))


def test_probabilities_are_a_full_vocabulary_softmax():
    rng = np.random.default_rng(1)
    full = rng.normal(size=50).astype(np.float32) * 3
    scores = FirstTokenScores.from_logits(full, SPEC, temperature=1.0)
    expected = np.exp(full - full.max()) / np.exp(full - full.max()).sum()
    p_respond, p_cat = probabilities(scores, SPEC, Policy())
    assert p_respond == pytest.approx(expected[10], rel=1e-5)
    np.testing.assert_allclose(p_cat, expected[11:14], rtol=1e-5)
    masked = full.copy()
    masked[10:14] = -np.inf
    assert scores.top_rest_id == int(np.argmax(masked))


def test_temperature_and_bias_enter_before_the_softmax():
    rng = np.random.default_rng(2)
    full = rng.normal(size=40).astype(np.float32)
    policy = Policy(temperature=0.5, biases={"B": 2.0, "respond": -1.0})
    scores = FirstTokenScores.from_logits(full, SPEC, temperature=0.5)
    biased = full.astype(np.float64).copy()
    biased[12] += 2.0
    biased[10] -= 1.0
    expected = np.exp(biased / 0.5 - (biased / 0.5).max())
    expected /= expected.sum()
    p_respond, p_cat = probabilities(scores, SPEC, policy)
    assert p_respond == pytest.approx(expected[10], rel=1e-5)
    np.testing.assert_allclose(p_cat, expected[11:14], rtol=1e-5)


def test_scores_at_another_temperature_are_refused():
    scores = FirstTokenScores.from_logits(np.zeros(20, np.float32), SPEC, temperature=1.0)
    with pytest.raises(ValueError, match="temperature"):
        probabilities(scores, SPEC, Policy(temperature=2.0))


@pytest.mark.parametrize(
    "threshold, expected",
    [(0.30, "B"), (0.35, "B"), (0.36, None)],  # p(refuse) = 0.05 + 0.2 + 0.1 = 0.35; B is the likeliest category
)
def test_binary_sums_categories_and_forces_the_likeliest(threshold, expected):
    scores = scores_from_probs(0.5, [0.05, 0.2, 0.1], 0.1)
    d = decide(scores, SPEC, Policy(rule="binary", threshold=threshold))
    assert d.category == expected
    assert d.forced and d.refused == (expected is not None)
    assert d.token_id == (12 if expected else 10)
    assert d.refusal_probability == pytest.approx(0.35)


def test_per_category_forces_the_likeliest_eligible_category():
    scores = scores_from_probs(0.3, [0.25, 0.3, 0.1], 0.04)
    # A and C pass their thresholds, B does not: the likeliest eligible (A) wins although B is likelier overall.
    policy = Policy(rule="per-category", thresholds={"A": 0.2, "B": 0.5, "C": 0.05})
    d = decide(scores, SPEC, policy)
    assert (d.category, d.token, d.forced) == ("A", "[A]", True)
    assert decide(scores, SPEC, Policy(rule="per-category", threshold=0.9)).category is None


def test_per_category_uses_the_default_threshold_for_unlisted_categories():
    scores = scores_from_probs(0.3, [0.25, 0.3, 0.1], 0.04)
    assert decide(scores, SPEC, Policy(rule="per-category", threshold=0.28, thresholds={"B": 0.9})).category is None
    assert decide(scores, SPEC, Policy(rule="per-category", threshold=0.2, thresholds={"B": 0.9})).category == "A"


def test_paper_category_controls_only_the_argmax_category():
    scores = scores_from_probs(0.3, [0.25, 0.3, 0.1], 0.04)
    forced = decide(scores, SPEC, Policy(rule="paper-category", thresholds={"B": 0.3}))
    assert (forced.category, forced.forced) == ("B", True)
    held = decide(scores, SPEC, Policy(rule="paper-category", thresholds={"B": 0.31}))
    assert (held.category, held.token_id, held.forced) == (None, 10, True)
    # B is the argmax but uncontrolled: A's low threshold does not matter, the model keeps its own token.
    own = decide(scores_from_probs(0.2, [0.25, 0.3, 0.1], 0.04), SPEC, Policy(rule="paper-category", thresholds={"A": 0.0}))
    assert (own.forced, own.token_id, own.category, own.refused) == (False, 12, "B", True)


def test_natural_is_the_greedy_token_with_biases():
    scores = scores_from_probs(0.2, [0.1, 0.15, 0.05], 0.4)
    plain = decide(scores, SPEC, Policy(rule="natural"))
    assert (plain.token_id, plain.forced, plain.refused) == (3, False, False)
    pushed = decide(scores, SPEC, Policy(rule="natural", biases={"C": math.log(10)}))  # 0.05 * 10 > 0.4
    assert (pushed.category, pushed.refused, pushed.forced) == ("C", True, False)


def test_decision_serialises():
    d = decide(scores_from_probs(0.5, [0.1, 0.1, 0.1], 0.1), SPEC, Policy())
    data = d.to_dict()
    assert data["policy"]["rule"] == "per-category"
    assert set(data["probabilities"]) == set(NAMES)
    restored = FirstTokenScores.from_dict(scores_from_probs(0.5, [0.1, 0.1, 0.1], 0.1).to_dict())
    assert decide(restored, SPEC, Policy()).to_dict()["probabilities"] == data["probabilities"]
