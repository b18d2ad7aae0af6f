"""The predicted decision token: evaluated with the prompt, it saves the first answer token's decode step when the
policy picks it, and changes nothing, neither decisions nor text, whether it holds or not; on by default where a
measurement on the machine says it pays (engines/llama/prediction.py)."""

from pathlib import Path

import pytest

from refusal_edge import Decision, Policy, RefusalModel
from refusal_edge.sampling import SamplingParams
from refusal_edge.metadata import CATEGORIES
from conftest import THREADS
from tiny_model import build_tiny_gguf

RESPOND_STRONG = {"rule": "natural", "biases": {"respond": 50.0}}  # the model itself picks [respond]
TEXT_FIRST = {"rule": "natural", "biases": {"respond": -50.0, **{c: -50.0 for c in CATEGORIES}}}  # picks text


def force(category):
    return Policy(rule="per-category", threshold=1.0, thresholds={category: 0.0})


class Steps:
    """Counts the decodes the engine runs, and how many tokens each holds."""

    def __init__(self, engine, monkeypatch):
        self.calls: list[int] = []
        real = engine._eval

        def counted(tokens, outputs=1):
            self.calls.append(len(tokens))
            return real(tokens, outputs)

        monkeypatch.setattr(engine, "_eval", counted)


@pytest.fixture
def predicting(tiny_gguf):
    with RefusalModel.load(tiny_gguf, n_ctx=256, n_threads=THREADS, predict_decision=True) as model:
        yield model


WEIGHTS = ["f32", "f16", "Q8_0"]  # Q8_0: the default model's type


def tiny_of(weights: str, directory: Path) -> Path:
    return build_tiny_gguf(directory / f"tiny-{weights}.gguf", f16=weights == "f16",
                           quant=weights if weights.startswith("Q") else None)


@pytest.fixture(params=WEIGHTS)
def pair(request, tmp_path_factory):
    """Two models on the same GGUF: one predicting, one on the path without prediction."""
    path = tiny_of(request.param, tmp_path_factory.mktemp("pred"))
    with RefusalModel.load(path, n_ctx=256, n_threads=THREADS, predict_decision=True) as a, \
            RefusalModel.load(path, n_ctx=256, n_threads=THREADS, predict_decision=False) as b:
        yield a, b


def both(pair, messages, policy=None, **sampling):
    a, b = pair
    ra, rb = a.generate(messages, policy, **sampling), b.generate(messages, policy, **sampling)
    assert ra.decision.token_id == rb.decision.token_id
    if a.engine.path.stem.endswith("Q8_0"):  # quantized dot products: the same bits with the extra row or without
        assert ra.decision.probabilities == rb.decision.probabilities
        assert ra.decision.respond_probability == rb.decision.respond_probability
    else:  # float kernels round the last layer's rows differently with two output rows than with one
        assert ra.decision.probabilities == pytest.approx(rb.decision.probabilities, abs=1e-6)
    assert (ra.text, ra.finish_reason, ra.completion_tokens) == (rb.text, rb.finish_reason, rb.completion_tokens)
    return ra


def test_a_hit_costs_no_decode_step_before_the_first_token(predicting, monkeypatch):
    predicting.engine.reset()
    steps = Steps(predicting.engine, monkeypatch)
    events = predicting.stream("hello world", Policy(rule="binary", threshold=1.0), temperature=0, max_tokens=3)
    decision = next(events)
    assert isinstance(decision, Decision) and decision.token == "[respond]"
    assert len(steps.calls) == 1  # prompt and predicted [respond] in one decode
    next(events)  # the first answer token was sampled from logits that were already there
    assert len(steps.calls) == 1
    list(events)


def test_a_miss_feeds_the_chosen_token_in_one_step(predicting, monkeypatch):
    predicting.engine.reset()
    predicting.generate("hi", Policy(rule="binary", threshold=1.0), temperature=0, max_tokens=1)  # predicts [respond]
    steps = Steps(predicting.engine, monkeypatch)
    result = predicting.generate("hello world", force("Unsupported requests"), temperature=0, max_tokens=1)
    assert result.decision.category == "Unsupported requests"
    assert steps.calls[1:] == [2]  # after the prefill, one step: the chosen token, with the token before it
    # Next time the prediction is what the policy forced: a hit again.
    steps.calls.clear()
    predicting.generate("hello there", force("Unsupported requests"), temperature=0, max_tokens=1)
    assert len(steps.calls) == 1


@pytest.mark.parametrize("policy", [None, Policy(rule="binary", threshold=1.0), force("Humanizing requests"),
                                    force("Requests with safety concerns")])
def test_greedy_output_is_identical_hit_or_miss(pair, policy):
    for prompt in ["hello world", "tell me a story about the sea", "what is the capital of france?"]:
        both(pair, prompt, policy, temperature=0, max_tokens=16)


def test_alternating_decisions_multi_turn_kv_reuse(pair):
    """Hits and misses in turn over a conversation whose KV cache is reused from turn to turn."""
    history = []
    policies = [Policy(rule="binary", threshold=1.0), force("Incomplete requests"), force("Incomplete requests"),
                Policy(rule="binary", threshold=1.0), RESPOND_STRONG]
    for i, policy in enumerate(policies):
        history.append({"role": "user", "content": f"turn {i}: hello"})
        result = both(pair, history, policy, temperature=0, max_tokens=6)
        assert result.decision.cached_tokens > 0 or i == 0
        history.append(result.message)


@pytest.mark.parametrize("seed", range(4))
def test_natural_rule_sampling_is_identical_hit_or_miss(pair, seed):
    for policy in (RESPOND_STRONG, TEXT_FIRST, {"rule": "natural"}):
        both(pair, "hello world", policy, temperature=0.9, seed=seed, max_tokens=10)


def test_natural_rule_hit_skips_the_step(predicting, monkeypatch):
    engine, spec = predicting.engine, predicting.spec
    respond = spec.token_ids[0]
    tokens = predicting.prompt_tokens("the sea and the sky")
    engine.score_ahead(tokens, spec, 1.0, predicted=respond)
    steps = Steps(engine, monkeypatch)
    answer = engine.generate(tokens, SamplingParams(temperature=0.8, seed=1, max_tokens=2),
                             first_token_bias={respond: 50.0})
    assert next(answer) == respond  # sampled by the model itself (biased), and it was the predicted token
    next(answer)
    assert steps.calls == []  # both tokens came from logits computed with the prompt
    answer.close()


def test_no_prediction_without_room_or_budget(predicting, monkeypatch):
    steps = Steps(predicting.engine, monkeypatch)
    result = predicting.generate("hello", temperature=0, max_tokens=0)
    assert result.completion_tokens == 0 and result.text == ""
    assert steps.calls and predicting.engine._llm.n_tokens == predicting.decide("hello").prompt_tokens


def test_without_prediction_the_decision_token_is_decoded_with_the_token_before_it(tiny_gguf, monkeypatch):
    """As create_completion evaluates a prompt that ends with it: inside a batch, never alone (a token decoded alone is
    rounded differently, and a greedy answer branched at a near tie on the default model)."""
    with RefusalModel.load(tiny_gguf, n_ctx=256, n_threads=THREADS, predict_decision=False) as model:
        steps = Steps(model.engine, monkeypatch)
        events = model.stream("hello world", Policy(rule="binary", threshold=1.0), temperature=0, max_tokens=3)
        next(events)
        next(events)
        prompt = len(model.prompt_tokens("hello world"))
        assert steps.calls[:2] == [prompt, 2]  # the prompt, then its last token again with the decision token
        list(events)
        assert steps.calls[2:] == [1, 1]  # the answer's tokens one at a time, as create_completion decodes them
