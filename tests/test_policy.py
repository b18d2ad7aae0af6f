import json
import math

import pytest

from refusal_edge.errors import PolicyError
from refusal_edge.metadata import CATEGORIES
from refusal_edge.policy import Policy, resolve_category


@pytest.mark.parametrize("raw, field", [
    ({"rule": "sometimes"}, "rule"),
    ({"threshold": 1.5}, "threshold"),
    ({"thresholds": {"Humanizing requests": -0.1}}, "thresholds.Humanizing requests"),
    ({"biases": {"Humanizing requests": math.inf}}, "biases.Humanizing requests"),
    ({"biases": {"Humanizing requests": math.nan}}, "biases.Humanizing requests"),
    ({"temperature": 0}, "temperature"),
    ({"thresholds": {"Cooking requests": 0.2}}, "thresholds"),
    ({"colour": "blue"}, "colour"),
])
def test_bad_policies_name_the_field(raw, field):
    with pytest.raises(PolicyError, match=field.replace(".", r"\.")):
        Policy.from_dict(raw, CATEGORIES)


@pytest.mark.parametrize("given, expected", [
    ("Requests with safety concerns", "Requests with safety concerns"),
    ("safety", "Requests with safety concerns"),
    ("HUMAN", "Humanizing requests"),
    ("unsupported requests", "Unsupported requests"),
])
def test_category_names_accept_unique_prefixes(given, expected):
    assert resolve_category(given, CATEGORIES) == expected


def test_ambiguous_prefix_is_an_error():
    with pytest.raises(PolicyError, match="ambiguous"):
        resolve_category("in", CATEGORIES)  # Incomplete / Indeterminate


def test_toml_and_json_round_trip(tmp_path):
    policy = Policy(rule="paper-category", threshold=0.4, thresholds={"Requests with safety concerns": 0.3},
                    biases={"respond": -0.5, "Humanizing requests": 1.0}, temperature=0.7)
    for name in ("p.toml", "p.json"):
        path = tmp_path / name
        policy.save(path)
        assert Policy.load(path, CATEGORIES) == policy


def test_policy_files_resolve_prefixes_and_report_their_path(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('rule = "per-category"\n[thresholds]\nsafety = 0.25\n')
    assert Policy.load(good, CATEGORIES).thresholds == {"Requests with safety concerns": 0.25}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"thresholds": {"safety": 2}}))
    with pytest.raises(PolicyError, match="bad.json"):
        Policy.load(bad, CATEGORIES)
    broken = tmp_path / "broken.toml"
    broken.write_text("rule = \n")
    with pytest.raises(PolicyError, match="not valid TOML"):
        Policy.load(broken, CATEGORIES)
    with pytest.raises(PolicyError, match="cannot read"):
        Policy.load(tmp_path / "missing.toml", CATEGORIES)
