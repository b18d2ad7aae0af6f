"""Property-based tests (Hypothesis) of what a remote engine may answer (issue 19): any JSON an engine sends gives a
decision from valid scores or one EngineError, never a decision (least of all [respond]) from numbers no softmax
gives; any token id it streams is inside the vocabulary or an EngineError. Derandomized, no network."""

from __future__ import annotations

import math

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402

from test_properties import FAST, JSON  # noqa: E402
from test_remote_contract import SPEC, V, dialect_on, logits_row, softmax, vllm  # noqa: E402
from test_remote_fail_closed import Tok  # noqa: E402

from refusal_edge.decision import decide  # noqa: E402
from refusal_edge.errors import RefusalEdgeError  # noqa: E402
from refusal_edge.policy import Policy  # noqa: E402
from refusal_edge.engines.remote.errors import EngineError  # noqa: E402
from refusal_edge.rules import RULES  # noqa: E402
from refusal_edge.sampling import SamplingParams  # noqa: E402

DECISION_IDS = list(SPEC.token_ids)
# Ids an engine might name: the decision tokens, ordinary ones, the vocabulary's edges and past them.
IDS = st.sampled_from([*DECISION_IDS, 0, 1, 7, V - 1, V, V + 1, -1, 2 ** 31, 2 ** 64]) | st.integers()
NUMBERS = (st.floats(allow_nan=True, allow_infinity=True) | st.floats(0, 1) | st.floats(-60, 0)
           | st.sampled_from([0, 1, 1e300, -1e308, 1.0000001, 5.0, 50.0, -0.0, 10 ** 400, True]) | st.integers())
CLEARLY_OVER = 2e-3  # the oracle's margin past the code's slack (1e-3), so rounding never decides a test


class Replay:
    """An engine that answers each request with the next of ``answers`` (the last one again when they run out),
    and remembers which it used."""

    url = "http://engine"

    def __init__(self, answers, events=()):
        self.answers, self.used, self.events = list(answers), [], list(events)

    def post_json(self, path, body, retry):
        answer = self.answers[min(len(self.used), len(self.answers) - 1)]
        self.used.append(answer)
        if not isinstance(answer, dict):  # HttpClient refuses a JSON answer that is not an object
            raise EngineError("not an object")
        return answer

    def stream_events(self, path, body, **options):
        for event in self.events:
            if not isinstance(event, dict):
                raise EngineError("not an object")
            yield event


def number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def valid_id(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < V


def llama_answer_is_garbage(answer) -> bool:
    """True where the answer holds what no softmax over this vocabulary gives (the code must refuse it)."""
    try:
        entries = answer["completion_probabilities"][0]["top_probs"]
        probs = {}
        for e in entries:
            p = number(e["prob"])
            if p is None or not valid_id(e["id"]) or math.isnan(p) or p < 0 or p > 1 + CLEARLY_OVER:
                return True
            probs[e["id"]] = min(p, 1.0)
    except (KeyError, IndexError, TypeError):
        return False  # a missing field: an EngineError too, but not "garbage numbers"
    return sum(probs.values()) > 1 + CLEARLY_OVER


def assert_a_sound_decision(scores):
    for rule in RULES:
        decision = decide(scores, SPEC, Policy(rule=rule, temperature=scores.temperature))
        values = [decision.respond_probability, *decision.probabilities.values()]
        assert all(math.isfinite(p) and -1e-9 <= p <= 1 + 1e-6 for p in values), decision
        assert sum(values) <= 1 + 1e-6


ENTRY = st.fixed_dictionaries({"id": IDS, "prob": NUMBERS}) | st.fixed_dictionaries({"id": JSON, "prob": JSON})
# Answers that name every decision token get past the format checks to the numbers (and need no bias rounds).
COVERING = st.builds(lambda probs, extra: [{"id": t, "prob": p} for t, p in zip(DECISION_IDS, probs)] + extra,
                     st.lists(NUMBERS, min_size=len(DECISION_IDS), max_size=len(DECISION_IDS)),
                     st.lists(ENTRY, max_size=4))
LLAMA_ANSWER = st.fixed_dictionaries({
    "completion_probabilities": st.lists(st.fixed_dictionaries({"top_probs": COVERING | st.lists(ENTRY, max_size=10)}),
                                         min_size=1, max_size=2) | JSON,
    "timings": st.fixed_dictionaries({"cache_n": NUMBERS | JSON, "prompt_ms": NUMBERS | JSON}) | JSON,
}) | JSON


@settings(FAST, max_examples=300)
@given(answers=st.lists(LLAMA_ANSWER, min_size=1, max_size=4), temperature=st.sampled_from([1.0, 0.7]))
def test_any_llama_server_answer_is_a_sound_decision_or_an_engine_error(answers, temperature):
    dialect = dialect_on(logits_row(0), top_k=8)
    dialect.http, dialect.tokenizer = Replay(answers), Tok()
    try:
        scores, _ = dialect.score([1, 2, 3], SPEC, temperature)
    except EngineError:
        return
    assert not any(llama_answer_is_garbage(a) for a in dialect.http.used), dialect.http.used
    assert_a_sound_decision(scores)


@settings(FAST, max_examples=200)
@given(answer=LLAMA_ANSWER, temperature=st.sampled_from([1.0, 0.7]))
def test_an_engine_ignoring_logit_bias_decides_only_from_decision_tokens_it_reported(answer, temperature):
    """Issue 35's fail-open: the same answer whatever bias is asked for gives a decision only when that answer itself
    holds every decision token (never from a bound the ignored bias seemed to justify)."""
    dialect = dialect_on(logits_row(0), top_k=8)
    dialect.http, dialect.tokenizer = Replay([answer]), Tok()
    try:
        scores, _ = dialect.score([1, 2, 3], SPEC, temperature)
    except EngineError:
        return
    reported = {e["id"] for e in answer["completion_probabilities"][0]["top_probs"]}
    assert set(DECISION_IDS) <= reported and scores.exact, answer


@FAST
@given(seed=st.integers(0, 10 ** 6), offset=st.floats(-30, 10), k=st.integers(7, 30),
       temperature=st.sampled_from([1.0, 0.7]))
def test_honest_llama_server_answers_always_decide(seed, offset, k, temperature):
    """The other half: a real softmax (float32, top k) is never refused."""
    dialect = dialect_on(logits_row(seed % 1000, decision_offset=offset), top_k=k)
    dialect.tokenizer = Tok()
    scores, _ = dialect.score([1, 2, 3], SPEC, temperature)
    assert_a_sound_decision(scores)


def name(token) -> str:
    return f"token_id:{token}"


def vllm_answer_is_garbage(answer) -> bool:
    try:
        logprobs = answer["choices"][0]["logprobs"]
        pairs = list((logprobs["top_logprobs"][0] or {}).items())
        pairs.append((logprobs["tokens"][0], logprobs["token_logprobs"][0]))
    except (KeyError, IndexError, TypeError, AttributeError):
        return False
    values = {}
    for key, value in pairs:
        if not isinstance(key, str) or not key.startswith("token_id:"):
            return False  # not named by id: refused as a format error
        try:
            token = int(key[len("token_id:"):])
        except ValueError:
            return False
        v = number(value)
        if not valid_id(token) or v is None or math.isnan(v) or v > CLEARLY_OVER or v == math.inf \
                or -math.inf < v < -3.5e38:
            return True
        values.setdefault(token, v)
    finite = [v for v in values.values() if v > -math.inf]
    return bool(finite) and float(np.exp(np.logaddexp.reduce(finite))) > 1 + CLEARLY_OVER


TOP = st.dictionaries(IDS.map(name) | st.text(max_size=12), NUMBERS | JSON, max_size=8)
TOP_COVERING = st.builds(lambda values, extra: {**{name(t): v for t, v in zip(DECISION_IDS, values)}, **extra},
                         st.lists(NUMBERS, min_size=len(DECISION_IDS), max_size=len(DECISION_IDS)), TOP)
VLLM_ANSWER = st.fixed_dictionaries({"choices": st.lists(st.fixed_dictionaries({"logprobs": st.fixed_dictionaries({
    "tokens": st.lists(IDS.map(name) | JSON, min_size=1, max_size=2),
    "token_logprobs": st.lists(NUMBERS | JSON, min_size=1, max_size=2),
    "top_logprobs": st.lists(TOP_COVERING | TOP | JSON, min_size=1, max_size=2)}) | JSON}), min_size=1, max_size=2)
    | JSON,
    "usage": JSON}) | JSON


@settings(FAST, max_examples=300)
@given(answer=VLLM_ANSWER, token_ids=st.booleans())
def test_any_vllm_answer_is_a_sound_decision_or_an_engine_error(answer, token_ids):
    dialect = vllm(token_ids=token_ids)
    dialect.http, dialect.tokenizer = Replay([answer]), Tok()
    try:
        scores, _ = dialect.score([1, 2, 3], SPEC, 1.0)
    except EngineError:
        return
    assert not vllm_answer_is_garbage(answer), answer
    assert_a_sound_decision(scores)


@FAST
@given(seed=st.integers(0, 10 ** 6), offset=st.floats(-40, 10))
def test_honest_vllm_answers_always_decide(seed, offset):
    logp = np.log(softmax(logits_row(seed % 1000, decision_offset=offset))).astype(np.float32)
    rest = np.where(np.isin(np.arange(V), DECISION_IDS), -np.inf, logp)
    sampled = int(np.argmax(rest))
    answer = {"choices": [{"logprobs": {"tokens": [name(sampled)], "token_logprobs": [float(logp[sampled])],
                                        "top_logprobs": [{name(t): float(logp[t]) for t in DECISION_IDS}]}}]}
    dialect = vllm(token_ids=True)
    dialect.http, dialect.tokenizer = Replay([answer]), Tok()
    assert_a_sound_decision(dialect.score([1, 2, 3], SPEC, 1.0)[0])


LLAMA_EVENT = st.fixed_dictionaries({"tokens": st.lists(IDS, max_size=4) | JSON,
                                     "tokens_predicted": st.integers(-2, 10) | JSON,
                                     "stop": st.booleans(), "stop_type": st.sampled_from(["eos", "limit"]) | JSON})
VLLM_EVENT = st.fixed_dictionaries({"choices": st.lists(st.fixed_dictionaries({
    "token_ids": st.lists(IDS, max_size=4) | JSON, "finish_reason": st.sampled_from([None, "stop", "length"]) | JSON}),
    max_size=2) | JSON}) | JSON


@FAST
@given(events=st.lists(LLAMA_EVENT | JSON, max_size=4), vllm_events=st.lists(VLLM_EVENT, max_size=4),
       sampled=JSON | IDS)
def test_streamed_and_sampled_ids_are_in_the_vocabulary_or_an_engine_error(events, vllm_events, sampled):
    params = SamplingParams(temperature=0.0, max_tokens=4)
    llama = dialect_on(logits_row(0))
    llama.tokenizer = Tok()
    llama.http = Replay([{"tokens": [sampled]}, {"tokens": sampled}], events)
    v = vllm()
    v.tokenizer = Tok()
    v.http = Replay([{"choices": [{"token_ids": [sampled]}]}], vllm_events)
    for run in (lambda: list(llama.stream([1, 2], params, 4, 256)), lambda: [llama.sample_first([1], params, {})],
                lambda: llama._replay([1], {}, 2), lambda: list(v.stream([1, 2], params, 4, 256)),
                lambda: [v.sample_first([1], params, {})]):
        try:
            ids = run()
        except RefusalEdgeError:
            continue
        assert all(valid_id(t) for t in ids), ids
