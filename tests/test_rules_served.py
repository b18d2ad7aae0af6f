"""The rule registry describes itself (rules.Rule.summary, rules.thresholds_in_force) and the server says it: the
model card lists the rules with what each does, and every decision reports which threshold each probability was
held to. The dials page reads both and restates no rule (its Playwright side: test_server_ui_rules.py)."""

import re
from pathlib import Path

import numpy as np
import pytest

from refusal_edge import Policy, rules
from refusal_edge.metadata import CATEGORIES
from refusal_edge.rules import MODEL_CHOICE, REGISTRY, RESPONDED, RULES

STATIC = Path(rules.__file__).parent / "server" / "static"
POLICY = Policy(rule="per-category", threshold=0.6, thresholds={"Requests with safety concerns": 0.3,
                                                                "Humanizing requests": 0.45})


def one_hot(k: int, value: float) -> np.ndarray:
    p = np.zeros((1, len(CATEGORIES)))
    p[0, k] = value
    return p


@pytest.mark.parametrize("rule", RULES)
def test_the_thresholds_a_rule_reports_are_the_ones_it_applies(rule):
    """The oracle is the rule itself: a category alone at exactly its reported threshold is refused, just under it is
    not; a category with none reported is never refused on a threshold; the same for the summed probability."""
    policy = Policy(**{**POLICY.to_dict(), "rule": rule})
    held = rules.thresholds_in_force(policy, CATEGORIES)
    assert list(held["categories"]) == list(CATEGORIES)
    for k, name in enumerate(CATEGORIES):
        t = held["categories"][name]
        at = int(rules.apply(policy, one_hot(k, 0.6 if t is None else t), CATEGORIES)[0])
        under = int(rules.apply(policy, one_hot(k, 0.6 if t is None else t - 1e-6), CATEGORIES)[0])
        if t is not None:
            assert (at, under) == (k + 1, RESPONDED), (rule, name)
        elif held["refusal_probability"] is None:
            assert at in (RESPONDED, MODEL_CHOICE) and under in (RESPONDED, MODEL_CHOICE), (rule, name)
    total = held["refusal_probability"]
    if total is not None:  # spread over two categories: only the sum reaches it
        spread = np.zeros((1, len(CATEGORIES)))
        spread[0, :2] = total / 2
        assert int(rules.apply(policy, spread, CATEGORIES)[0]) != RESPONDED
        spread[0, :2] = (total - 1e-6) / 2
        assert int(rules.apply(policy, spread, CATEGORIES)[0]) == RESPONDED


def test_the_rules_differ_in_what_they_report():
    held = {rule: rules.thresholds_in_force(Policy(**{**POLICY.to_dict(), "rule": rule}), CATEGORIES) for rule in RULES}
    assert held["per-category"]["categories"]["Incomplete requests"] == 0.6  # the default stands in
    assert held["paper-category"]["categories"]["Incomplete requests"] is None  # uncontrolled
    assert held["binary"] == {"categories": dict.fromkeys(CATEGORIES), "refusal_probability": 0.6}
    assert held["natural"] == {"categories": dict.fromkeys(CATEGORIES), "refusal_probability": None}


def test_every_decision_reports_its_thresholds(tiny_model):
    for rule in RULES:
        policy = Policy(**{**POLICY.to_dict(), "rule": rule})
        decision = tiny_model.decide("hello", policy).to_dict()
        assert decision["thresholds_in_force"] == rules.thresholds_in_force(policy, tiny_model.categories)


def test_the_model_card_lists_every_rule_with_what_it_does(app_client):
    card = app_client.get("/v1/models").json()["data"][0]["refusal"]
    assert list(card["rules"]) == list(RULES)
    assert card["rules"] == {name: rule.summary for name, rule in REGISTRY.items()}
    assert all(len(summary) > 20 for summary in card["rules"].values())
    decision = app_client.post("/v1/refusal/decisions", json={"input": "hi", "refusal": {"rule": "binary"}}).json()
    assert decision["data"][0]["thresholds_in_force"]["refusal_probability"] == decision["policy"]["threshold"]


def test_the_page_names_no_rule():
    """The page's files hold no rule name as a string: rules, their text and their thresholds come from the server."""
    for path in STATIC.iterdir():
        text = path.read_text()
        for name in RULES:
            assert not re.search(rf"""["'`>]{re.escape(name)}["'`<]""", text), (path.name, name)
