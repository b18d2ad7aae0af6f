"""Remote engines without a network: the first-token arithmetic, llama-server's bias-and-invert against a numpy
"server" that answers exactly as llama-server's sampler chain does, and vLLM's wire contract (the exact requests the
client builds, and the documented response shape)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from refusal_edge.sampling import SamplingParams
from refusal_edge.decision import FirstTokenScores, decide
from refusal_edge.metadata import CATEGORIES, RESPOND_TOKEN, category_token, discover
from refusal_edge.policy import Policy
from refusal_edge.rules import RULES
from refusal_edge.engines.remote.errors import EngineError
from refusal_edge.engines.remote.firsttoken import scores_from_logprobs, unbias
from refusal_edge.engines.remote.llama_server import LlamaServerDialect
from refusal_edge.engines.remote.vllm import VllmDialect, parse_logprobs

V = 400
DECISION_TEXTS = [RESPOND_TOKEN, *map(category_token, CATEGORIES)]
SPEC = discover({text: V - len(DECISION_TEXTS) + i for i, text in enumerate(DECISION_TEXTS)})


def policies():
    """Every rule, with the thresholds and biases that make each branch of it matter."""
    yield Policy()
    for rule in RULES:
        yield Policy(rule=rule, threshold=0.2, thresholds={CATEGORIES[0]: 0.01}, biases={"respond": -1.5})
    yield Policy(rule="natural", biases={"respond": -30.0})  # the other tokens' mass decides
    yield Policy(rule="binary", threshold=0.5, temperature=0.7)


def logits_row(seed=0, decision_offset=0.0):
    rng = np.random.default_rng(seed)
    row = (rng.normal(size=V) * 3).astype(np.float32)
    row[list(SPEC.token_ids)] += np.float32(decision_offset)
    return row


def softmax(z):
    z = np.asarray(z, dtype=np.float64)
    p = np.exp(z - z.max())
    return p / p.sum()


def assert_same_decisions(remote: FirstTokenScores, logits: np.ndarray, temperature: float, atol=1e-6):
    local = FirstTokenScores.from_logits(logits, SPEC, temperature)
    for policy in policies():
        if not math.isclose(policy.temperature, temperature):
            continue
        a, b = decide(remote, SPEC, policy), decide(local, SPEC, policy)
        assert (a.token_id, a.category) == (b.token_id, b.category), policy
        assert a.respond_probability == pytest.approx(b.respond_probability, abs=atol)
        for name in CATEGORIES:
            assert a.probabilities[name] == pytest.approx(b.probabilities[name], abs=atol)


# the arithmetic -------------------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_reported_logprobs_of_every_decision_token_give_exact_scores(temperature):
    logits = logits_row(1)
    logp = np.log(softmax(logits / temperature))
    top = {int(i): float(logp[i]) for i in np.argsort(-logp)[:5]}
    reported = {**top, **{t: float(logp[t]) for t in SPEC.token_ids}}
    scores = scores_from_logprobs(reported, SPEC, temperature)
    assert scores.exact
    assert scores.top_rest_id == int(np.argmax(np.where(np.isin(np.arange(V), SPEC.token_ids), -np.inf, logits)))
    assert_same_decisions(scores, logits, temperature)


def test_a_missing_refusal_token_takes_the_bound_and_says_bounded_but_a_missing_respond_token_is_an_error():
    logp = np.log(softmax(logits_row(2)))
    reported = {int(i): float(logp[i]) for i in np.argsort(-logp)[:10]}
    respond = SPEC.respond.id
    missing = [t for t in SPEC.token_ids if t not in reported and t != respond]
    assert missing and respond not in reported
    bound = min(reported.values())
    with pytest.raises(EngineError, match="no probability for the respond token"):  # a bound would open the gate
        scores_from_logprobs(reported, SPEC, 1.0, upper_bound=bound)
    reported[respond] = float(logp[respond])
    scores = scores_from_logprobs(reported, SPEC, 1.0, upper_bound=bound)
    assert not scores.exact
    assert all(scores.logits[SPEC.token_ids.index(t)] == bound for t in missing)
    with pytest.raises(EngineError, match="no probability for decision token"):
        scores_from_logprobs(reported, SPEC, 1.0)


def test_non_finite_reports_fail_closed():
    with pytest.raises(EngineError, match="non-finite"):
        scores_from_logprobs({t: float("nan") for t in SPEC.token_ids}, SPEC)


def test_a_bias_is_undone_exactly_through_an_unbiased_anchor():
    logits = logits_row(3).astype(np.float64)
    p = np.log(softmax(logits))
    biased = logits.copy()
    target = SPEC.token_ids[3]
    biased[target] += 25.0
    q = np.log(softmax(biased))
    anchor = int(np.argmax(logits))
    back = unbias({target: q[target], anchor: q[anchor]}, {target}, 25.0, 1.0, anchor, p[anchor])
    assert back == {target: pytest.approx(p[target], abs=1e-9)}


# llama-server: bias-and-invert against the sampler chain it runs ---------------------------------
class NumpyLlamaServer:
    """Answers /completion as llama-server does with post_sampling_probs and samplers ["temperature"]: the top
    n_probs of softmax((logits + bias) / T) in float32, zero probabilities left out."""

    url = "http://numpy-llama-server"

    def __init__(self, logits):
        self.logits = logits
        self.requests = []

    def post_json(self, path, body, retry):
        assert path == "/completion" and retry and body["post_sampling_probs"] and body["samplers"] == ["temperature"]
        self.requests.append(body)
        z = self.logits.astype(np.float32).copy()
        for token, bias in body["logit_bias"]:
            z[token] += np.float32(bias)
        z /= np.float32(body["temperature"])
        p = np.exp(z - z.max())
        p = (p / p.sum(dtype=np.float64)).astype(np.float32)
        order = np.argsort(-p, kind="stable")[: body["n_probs"]]
        top = [{"id": int(i), "prob": float(p[i])} for i in order if p[i] > 0]
        return {"completion_probabilities": [{"top_probs": top}], "timings": {"cache_n": 7, "prompt_ms": 2.5}}


def dialect_on(logits, top_k=8):
    models = {"data": [{"id": "tiny", "meta": {"n_vocab": V, "n_ctx": 256}}]}
    return LlamaServerDialect(NumpyLlamaServer(logits), models, {"total_slots": 2}, tokenizer=None, top_k=top_k)


@pytest.mark.parametrize("offset,temperature", [(-8.0, 1.0), (-25.0, 1.0), (-15.0, 0.7), (20.0, 1.0)])
def test_llama_server_scores_match_the_logits_even_when_decision_tokens_are_far_below_the_top(offset, temperature):
    logits = logits_row(4, decision_offset=offset)
    dialect = dialect_on(logits)
    scores, stats = dialect.score([1, 2, 3], SPEC, temperature)
    assert scores.exact and stats.reused_tokens == 7 and stats.prompt_tokens == 3
    assert_same_decisions(scores, logits, temperature, atol=1e-5)
    rounds = len(dialect.http.requests)
    assert (rounds == 1) == (offset > 0)  # pushed in only when needed
    assert all(r["prompt"] == [1, 2, 3] for r in dialect.http.requests)  # the same (cached) prompt every round


def test_a_decision_token_no_bias_brings_in_is_an_engine_error_not_a_bound():
    logits = logits_row(5)
    logits[SPEC.token_ids[2]] = -1e4  # its probability underflows float32 under any bias the rounds try
    with pytest.raises(EngineError, match=r"did not report decision token\(s\) \[%d\] even under a logit bias"
                       % SPEC.token_ids[2]):
        dialect_on(logits).score([1], SPEC, 1.0)


def test_llama_server_generation_request_mirrors_the_in_process_sampler_chain():
    body = LlamaServerDialect._sampling(SamplingParams(temperature=0.0, top_k=0, seed=None, repeat_penalty=1.0))
    assert body["samplers"] == ["penalties", "top_k", "top_p", "min_p", "temperature"]
    assert body["temperature"] == 0.0 and body["seed"] == -1 and body["cache_prompt"] is True


# vLLM: the wire contract ---------------------------------------------------------------------------
def vllm(token_ids=True):
    models = {"object": "list", "data": [{"id": "org/model-8b", "object": "model", "owned_by": "vllm",
                                          "max_model_len": 8192}]}
    dialect = VllmDialect(NumpyLlamaServer(None), models, None, tokenizer=None)
    dialect.token_ids = token_ids
    return dialect


def test_vllm_score_request_asks_for_the_decision_tokens_by_id():
    body = vllm().score_request([5, 6, 7], SPEC)
    ids = list(SPEC.token_ids)
    assert body == {
        "model": "org/model-8b", "prompt": [5, 6, 7], "max_tokens": 1, "temperature": 0.0,
        "return_tokens_as_token_ids": True, "add_special_tokens": False, "skip_special_tokens": False,
        "logit_bias": {str(t): -100.0 for t in ids}, "logprobs": 1, "logprob_token_ids": ids,
    }
    older = vllm(token_ids=False).score_request([5], SPEC)
    assert "logprob_token_ids" not in older and older["logprobs"] == 20


def vllm_answer(logp, reported, sampled):
    """The documented /v1/completions shape (CompletionLogProbs) with return_tokens_as_token_ids."""
    name = lambda t: f"token_id:{t}"  # noqa: E731
    return {"id": "cmpl-1", "object": "text_completion", "model": "org/model-8b",
            "choices": [{"index": 0, "text": "", "finish_reason": "length",
                         "logprobs": {"text_offset": [0], "tokens": [name(sampled)],
                                      "token_logprobs": [max(float(logp[sampled]), -9999.0)],
                                      "top_logprobs": [{name(t): max(float(logp[t]), -9999.0) for t in reported}]}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4,
                      "prompt_tokens_details": {"cached_tokens": 2}}}


def test_vllm_answers_with_decision_token_logprobs_give_exact_scores():
    logits = logits_row(6, decision_offset=-12.0)
    logp = np.log(softmax(logits))
    rest = np.where(np.isin(np.arange(V), SPEC.token_ids), -np.inf, logits)
    answer = vllm_answer(logp, SPEC.token_ids, int(np.argmax(rest)))  # greedy with decision tokens biased away
    reported = parse_logprobs(answer, "http://vllm")
    assert set(reported) == {*SPEC.token_ids, int(np.argmax(rest))}
    scores = scores_from_logprobs(reported, SPEC, 1.0)
    assert scores.exact
    assert_same_decisions(scores, logits, 1.0)


@pytest.mark.parametrize("respond_in_top", [True, False])
def test_vllm_top_k_answers_are_bounded_when_a_refusal_token_is_missing(respond_in_top):
    logits = logits_row(7)
    logits[SPEC.respond.id] = logits.max() + 1 if respond_in_top else logits.min() - 1
    logp = np.log(softmax(logits))
    top = [int(i) for i in np.argsort(-logp)[:20]]
    rest = np.where(np.isin(np.arange(V), SPEC.token_ids), -np.inf, logits)

    class Http(NumpyLlamaServer):
        def post_json(self, path, body, retry):
            assert path == "/v1/completions" and body["logprobs"] == 20 and retry
            return vllm_answer(logp, top, int(np.argmax(rest)))

    dialect = vllm(token_ids=False)
    dialect.http = Http(None)
    if not respond_in_top:  # its bound would overstate [respond]: fail closed
        with pytest.raises(EngineError, match="no probability for the respond token"):
            dialect.score([1, 2, 3], SPEC, 1.0)
        return
    scores, stats = dialect.score([1, 2, 3], SPEC, 1.0)
    assert not all(t in top for t in SPEC.token_ids)
    assert not scores.exact and stats.reused_tokens == 2
    with pytest.raises(EngineError, match="temperature"):
        dialect.score([1], SPEC, 0.5)


def test_vllm_generation_streams_token_ids_and_ends_with_end_of_generation():
    class Tok:
        eos = 99
        is_eog = staticmethod(lambda t: t == 99)

    class Http:
        url = "http://vllm"

        def stream_events(self, path, body, **options):
            self.body = body
            yield {"choices": [{"index": 0, "text": "He", "token_ids": [11, 12], "finish_reason": None}]}
            yield {"choices": [{"index": 0, "text": "llo", "token_ids": [13], "finish_reason": "stop"}]}
            yield {"choices": [], "usage": {"completion_tokens": 3}}

    dialect = vllm()
    dialect.http, dialect.tokenizer = Http(), Tok()
    params = SamplingParams(temperature=0.5, top_k=0, seed=3, max_tokens=9)
    assert list(dialect.stream([1, 2, 42], params, 9, 8192)) == [11, 12, 13, 99]
    assert dialect.http.body == {
        "model": "org/model-8b", "prompt": [1, 2, 42], "max_tokens": 9, "stream": True, "return_token_ids": True,
        "add_special_tokens": False, "skip_special_tokens": False, "temperature": 0.5, "top_p": 0.95, "top_k": -1,
        "min_p": 0.05, "repetition_penalty": 1.0, "seed": 3,
    }


def test_vllm_names_the_served_models_when_the_asked_one_is_absent():
    models = {"data": [{"id": "a", "owned_by": "vllm"}, {"id": "b", "owned_by": "vllm"}]}
    with pytest.raises(EngineError, match="does not serve 'c'.*'a', 'b'"):
        VllmDialect(NumpyLlamaServer(None), models, "c", tokenizer=None)
