"""The default model's recipe: what a round trains on, and the checks of a round's answers that perplexity misses."""

from types import SimpleNamespace

import pytest


def test_rounds_nine_to_eleven_train_round_eights_rows_on_less_compute():
    pytest.importorskip("torch")
    from refusal_edge.convert.default_recipe import train_default

    sources = ["refusal", "benign", "everyday", "answer-anyway", "contrast", "chat"]
    data = [f"row of {s}" for s in sources]
    few = {"everyday", "chat", "benign", "answer-anyway"}
    cases = ((8, 2, {"everyday", "chat"}, {}), (9, 2, few, {}), (10, 1, few, {}), (11, 1, few, {"refusal": 2}))
    for round_, epochs, once, more in cases:
        seen, n_once = train_default.training_pass(data, sources, round_, epochs=epochs)
        assert n_once == len(once)
        assert seen[-n_once:] == [f"row of {s}" for s in sources if s in once]  # the once-seen rows come last
        times = {s: 1 if s in once else more.get(s, epochs) for s in sources}
        assert sorted(seen) == sorted(f"row of {s}" for s in sources for _ in range(times[s]))
    argv = ["--original", "o.jsonl", "--contrast", "c.jsonl"]
    cases = (([], 32, 32, 1, 13.0), (["--round", "8"], 32, 32, 2, 5.0), (["--round", "9"], 12, 32, 2, 5.0),
             (["--round", "9", "--answer-tokens", "20"], 20, 32, 2, 5.0),
             (["--round", "8", "--max-answer", "24"], 24, 24, 2, 5.0),
             (["--round", "11", "--epochs", "2", "--first-weight", "4"], 32, 32, 2, 4.0))
    for extra, trained, distilled, epochs, weight in cases:
        args = train_default.parse_args(argv + extra)
        got = (train_default.answer_tokens(args), args.max_answer, args.epochs, args.first_weight)
        assert got == (trained, distilled, epochs, weight), extra


def test_rounds_twelve_and_thirteen_teach_some_decisions_once_more_and_nothing_after_them():
    pytest.importorskip("torch")
    from refusal_edge.convert.default_recipe import train_default
    from refusal_edge.convert.train.model import Encoded

    def row(prompt: list[int], decision: int, answer: list[int], learns_decision: bool = True) -> Encoded:
        targets = [decision, *answer]
        return Encoded(prompt + targets[:-1], len(prompt) - 1, targets, learns_decision)

    rows = [(row([1, 2], 50, [60, 61]), "refusal"), (row([1, 2], 50, [62, 63, 64]), "refusal"),  # two messages
            (row([3], 51, [65]), "refusal"), (row([4, 5], 52, [66, 67]), "contrast"),
            (row([6], 52, [68]), "benign"), (row([7], 52, [69]), "answer-anyway"), (row([8], 52, [70]), "chat"),
            (row([9], 52, [71], learns_decision=False), "contrast")]  # nothing left once its answer is cut
    data, sources = [r for r, _ in rows], [s for _, s in rows]
    decided = [row([1, 2], 50, []), row([3], 51, []), row([4, 5], 52, [])]
    for round_, more in ((12, []), (13, [row([6], 52, [])])):  # round 13 also the benign prompts'
        seen, n_once = train_default.training_pass(data, sources, round_, epochs=1)
        assert n_once == 3 and seen[-3:] == data[4:7]
        assert seen[:-3] == data[:4] + [data[7]] + decided + more
        for alone in seen[5:-3]:  # the decision's position and target are the full row's
            assert (alone.ids[alone.first_target + 1:], alone.targets[1:]) == ([], [])
        args = train_default.parse_args(["--original", "o.jsonl", "--contrast", "c.jsonl", "--round", str(round_)])
        assert (train_default.answer_tokens(args), args.epochs, args.first_weight) == (32, 1, 13.0)
    # round 14: a request that brings its material is a decision alone, taught in the once-seen part and again
    material = row([10, 11], 52, [])
    seen, n_once = train_default.training_pass(data + [material], sources + ["material"], 14, epochs=1)
    assert n_once == 4 and seen[-4:] == data[4:7] + [material]
    assert seen[:-4] == data[:4] + [data[7]] + decided + [row([6], 52, []), material]


def test_round_sixteen_decides_the_rarer_categories_refusals_once_more():
    pytest.importorskip("torch")
    from refusal_edge.convert.default_recipe import train_default
    from refusal_edge.convert.train.model import Encoded

    def row(prompt: int, decision: int) -> Encoded:
        return Encoded([prompt, decision, 99], 0, [decision, 99, 100])

    # 16 Safety prompts (token 50), 4 Unsupported (51: sqrt(16 / 4) = 2, one copy more), 1 Humanizing (52: sqrt(16) =
    # 4, three more), and a look-alike (60), which is in the decision pass but not balanced
    rows = [row(k, 50) for k in range(16)] + [row(20 + k, 51) for k in range(4)] + [row(30, 52)]
    data, sources = rows + [row(40, 60)], ["refusal"] * len(rows) + ["contrast"]
    copies = train_default.balancing_copies([r.decision_alone() for r in rows])
    assert [c.targets for c in copies] == [[51]] * 4 + [[52]] + [[52]] * 2
    assert train_default.balancing_copies([]) == []
    plain, _ = train_default.training_pass(data, sources, 15, epochs=1)
    balanced, _ = train_default.training_pass(data, sources, 16, epochs=1)
    assert balanced == plain + copies  # round 15's pass, then the copies
    assert all(c.ids[-1] != 99 and len(c.targets) == 1 for c in copies)  # decisions alone


def test_answer_checks_count_refusals_that_run_on_loops_and_answers_that_read_as_a_refusal():
    from refusal_edge.convert.default_recipe import answer_checks

    assert answer_checks.repeats_itself("make things, make things, make things, make things")
    assert not answer_checks.repeats_itself("one two three four five six seven")

    class Model:  # answers "hello" greedily, refuses in words when sampled with seed 1, refuses "no" by its token
        def generate(self, prompt, max_tokens, temperature, repeat_penalty=1.0, seed=0):
            if prompt == "no":  # refused: a loop in its message is not an answer's loop
                return SimpleNamespace(text="no no no no no no no no", finish_reason="stop",
                                       decision=SimpleNamespace(category="Incomplete requests"))
            if prompt.startswith("refuse"):
                text = "I can't help with that." if prompt.endswith("ends") else "I can't " + "go on " * 40
                return SimpleNamespace(text=text, finish_reason="stop" if prompt.endswith("ends") else "length",
                                       decision=SimpleNamespace(category="Requests with safety concerns"))
            text = "a b c d a b c d" if prompt == "loop" else "hello"
            text = "I'm sorry, but no." if temperature and seed == 1 else text
            return SimpleNamespace(text=text, finish_reason="stop", decision=SimpleNamespace(category=None))

    got = answer_checks.check(Model(), ["hi", "loop", "no"], ["refuse, ends", "refuse, runs on"])
    assert (got["repeating"], got["answered"]) == (1, 2)
    assert (got["sampled_refusing"], got["sampled"]) == (2, 2 * answer_checks.SEEDS)
    assert (got["refusals_ended"], got["refused"]) == (1, 2)


def test_a_learning_curve_trains_on_a_share_of_each_category_and_a_full_run_records_what_it_did_before():
    pytest.importorskip("torch")
    from refusal_edge.convert.default_recipe import train_default

    rows = [{"category": c, "subcategory": s, "prompt": f"{c}{s}{k}"} for c in "ab" for s in "xy" for k in range(6)]
    half = train_default.share(rows, 0.5, seed=0)
    assert sorted((r["category"], r["subcategory"]) for r in half) == sorted([(c, s) for c in "ab" for s in "xy"] * 3)
    assert train_default.share(rows, 0.5, seed=0) == half and train_default.share(rows, 1, seed=0) == rows
    argv = ["--original", "o.jsonl", "--contrast", "c.jsonl"]
    # the shipped delta predates the flag: at its default it stays out of the metadata, so the bytes reproduce
    assert "refusal_fraction" not in train_default.training_block(train_default.parse_args(argv))
    block = train_default.training_block(train_default.parse_args(argv + ["--refusal-fraction", "0.25"]))
    assert block["refusal_fraction"] == 0.25 and "original" not in block
    for bad in ("0", "1.5", "-0.5"):
        with pytest.raises(SystemExit):
            train_default.parse_args(argv + ["--refusal-fraction", bad])
