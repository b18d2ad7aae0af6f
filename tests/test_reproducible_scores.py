"""A prompt's stored scores do not depend on what it is scored with: alone, in another order, among other prompts,
after a prompt sharing part of its prefix, or through `eval` in another process layout. Byte equality of the
records the score store writes, not closeness."""

import json

import numpy as np
import pytest

from refusal_edge import RefusalModel
from refusal_edge.engines.llama.engine import SCORE_BLOCK, aligned_chunks, aligned_reuse
from refusal_edge.errors import PromptTooLongError
from conftest import THREADS

SYSTEM = "you are a careful assistant. answer briefly and kindly, and say so when you do not know. " * 2


def conversations():
    """Shared system prompts (whole blocks to reuse), plain prompts of mixed lengths, near-duplicates."""
    out = [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"{i}. tell me a story " * (1 + i % 3)}]
           for i in range(6)]
    out += [[{"role": "user", "content": f"what is the capital of {i}? " * (1 + i % 4)}] for i in range(6)]
    out += [[{"role": "user", "content": "what is the capital of 1? what is the capital of 1? and of 2"}]]
    return out


def records(model, convs):
    """What the score store would write for each conversation (store.py: scores.to_dict() as JSON)."""
    out = []
    for result in model.score_many(convs):
        if isinstance(result, Exception):
            out.append(type(result).__name__)
        else:
            out.append(json.dumps(result[0].to_dict(), sort_keys=True))
    return out


@pytest.fixture(scope="module")
def model(tiny_gguf):
    with RefusalModel.load(tiny_gguf, n_ctx=256, n_threads=THREADS) as m:
        yield m


def test_scores_are_the_same_bytes_whatever_they_are_scored_with(model, tiny_gguf):
    convs = conversations()
    together = records(model, convs)
    reversed_order = records(model, convs[::-1])[::-1]
    interleaved = records(model, convs[::2] + convs[1::2])
    interleaved = [interleaved[i // 2] if i % 2 == 0 else interleaved[len(convs[::2]) + i // 2]
                   for i in range(len(convs))]
    with RefusalModel.load(tiny_gguf, n_ctx=256, n_threads=THREADS) as fresh:  # a new process's state
        alone = [records(fresh, [c])[0] for c in convs[::-1]][::-1]
    assert together == reversed_order == interleaved == alone
    assert len(set(together)) == len(convs)  # distinct prompts, distinct scores: the comparison is not vacuous


def test_the_batched_path_stays_within_rounding_of_the_aligned_one(tiny_gguf):
    """The yardstick: the same prompts batched (score_block=0) give scores that are close but not required to be
    equal; the aligned path stays within the same tolerance of them."""
    convs = conversations()
    with RefusalModel.load(tiny_gguf, n_ctx=256, n_threads=THREADS, score_block=0, batch_sequences=4) as batched:
        loose = [r[0] for r in batched.score_many(convs)]
    with RefusalModel.load(tiny_gguf, n_ctx=256, n_threads=THREADS) as aligned:
        exact = [r[0] for r in aligned.score_many(convs)]
    for a, b in zip(loose, exact):
        assert np.allclose(a.logits, b.logits, atol=1e-3)


def test_whole_blocks_shared_with_the_previous_prompt_are_reused(model):
    convs = conversations()[:3]  # one system prompt, longer than a block
    results = list(model.score_many(convs))
    later = [r[1] for r in results[1:]]
    assert all(s.reused_tokens >= SCORE_BLOCK and s.reused_tokens % SCORE_BLOCK == 0 for s in later)


def test_a_prompt_too_long_yields_its_error_in_its_place(model):
    convs = [[{"role": "user", "content": "hello there"}], [{"role": "user", "content": "word " * 400}],
             [{"role": "user", "content": "hello there"}]]
    out = list(model.score_many(convs))
    assert isinstance(out[1], PromptTooLongError)
    assert json.dumps(out[0][0].to_dict()) == json.dumps(out[2][0].to_dict())


@pytest.mark.parametrize("shared, n, keep", [
    (0, 3, 0), (5, 9, 0), (8, 9, 8), (9, 40, 8), (31, 40, 24), (40, 40, 32),  # the same prompt again: the last token
    (70, 100, 64), (100, 100, 96),                                              # is evaluated again for its logits
])
def test_aligned_reuse_keeps_up_to_a_boundary_and_the_last_token_to_evaluate(shared, n, keep):
    cached = list(range(shared)) + [-1] * 5
    assert aligned_reuse(cached, list(range(n)), 32) == keep


def test_aligned_chunks_run_from_boundary_to_boundary():
    assert aligned_chunks(0, 50, 32) == [(0, 8), (8, 16), (16, 24), (24, 32), (32, 50)]
    assert aligned_chunks(24, 100, 32) == [(24, 32), (32, 64), (64, 96), (96, 100)]
    assert aligned_chunks(64, 65, 32) == [(64, 65)]
    assert aligned_chunks(0, 5, 6) == [(0, 5)]  # a block that does not split in four: one size everywhere
