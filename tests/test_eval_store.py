"""The score store: resume after a crash, nothing scored twice, corrupt records named."""

import json

import numpy as np
import pytest

from refusal_edge.evaluate.data import DataError, Example
from refusal_edge.evaluate.runner import score_examples
from refusal_edge.evaluate.store import ScoreStore, StoreError, file_sha256, prompt_key

PROMPTS = ["hello world", "tell me a story", "what is the capital of france?", "the quick brown fox",
           "how are you today?", "can you help me write an email?"]


def examples(prompts=PROMPTS):
    return [Example(p, i % 2 == 0, "Humanizing requests", None, "d.jsonl", i + 1) for i, p in enumerate(prompts)]


class Counting:
    """The tiny model, counting prefills; optionally dies (like Ctrl-C) on the n-th one."""

    def __init__(self, model, die_at=None):
        self.model, self.die_at, self.calls = model, die_at, 0
        self.spec = model.spec

    def score_many(self, conversations, temperature=1.0):
        for messages in conversations:
            self.calls += 1
            if self.calls == self.die_at:
                raise KeyboardInterrupt
            yield from self.model.score_many([messages], temperature)

    def prompt_tokens(self, messages):
        return self.model.prompt_tokens(messages)


def test_resume_after_a_crash_scores_only_what_is_missing(tmp_path, tiny_model):
    path = tmp_path / "scores.jsonl"
    crashing = Counting(tiny_model, die_at=4)
    with pytest.raises(KeyboardInterrupt), ScoreStore(path, "m1") as store:
        score_examples(examples(), store, lambda: crashing, system=None, progress=False)
    # A crash in the middle of a write leaves a torn last line behind.
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"model":"m1","key":"abc","sco')

    again = Counting(tiny_model)
    with ScoreStore(path, "m1") as store:
        assert len(store.scores) == 3  # the three finished before the crash; the torn line is dropped
        run = score_examples(examples(), store, lambda: again, system=None, progress=False)
    assert again.calls == len(PROMPTS) - 3
    assert (run.from_store, run.scored) == (3, 3)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert all(json.loads(line) for line in lines)  # the torn record was cut off, every line parses

    with ScoreStore(path, "m1") as store:
        for e, key in zip(examples(), run.keys):
            fresh = tiny_model.scores([{"role": "user", "content": e.prompt}])
            np.testing.assert_allclose(store.get(key).logits, fresh.logits, rtol=1e-6)


def test_a_complete_store_never_loads_the_model(tmp_path, tiny_model):
    path = tmp_path / "scores.jsonl"
    with ScoreStore(path, "m1") as store:
        score_examples(examples(), store, lambda: tiny_model, system=None, progress=False)

    def no_model():
        raise AssertionError("the model was loaded although every score is stored")

    with ScoreStore(path, "m1") as store:
        run = score_examples(examples(), store, no_model, system=None, progress=False)
    assert run.scored == 0 and run.from_store == len(PROMPTS)


def test_duplicates_are_scored_once_and_keys_separate_models_and_system_prompts(tmp_path, tiny_model):
    counting = Counting(tiny_model)
    twice = examples(PROMPTS[:2] + PROMPTS[:2])
    with ScoreStore(tmp_path / "s.jsonl", "m1") as store:
        run = score_examples(twice, store, lambda: counting, system=None, progress=False)
    assert counting.calls == 2 and len(run.examples) == 4
    with ScoreStore(tmp_path / "s.jsonl", "m2") as other:
        assert not other.scores  # same file, another model: nothing shared
    assert prompt_key([{"role": "user", "content": "x"}], 1.0) != prompt_key(
        [{"role": "system", "content": "s"}, {"role": "user", "content": "x"}], 1.0)
    assert prompt_key([{"role": "user", "content": "x"}], 1.0) != prompt_key([{"role": "user", "content": "x"}], 0.7)


def test_shared_system_prompt_is_reused_from_the_kv_cache(tmp_path, tiny_model):
    system = "you are a helpful assistant. please tell me the truth about the sea and the sky."
    with ScoreStore(tmp_path / "s.jsonl", "m1") as store:
        run = score_examples(examples(), store, lambda: tiny_model, system=system, progress=False)
    a, b = (tiny_model.prompt_tokens([{"role": "system", "content": system}, {"role": "user", "content": p}])
            for p in PROMPTS[:2])
    shared = common_prefix(a, b)  # the system turn and the user header
    assert shared > 40
    # Every prompt after the first one finds the shared prefix in the cache, up to its last fixed decode boundary
    # (scores must not depend on the previous prompt: engines/llama/engine.py, score_aligned).
    from refusal_edge.engines.llama.engine import SCORE_BLOCK, aligned_boundary

    assert run.reused_tokens >= (len(PROMPTS) - 1) * aligned_boundary(shared, SCORE_BLOCK) > 0


def test_a_prompt_too_long_for_the_context_names_its_line(tmp_path, tiny_model):
    long = examples(["hello " * 400])
    with ScoreStore(tmp_path / "s.jsonl", "m1") as store:
        with pytest.raises(DataError, match=r"d\.jsonl:1: .*context"):
            score_examples(long, store, lambda: tiny_model, system=None, progress=False)
        run = score_examples(long + examples(PROMPTS[:1]), store, lambda: tiny_model, system=None, skip_bad=True,
                             progress=False)
    assert len(run.skipped) == 1 and [e.prompt for e in run.examples] == PROMPTS[:1]


def test_a_corrupt_record_in_the_middle_is_named(tmp_path):
    path = tmp_path / "s.jsonl"
    valid = '{"logits":[0.0,1.0],"rest_logsumexp":0.0,"top_rest_id":1,"top_rest_logit":0.0}'
    path.write_text('{"model":"m1","key":"a","scores":%s}\nnot json\n{"model":"m1"}\n' % valid, encoding="utf-8")
    with pytest.raises(StoreError, match=r"s\.jsonl:2: corrupt score record"):
        ScoreStore(path, "m1")


def test_file_hash_is_remembered(tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 100)
    memo = tmp_path / "memo.json"
    first = file_sha256(model, memo)
    assert len(first) == 64 and json.loads(memo.read_text())  # remembered by path, size and mtime
    model.write_bytes(b"GGUF" + b"\1" * 100)
    assert file_sha256(model, memo) != first


def common_prefix(a, b) -> int:
    n = min(len(a), len(b))
    differ = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(differ[0]) if differ.size else n
