"""Property-based tests (Hypothesis) of policies and decisions: parsing against a table of what each field accepts,
files against the parsers they promise to be, and the decision against a plain reimplementation of the paper's
definitions (full-vocabulary softmax with logit biases at a temperature, then the rule), plus invariants that hold
whatever the implementation: refusal is monotone in each threshold, a zero bias changes nothing.

Every property counts its examples (outcomes.Outcomes) so that it cannot pass by rejecting every input.
"""

import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402

from outcomes import Outcomes  # noqa: E402
from test_properties import FAST, HOSTILE, JSON, mostly  # noqa: E402
from refusal_edge.decision import FirstTokenScores, decide  # noqa: E402
from refusal_edge.errors import PolicyError  # noqa: E402
from refusal_edge.metadata import CATEGORIES, RefusalSpec, TokenRef  # noqa: E402
from refusal_edge.policy import BIAS_LIMIT, RULES, TEMPERATURE_RANGE, Policy  # noqa: E402

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# policies -----------------------------------------------------------------------------------------------------
SAFETY, HUMANIZING, INCOMPLETE = "Requests with safety concerns", "Humanizing requests", "Incomplete requests"
# How a table key names a category (or the respond token, for biases): exact names, case-insensitive names, unique
# prefixes, a unique word. None: unknown or ambiguous (two categories start with "in"), an error.
NAMES = {SAFETY: SAFETY, "safety": SAFETY, "Safety": SAFETY, "req": SAFETY, "human": HUMANIZING,
         "INCOMPLETE REQUESTS": INCOMPLETE, "in": None, "": None, "violence": None, "[respond]": None, "\ud800": None,
         "respond": "respond"}
NUMBERS = st.floats() | st.integers() | st.sampled_from([1e-40, 1e300, 0.01, 100.0, -100.0, True])
# half the wrong values just outside a range: [0, 1] for thresholds, [0.01, 100] for temperatures, |bias| <= 100
EDGES = st.sampled_from([-1e-9, 1 + 1e-9, 1.25, 0.0099, 100.01, -100.01, -0.5])
WRONG = st.integers(0, 1).flatmap(lambda i: EDGES if i else NUMBERS | JSON)


def number_in(value, low, high) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high


def table_of(raw, low, high, respond_allowed: bool):
    """The table as a policy holds it (canonical names), or None when any key or value is refused."""
    if not isinstance(raw, dict):
        return None
    out = {}
    for key, value in raw.items():
        name = NAMES.get(key) if isinstance(key, str) else None
        if name is None or (name == "respond" and not respond_allowed) or name in out \
                or not number_in(value, low, high):
            return None
        out[name] = value
    return out


def expected_policy(raw) -> dict | None:
    """What Policy.from_dict must make of ``raw`` (field -> value, defaults filled in), or None: a PolicyError."""
    default = Policy()
    if not set(raw) <= {"rule", "threshold", "thresholds", "biases", "temperature"}:
        return None
    out = {"rule": raw.get("rule", default.rule), "threshold": raw.get("threshold", default.threshold),
           "temperature": raw.get("temperature", default.temperature),
           "thresholds": table_of(raw.get("thresholds", {}), 0, 1, respond_allowed=False),
           "biases": table_of(raw.get("biases", {}), -BIAS_LIMIT, BIAS_LIMIT, respond_allowed=True)}
    valid = isinstance(out["rule"], str) and out["rule"] in RULES and number_in(out["threshold"], 0, 1) \
        and number_in(out["temperature"], *TEMPERATURE_RANGE) and None not in (out["thresholds"], out["biases"])
    return out if valid else None


NOT_A_TABLE = JSON.filter(lambda v: not isinstance(v, dict))  # a random key could name a category ("h")
KEYS = mostly(st.sampled_from([k for k, name in NAMES.items() if name]), st.sampled_from(sorted(NAMES)))
RAW_POLICY = st.builds(
    lambda fields, extra: {**fields, **extra},
    st.fixed_dictionaries({}, optional={
        "rule": mostly(st.sampled_from(RULES), JSON),
        "threshold": mostly(st.floats(0, 1), WRONG),
        "temperature": mostly(st.floats(*TEMPERATURE_RANGE), WRONG),
        "thresholds": mostly(st.dictionaries(KEYS, mostly(st.floats(0, 1), WRONG), max_size=2),
                             NOT_A_TABLE),
        "biases": mostly(st.dictionaries(KEYS, mostly(st.floats(-BIAS_LIMIT, BIAS_LIMIT), WRONG),
                                         max_size=2), NOT_A_TABLE),
    }),
    mostly(st.just({}), st.dictionaries(HOSTILE, JSON, min_size=1, max_size=1)))


def test_policy_parsing_accepts_exactly_the_valid_fields_and_keeps_their_values():
    seen = Outcomes()

    @settings(FAST, max_examples=300)
    @given(raw=RAW_POLICY)
    def check(raw):
        expected = expected_policy(raw)
        try:
            policy = Policy.from_dict(raw, CATEGORIES)
        except PolicyError:
            assert expected is None, f"a valid policy was refused: {raw!r}"
            seen["refused"] += 1
            return
        assert expected is not None, f"an invalid policy was accepted: {raw!r} -> {policy!r}"
        assert policy.to_dict() == expected
        seen["accepted"] += 1
        seen["accepted with tables"] += bool(policy.thresholds or policy.biases)

    check()
    seen.require(accepted=40, refused=40, **{"accepted with tables": 15})


def parsed_file(data: bytes, suffix: str):
    """The policy a file holds by the JSON/TOML parsers, or None where they (or UTF-8) refuse it."""
    try:
        text = data.decode("utf-8")
        raw = json.loads(text) if suffix == ".json" else tomllib.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return expected_policy(raw) if isinstance(raw, dict) else None


def test_a_policy_file_holds_what_its_parser_reads_or_raises_a_policy_error_naming_it():
    seen = Outcomes()

    @settings(FAST, max_examples=200)
    @given(data=st.integers(0, 5).flatmap(lambda i: st.binary(max_size=64) if i == 0 else
                                          (JSON if i == 1 else RAW_POLICY).map(lambda v: json.dumps(v).encode())),
           suffix=st.sampled_from([".toml", ".json", ".json"]))
    def check(data, suffix):
        expected = parsed_file(data, suffix)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"p{suffix}"
            path.write_bytes(data)
            try:
                policy = Policy.load(path, CATEGORIES)
            except PolicyError as exc:
                assert str(path) in str(exc)
                assert expected is None, f"a valid policy file was refused: {data!r}"
                seen["refused"] += 1
                return
        assert policy.to_dict() == expected
        seen["loaded"] += 1

    check()
    seen.require(loaded=15, refused=40)


VALID_POLICY = st.builds(
    Policy, rule=st.sampled_from(RULES), threshold=st.floats(0, 1), temperature=st.floats(*TEMPERATURE_RANGE),
    thresholds=st.dictionaries(st.sampled_from(CATEGORIES), st.floats(0, 1)),
    biases=st.dictionaries(st.sampled_from([*CATEGORIES, "respond"]), st.floats(-BIAS_LIMIT, BIAS_LIMIT)))


@FAST
@given(policy=VALID_POLICY, suffix=st.sampled_from([".toml", ".json"]))
def test_a_saved_policy_loads_back_equal(policy, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"p{suffix}"
        policy.save(path)
        assert Policy.load(path, CATEGORIES) == policy


# decisions ----------------------------------------------------------------------------------------------------
NAMES_AB = ("A", "B")
SPEC = RefusalSpec(TokenRef("respond", "[respond]", 0),
                   tuple(TokenRef(n, f"[{n}]", 1 + i) for i, n in enumerate(NAMES_AB)))
VOCABULARY = 6  # ids 0-2 the decision tokens, 3-5 the rest of the vocabulary
MODEL = "the model's own choice"


def reference_probabilities(logits, policy):
    """p(respond), p(A), p(B): softmax over the whole vocabulary at the policy's temperature, biases added to the
    decision tokens' logits first."""
    z = np.array(logits, np.float64)
    for i, key in enumerate(["respond", *NAMES_AB]):
        z[i] += policy.biases.get(key, 0.0)
    z /= policy.temperature
    p = np.exp(z - z.max())
    return p[:3] / p.sum()


def reference_rule(p: dict, policy):
    """The rule on the category probabilities: 'respond', a category name, or MODEL."""
    if policy.rule == "binary":  # the paper: refuse iff the summed refusal probability reaches the threshold
        return max(NAMES_AB, key=p.get) if sum(p.values()) >= policy.threshold else "respond"
    if policy.rule == "per-category":  # the likeliest category that passes its own threshold
        passing = [n for n in NAMES_AB if p[n] >= policy.threshold_for(n)]
        return max(passing, key=p.get) if passing else "respond"
    if policy.rule == "paper-category":  # the paper's code: the likeliest category, if controlled, vs its threshold
        best = max(NAMES_AB, key=p.get)
        if best not in policy.thresholds:
            return MODEL
        return best if p[best] >= policy.thresholds[best] else "respond"
    assert policy.rule == "natural", f"rule {policy.rule!r} has no reference here: write one"
    return MODEL


def reference_greedy(logits, policy) -> int:
    """The model's own first token with the biases applied (ties: the decision token, the lower id)."""
    z = np.array(logits, np.float64)
    for i, key in enumerate(["respond", *NAMES_AB]):
        z[i] += policy.biases.get(key, 0.0)
    return int(z.argmax())


LOGITS = st.lists(st.floats(-30, 30, width=32), min_size=VOCABULARY, max_size=VOCABULARY)
DIAL_POLICY = st.builds(
    Policy, rule=st.sampled_from(RULES), threshold=st.floats(0, 1), temperature=st.floats(*TEMPERATURE_RANGE),
    thresholds=st.dictionaries(st.sampled_from(NAMES_AB), st.floats(0, 1)),
    biases=st.dictionaries(st.sampled_from([*NAMES_AB, "respond"]), st.floats(-40, 40)))


def test_decisions_follow_the_paper_definitions():
    seen = Outcomes()

    @settings(FAST, max_examples=300)
    @given(logits=LOGITS, policy=DIAL_POLICY)
    def check(logits, policy):
        d = decide(FirstTokenScores.from_logits(np.array(logits, np.float32), SPEC, policy.temperature), SPEC, policy)
        got = np.array([d.respond_probability, *(d.probabilities[n] for n in NAMES_AB)])
        np.testing.assert_allclose(got, reference_probabilities(logits, policy), rtol=2e-3, atol=1e-12)
        choice = reference_rule(d.probabilities, policy)  # on the same numbers, so that rounding cannot differ
        forced = choice != MODEL
        if not forced:
            token = reference_greedy(logits, policy)
            seen["a bias moved the model's choice"] += token != int(np.argmax(logits))
            choice = "respond" if token == 0 else NAMES_AB[token - 1] if token < 3 else token
        if isinstance(choice, int):  # the model's own ordinary token
            assert (d.decision_token, d.token_id, d.refused, d.forced) == (False, choice, False, False)
        else:
            ref = SPEC.respond if choice == "respond" else SPEC.categories[NAMES_AB.index(choice)]
            assert (d.token_id, d.category, d.refused, d.forced, d.decision_token) == \
                (ref.id, None if choice == "respond" else choice, choice != "respond", forced, True)
        seen["refused" if d.refused else "answered" if d.decision_token else "own token"] += 1
        seen[f"{policy.rule}, forced" if d.forced else f"{policy.rule}, model's choice"] += 1

    check()
    seen.require(refused=40, answered=40, **{"own token": 5}, **{f"{r}, forced": 10 for r in RULES if r != "natural"},
                 **{"natural, model's choice": 10, "paper-category, model's choice": 10,
                    "a bias moved the model's choice": 5})


def lowered(policy: Policy, category: str, factor: float) -> Policy:
    """The policy with the threshold that decides ``category`` lowered (the one threshold, for binary)."""
    if policy.rule == "binary":
        return Policy(**{**policy.to_dict(), "threshold": policy.threshold * factor})
    return policy.with_threshold(category, policy.threshold_for(category) * factor)


def test_lowering_a_threshold_never_turns_a_refusal_into_an_answer():
    seen = Outcomes()

    @settings(FAST, max_examples=200)
    @given(logits=LOGITS, policy=DIAL_POLICY.filter(lambda p: p.rule != "natural"), factor=st.floats(0, 1),
           category=st.sampled_from(NAMES_AB))
    def check(logits, policy, factor, category):
        if policy.rule == "paper-category" and category not in policy.thresholds:
            # giving an uncontrolled category a threshold takes the choice from the model: not a lowering
            category = min(policy.thresholds, default=None)
            if category is None:
                return
        scores = FirstTokenScores.from_logits(np.array(logits, np.float32), SPEC, policy.temperature)
        before, after = decide(scores, SPEC, policy), decide(scores, SPEC, lowered(policy, category, factor))
        assert after.probabilities == before.probabilities
        if before.refused:
            assert after.refused, (before, after)
        seen["refused only once lowered" if after.refused and not before.refused else "same"] += 1

    check()
    seen.require(**{"refused only once lowered": 15})


@FAST
@given(logits=LOGITS, policy=DIAL_POLICY.filter(lambda p: not p.biases))
def test_a_zero_bias_changes_nothing(logits, policy):
    scores = FirstTokenScores.from_logits(np.array(logits, np.float32), SPEC, policy.temperature)
    zero = Policy(**{**policy.to_dict(), "biases": {"respond": 0.0, "A": 0.0, "B": -0.0}})
    a, b = decide(scores, SPEC, policy), decide(scores, SPEC, zero)
    assert (a.token_id, a.probabilities, a.respond_probability) == (b.token_id, b.probabilities, b.respond_probability)


@FAST
@given(logits=st.lists(st.floats(-1e4, 1e4, width=32), min_size=VOCABULARY, max_size=VOCABULARY),
       temperature=st.floats(*TEMPERATURE_RANGE), bias=st.floats(-BIAS_LIMIT, BIAS_LIMIT),
       rule=st.sampled_from(RULES), threshold=st.floats(0, 1))
def test_every_valid_policy_on_extreme_finite_logits_gives_finite_probabilities(logits, temperature, bias, rule,
                                                                               threshold):
    policy = Policy(rule=rule, threshold=threshold, temperature=temperature, biases={"A": bias, "respond": -bias})
    d = decide(FirstTokenScores.from_logits(np.array(logits, np.float32), SPEC, temperature), SPEC, policy)
    probs = [d.respond_probability, *d.probabilities.values()]
    assert all(math.isfinite(p) and 0 <= p <= 1 for p in probs) and sum(probs) <= 1 + 1e-9
