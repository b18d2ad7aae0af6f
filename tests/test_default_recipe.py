"""The default model's recipe: what a round trains on, and the checks of a round's answers that perplexity misses."""

from types import SimpleNamespace

import pytest


def test_round_nine_sees_benign_rows_once_and_cuts_trained_answers_not_distilled_ones():
    pytest.importorskip("torch")
    from refusal_edge.convert.default_recipe import train_default

    sources = ["refusal", "benign", "everyday", "answer-anyway", "contrast", "chat"]
    data = [f"row of {s}" for s in sources]
    for round_, once in ((8, {"everyday", "chat"}), (9, {"everyday", "chat", "benign", "answer-anyway"})):
        seen, n_once = train_default.training_pass(data, sources, round_, epochs=2)
        assert n_once == len(once)
        assert seen[-n_once:] == [f"row of {s}" for s in sources if s in once]  # the once-seen rows come last
        assert sorted(seen) == sorted(f"row of {s}" for s in sources for _ in range(1 if s in once else 2))
    argv = ["--original", "o.jsonl", "--contrast", "c.jsonl"]
    cases = (([], 32, 32), (["--round", "9"], 12, 32), (["--round", "9", "--answer-tokens", "20"], 20, 32),
             (["--max-answer", "24"], 24, 24))
    for extra, trained, distilled in cases:
        args = train_default.parse_args(argv + extra)
        assert (train_default.answer_tokens(args), args.max_answer) == (trained, distilled)


def test_answer_checks_count_refusals_that_run_on_loops_and_answers_that_open_like_a_refusal():
    from refusal_edge.convert.default_recipe import answer_checks

    assert answer_checks.opens_like_refusal("  I'm sorry, but I can't.") and answer_checks.opens_like_refusal("sorry!")
    assert not answer_checks.opens_like_refusal("Sure! I can't wait to help.")  # not at the start: an answer
    assert answer_checks.repeats_itself("make things, make things, make things, make things")
    assert not answer_checks.repeats_itself("one two three four five six seven")

    class Model:  # answers "hello" greedily, opens its sampled answers like a refusal for seed 1
        def generate(self, prompt, max_tokens, temperature, repeat_penalty=1.0, seed=0):
            if prompt.startswith("refuse"):
                text = "I can't help with that." if prompt.endswith("ends") else "I can't " + "go on " * 40
                return SimpleNamespace(text=text, finish_reason="stop" if prompt.endswith("ends") else "length",
                                       decision=SimpleNamespace(category="Requests with safety concerns"))
            text = "Sorry, no." if temperature and seed == 1 else "a b c d a b c d" if prompt == "loop" else "hello"
            return SimpleNamespace(text=text, finish_reason="stop", decision=SimpleNamespace(category=None))

    got = answer_checks.check(Model(), ["hi", "loop"], ["refuse, ends", "refuse, runs on"])
    assert (got["repeating"], got["answered"]) == (1, 2)
    assert (got["sampled_refusing"], got["sampled"]) == (2, 2 * answer_checks.SEEDS)
    assert (got["refusals_ended"], got["refused"]) == (1, 2)
