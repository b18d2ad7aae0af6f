"""Batched scoring (many prompts per llama_decode) gives what one-at-a-time scoring gives."""

import numpy as np
import pytest

from refusal_edge import RefusalModel
from refusal_edge.decision import decide
from refusal_edge.engine import Engine
from refusal_edge.errors import PromptTooLongError
from refusal_edge.engine import common_prefix
from refusal_edge.engines.llama.batch import plan_groups
from refusal_edge.policy import Policy
from tiny_model import build_tiny_gguf
from conftest import THREADS

SYSTEM = "please tell me a story about the sea and the sky. can you help me write an email to my friend?"


def conversations():
    """Shared system prompts, plain prompts, mixed lengths, and one prompt too long for the context."""
    out = [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"{i}. hello world " * (1 + i % 4)}]
           for i in range(9)]
    out.insert(4, [{"role": "user", "content": "the quick brown fox jumps over the lazy dog. " * 40}])
    out += [[{"role": "user", "content": f"what is the capital of {i}? " * (1 + i % 3)}] for i in range(8)]
    out.append([{"role": "user", "content": "i am fine thank you. " * 12}])  # longer than n_batch on its own
    return out


@pytest.fixture(scope="module", params=["f32", "f16"])
def model_path(request, tmp_path_factory):
    return build_tiny_gguf(tmp_path_factory.mktemp("batch") / f"tiny-{request.param}.gguf", f16=request.param == "f16")


@pytest.mark.parametrize("batch_sequences, n_batch", [(4, 64), (16, 512)])
def test_batched_scores_equal_one_at_a_time(model_path, batch_sequences, n_batch):
    with RefusalModel.load(model_path, n_ctx=256, n_batch=n_batch, n_threads=THREADS, score_block=0,
                           batch_sequences=batch_sequences) as model:
        prompts = [model.prompt_tokens(c) for c in conversations()]
        assert max(len(p) for p in prompts if len(p) < 256) > n_batch or n_batch == 512
        one = list(Engine.score_many(model.engine, prompts, model.spec))  # the unbatched path
        model.engine.reset()
        batched = list(model.engine.score_many(prompts, model.spec))
        assert model.engine._batch_scorer is not None  # the batched path really ran
    assert len(batched) == len(prompts)
    policies = [Policy(), Policy(rule="binary", threshold=0.3), Policy(rule="natural")]
    for tokens, a, b in zip(prompts, one, batched):
        if len(tokens) >= 256:  # the too-long prompt: its error in its place, the others unaffected
            assert isinstance(a, PromptTooLongError) and isinstance(b, PromptTooLongError)
            continue
        (sa, stats_a), (sb, stats_b) = a, b
        assert stats_b.prompt_tokens == len(tokens)
        for policy in policies:
            da, db = decide(sa, model.spec, policy), decide(sb, model.spec, policy)
            assert da.token_id == db.token_id
            assert abs(da.respond_probability - db.respond_probability) < 1e-4
            for name, p in da.probabilities.items():
                assert abs(p - db.probabilities[name]) < 1e-4
        assert np.allclose(sa.logits, sb.logits, atol=1e-2)  # f16 weights: raw logits move a little, probabilities not
        assert sa.top_rest_id == sb.top_rest_id


def test_shared_prefix_is_evaluated_once(tiny_gguf):
    """Prompts sharing a system prompt: only the first prompt's group evaluates it; everyone else reuses it."""
    with RefusalModel.load(tiny_gguf, n_ctx=256, n_threads=THREADS, score_block=0, batch_sequences=4) as model:
        convs = [c for c in conversations()[:10] if c[0]["role"] == "system"]
        prompts = [model.prompt_tokens(c) for c in convs]
        results = list(model.engine.score_many(prompts, model.spec))
    shared = min(common_prefix(prompts[0], p) for p in prompts)
    assert shared > 20  # the system prompt
    reused = [stats.reused_tokens for _, stats in results]
    assert reused[0] == 0 and all(r >= shared for r in reused[1:])


def test_groups_fit_the_batch_and_share_their_prefix():
    head = [1, 2, 3, 4, 5]
    prompts = [head + [10 + i] * (3 + i) for i in range(6)] + [[7] * 40, head + [99, 98]]
    groups = plan_groups(prompts, range(len(prompts)), budget=16, n_ctx=64, max_members=3)
    assert [i for g in groups for i in g.members] == list(range(len(prompts)))  # every prompt once, in order
    for g in groups:
        assert len(g.members) <= 3
        rest = sum(len(prompts[i]) - g.prefix for i in g.members)
        assert rest <= 16 or len(g.members) == 1
        assert all(prompts[i][:g.prefix] == prompts[g.members[0]][:g.prefix] for i in g.members)
        assert all(len(prompts[i]) > g.prefix for i in g.members)
    assert groups[0].prefix == len(head)
    assert any(g.members == [6] for g in groups)  # the long prompt that shares nothing scores alone


def test_evaluation_scoring_runs_batched_and_matches(tiny_gguf, tmp_path):
    """`eval`/`calibrate` score through RefusalModel.score_many: batched, same stored scores as one at a time."""
    from refusal_edge.evaluate.data import Example
    from refusal_edge.evaluate.runner import score_examples
    from refusal_edge.evaluate.store import ScoreStore

    examples = [Example(f"{i}. can you help me write an email to my friend? " * (1 + i % 3), i % 2 == 0, None, None,
                        "t", i) for i in range(12)]
    stored = []
    for sequences in (16, 1):
        with RefusalModel.load(tiny_gguf, n_ctx=256, n_threads=THREADS, score_block=0,
                                batch_sequences=sequences) as model, \
                ScoreStore(tmp_path / f"s{sequences}.jsonl", "t") as store:
            run = score_examples(examples, store, lambda: model, system=SYSTEM, progress=False)
            assert (model.engine._batch_scorer is not None) == (sequences > 1)
            stored.append([store.get(k) for k in run.keys])
            assert run.scored == len(examples) and run.reused_tokens > 0
    for a, b in zip(*stored):
        assert np.allclose(a.logits, b.logits, atol=1e-4) and abs(a.rest_logsumexp - b.rest_logsumexp) < 1e-4
