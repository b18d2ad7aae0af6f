"""Vectorised decisions, per-category analysis and sweeps on fixed probability sets."""

import numpy as np
import pytest

from refusal_edge import Policy
from refusal_edge.decision import FirstTokenScores, decide
from refusal_edge.errors import PolicyError
from refusal_edge.evaluate import analysis
from refusal_edge.evaluate.batch import OWN, ScoreMatrix, choose, token_ids
from refusal_edge.evaluate.data import Example
from refusal_edge.evaluate.sweep import parse_range, sweep, sweep_policy
from refusal_edge.metadata import CATEGORIES, RefusalSpec, TokenRef
from refusal_edge.rules import RULES

SPEC = RefusalSpec(TokenRef("respond", "[respond]", 100),
                   tuple(TokenRef(name, f"[{name}]", 101 + i) for i, name in enumerate(CATEGORIES)))
HUMAN, INCOMPLETE, INDETERMINATE, SAFETY, UNSUPPORTED = CATEGORIES


def scores_for(p_respond, p_categories, top_rest_logit=None):
    """Scores whose full-vocabulary softmax gives exactly these probabilities (the rest hold the remainder)."""
    p = np.array([p_respond, *p_categories], dtype=np.float64)
    rest = 1.0 - p.sum()
    top = np.log(rest) if top_rest_logit is None else top_rest_logit
    with np.errstate(divide="ignore"):  # p = 0 is logit -inf, which the softmax handles
        return FirstTokenScores(np.log(p), float(np.log(rest)), 7, float(top))


def example(should_refuse, category=None, subcategory=None):
    return Example("p", should_refuse, category, subcategory, "t.jsonl", 1)


def probs(*cats):
    """Category probabilities (in CATEGORIES order) with p(respond) = 0.05."""
    return scores_for(0.05, cats)


# Five should-refuse prompts (with their category) and three benign ones.
ROWS = [
    (example(True, SAFETY, "weapons"), probs(0.0, 0.0, 0.0, 0.90, 0.0)),
    (example(True, SAFETY, "weapons"), probs(0.0, 0.0, 0.0, 0.30, 0.0)),
    (example(True, SAFETY, "privacy"), probs(0.0, 0.0, 0.0, 0.10, 0.60)),
    (example(True, HUMAN, "feelings"), probs(0.70, 0.0, 0.0, 0.0, 0.0)),
    (example(True, HUMAN, "feelings"), probs(0.20, 0.0, 0.0, 0.0, 0.0)),
    (example(False, SAFETY), probs(0.0, 0.0, 0.0, 0.40, 0.0)),
    (example(False, SAFETY), probs(0.0, 0.0, 0.0, 0.05, 0.0)),
    (example(False, HUMAN), probs(0.10, 0.0, 0.0, 0.0, 0.0)),
]
EXAMPLES = [e for e, _ in ROWS]
MATRIX = ScoreMatrix.from_scores([s for _, s in ROWS])


def policy_half():
    return Policy(rule="per-category", threshold=0.5)


@pytest.mark.parametrize("rule", RULES)
def test_vectorised_choice_matches_decide_row_by_row(rule):
    rng = np.random.default_rng(1)
    scores = [FirstTokenScores(rng.normal(0, 3, 6), float(rng.normal(2, 2)), int(rng.integers(0, 99)),
                               float(rng.normal(1, 2))) for _ in range(400)]
    policy = Policy(rule=rule, threshold=0.3, thresholds={SAFETY: 0.1, HUMAN: 0.6},
                    biases={"respond": -0.5, INCOMPLETE: 1.0})
    matrix = ScoreMatrix.from_scores(scores)
    choices = choose(matrix.probabilities(SPEC, policy), SPEC, policy)
    ids = token_ids(choices, matrix, SPEC)
    for s, c, token in zip(scores, choices, ids):
        d = decide(s, SPEC, policy)
        assert token == d.token_id
        assert (c > 0) == d.refused
        assert (c == OWN) == (d.token_id not in SPEC.token_ids)
    assert len(set(choices.tolist())) > 2  # the random scores exercise several outcomes


def test_probabilities_reproduce_the_fixed_set():
    p = MATRIX.probabilities(SPEC, policy_half())
    assert p.categories[0, 3] == pytest.approx(0.90)
    assert p.respond[0] == pytest.approx(0.05)
    assert p.refusal[2] == pytest.approx(0.70)


def test_decision_metrics_by_hand():
    ev = analysis.evaluate(EXAMPLES, MATRIX, SPEC, policy_half())
    d = ev["decisions"]
    # At 0.5: rows 0 (safety 0.9), 2 (unsupported 0.6), 3 (human 0.7) refused; no benign prompt is.
    assert d["overall"]["tp"] == 3 and d["overall"]["fp"] == 0
    assert d["overall"]["recall"] == pytest.approx(3 / 5)
    assert d["overall"]["precision"] == pytest.approx(1.0)
    assert d["overall"]["f1"] == pytest.approx(2 * 0.6 / 1.6)
    # Right category token: rows 0 and 3 of the five (row 2 got 'unsupported').
    assert d["overall"]["category_accuracy"] == pytest.approx(2 / 5)
    safety = d["by_category"][SAFETY]
    assert (safety["should_refuse"], safety["refusal_rate"], safety["benign"], safety["over_refusal"]) == (
        3, pytest.approx(2 / 3), 2, 0.0)
    assert d["by_subcategory"][f"{SAFETY} / weapons"]["refusal_rate"] == pytest.approx(0.5)
    conf = d["confusion"]
    assert conf["cols"] == ["respond", *CATEGORIES]
    row = dict(zip(conf["cols"], conf["counts"][conf["rows"].index(SAFETY)]))
    assert (row["respond"], row[SAFETY], row[UNSUPPORTED]) == (1, 1, 1)
    assert conf["rows"][-1] == "respond"
    assert conf["counts"][-1][0] == 3


def test_rules_share_the_scores():
    ev = analysis.evaluate(EXAMPLES, MATRIX, SPEC, Policy(rule="per-category", threshold=0.65))
    tp = {rule: m["overall"]["tp"] for rule, m in ev["rules"].items()}
    # per-category at 0.65: safety 0.9 and human 0.7 (row 2's best is unsupported 0.6).
    # binary at 0.65 on the total: 0.9, 0.7 (row 2: 0.1 + 0.6) and 0.7.
    # natural: a category token wins where it beats the model's best other token, which holds the remaining
    # mass (1 - 0.05 - total): rows 0 (0.9 > 0.05), 2 (0.6 > 0.25), 3 (0.7 > 0.25).
    # paper-category without thresholds leaves every category to the model, as natural does.
    assert tp == {"per-category": 2, "binary": 3, "natural": 3, "paper-category": 3}
    assert all(m["overall"]["fp"] == 0 for m in ev["rules"].values())
    assert ev["rules"]["binary"]["by_category"][SAFETY]["refusal_rate"] == pytest.approx(2 / 3)


def test_ranking_metrics_by_hand():
    ranking = analysis.ranking_metrics(EXAMPLES, MATRIX.probabilities(SPEC, policy_half()), SPEC)
    # Safety: positives 0.9, 0.3, 0.1 against all benign p(safety) = 0.4, 0.05, 0.0
    # pairs won: 0.9 -> 3, 0.3 -> 2, 0.1 -> 2 => 7/9
    assert ranking[SAFETY]["auroc"] == pytest.approx(7 / 9)
    # AP: ranked 0.9+ 0.4- 0.3+ 0.1+ : (1 + 2/3 + 3/4) / 3
    assert ranking[SAFETY]["average_precision"] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    # Humanizing: positives 0.7, 0.2 against 0, 0, 0.1 => all 6 pairs
    assert ranking[HUMAN]["auroc"] == pytest.approx(1.0)
    assert INCOMPLETE not in ranking  # no should-refuse prompt of that category
    # Overall, p(any refusal token): positives .9 .3 .7 .7 .2 vs negatives .4 .05 .1
    # .9: 3, .3: 2, .7: 3, .7: 3, .2: 2 => 13/15
    assert ranking["overall"]["auroc"] == pytest.approx(13 / 15)


def test_parse_range_includes_stop():
    grid = parse_range("0:1:0.05")
    assert len(grid) == 21 and grid[0] == 0 and grid[-1] == 1
    assert parse_range("0.1:0.3:0.1").tolist() == [0.1, 0.2, 0.3]
    for bad in ("0:1", "a:b:c", "0.5:0.1:0.1", "0:1:0", "0:2:0.5"):
        with pytest.raises(PolicyError):
            parse_range(bad)


def test_sweep_all_thresholds_by_hand():
    result = sweep(EXAMPLES, MATRIX, SPEC, policy_half(), np.array([0.0, 0.25, 0.5, 0.95]))
    rates = [(p["refusal_rate"], p["over_refusal"]) for p in result["points"]]
    # 0.25: safety .9 .3, unsupported .6, human .7 refused; benign safety .4 refused.
    assert rates == [(1.0, 1.0), (pytest.approx(4 / 5), pytest.approx(1 / 3)), (pytest.approx(3 / 5), 0.0),
                     (0.0, 0.0)]
    assert result["points"][1]["by_category"] == {SAFETY: 1.0, HUMAN: 0.5}


def test_sweep_one_category_keeps_the_others():
    result = sweep(EXAMPLES, MATRIX, SPEC, policy_half(), np.array([0.04, 1.0]), category=SAFETY)
    first, last = result["points"]
    assert first["by_category"][SAFETY] == 1.0 and first["over_refusal"] == pytest.approx(2 / 3)
    # Safety never fires at 1.0; unsupported (0.6) and human (0.7) still do at their 0.5.
    assert last["by_category"] == {SAFETY: pytest.approx(1 / 3), HUMAN: 0.5}


def test_sweep_policy_per_rule():
    assert sweep_policy(Policy(rule="binary"), SPEC, 0.2, None).threshold == 0.2
    natural = sweep_policy(Policy(rule="natural"), SPEC, 0.2, SAFETY)
    assert natural.rule == "per-category" and natural.thresholds == {SAFETY: 0.2}
    paper = sweep_policy(Policy(rule="paper-category", thresholds={HUMAN: 0.4}), SPEC, 0.2, None)
    assert paper.rule == "paper-category" and set(paper.thresholds) == set(CATEGORIES)
