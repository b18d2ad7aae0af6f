"""Threshold calibration: targets, the greedy budget, infeasible targets, the split, and the CLI."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from refusal_edge import Policy, RefusalModel
from refusal_edge.cli import main
from refusal_edge.errors import PolicyError
from refusal_edge.evaluate.calibrate import CalibrationError, calibrate, parse_target, stratified_split
from refusal_edge.metadata import CATEGORIES
from conftest import THREADS

A, B = "Alpha requests", "Beta requests"
NAMES = [A, B]

# p(A), p(B) per prompt; the first three should be refused (category A), the last three are benign.
P = np.array([[0.9, 0.0], [0.6, 0.0], [0.3, 0.0], [0.5, 0.0], [0.2, 0.0], [0.1, 0.0]])
Y = np.array([True, True, True, False, False, False])
GOLD = np.array([A, A, A, A, A, A], dtype=object)


def targets(*texts):
    return [parse_target(t, NAMES) for t in texts]


def test_parse_targets():
    t = parse_target("alpha:tpr>=0.95", NAMES)
    assert (t.scope, t.metric, t.op, t.value) == (A, "tpr", ">=", 0.95)
    assert str(parse_target("overall: over-refusal <= 0.1", NAMES)) == "overall:over-refusal<=0.1"
    assert parse_target("ALL:recall>=0.5", NAMES).scope == "overall"
    for bad, match in [("alpha", "expected CATEGORY"), ("alpha:speed>=1", "unknown metric"),
                       ("alpha:tpr>=1.5", "not a rate"), ("gamma:tpr>=0.5", "unknown category"),
                       ("alpha:tpr>0.5", "expected CATEGORY")]:
        with pytest.raises(PolicyError, match=match):
            parse_target(bad, NAMES)


def test_target_lowers_its_own_threshold_just_enough():
    # 2 of 3 needs 0.9 and 0.6 admitted, 0.5 (benign) not: threshold between 0.5 and 0.6.
    found = calibrate(P, Y, GOLD, NAMES, targets("alpha:tpr>=0.6"), max_over_refusal=0.0)
    assert found.thresholds[0] == pytest.approx(0.55)  # geometric mid of 0.5 and 0.6 = 0.5477, 2 digits
    assert found.thresholds[1] == 1.0  # no reason to touch B
    assert found.refused.tolist() == [True, True, False, False, False, False]


def test_spare_budget_buys_the_best_refusals():
    # One benign refusal allowed (1/3 of 3): admitting 0.5 (benign) and 0.3 (should refuse) is worth it.
    found = calibrate(P, Y, GOLD, NAMES, targets("alpha:tpr>=0.6"), max_over_refusal=1 / 3)
    assert found.thresholds[0] == pytest.approx(0.24)  # between 0.2 and 0.3
    assert found.refused.tolist() == [True, True, True, True, False, False]


def test_conflicting_targets_are_reported():
    with pytest.raises(CalibrationError, match="conflict.*over-refusal 0.333 > 0"):
        calibrate(P, Y, GOLD, NAMES, targets("alpha:tpr>=1"), max_over_refusal=0.0)
    with pytest.raises(CalibrationError, match="conflict.*overall:over-refusal<=0"):
        calibrate(P, Y, GOLD, NAMES, targets("alpha:tpr>=1", "overall:over-refusal<=0"), max_over_refusal=1.0)


def test_a_cap_target_limits_the_budget():
    found = calibrate(P, Y, GOLD, NAMES, targets("overall:over-refusal<=0"), max_over_refusal=1.0)
    assert found.refused.tolist() == [True, True, False, False, False, False]


def test_a_target_without_prompts_is_reported():
    with pytest.raises(CalibrationError, match="holds no should-refuse prompt of Beta requests"):
        calibrate(P, Y, GOLD, NAMES, targets("beta:tpr>=0.5"), max_over_refusal=1.0)


def test_every_tpr_target_is_reachable_at_threshold_zero():
    gold = np.array([A, A, B, A, A, A], dtype=object)  # B's prompt has p(B) = 0: only threshold 0 admits it
    found = calibrate(P, Y, gold, NAMES, targets("beta:tpr>=1"), max_over_refusal=1.0)
    assert found.thresholds[1] == 0.0 and found.refused.all()


def test_greedy_prefers_refusals_that_cost_no_over_refusal():
    p = np.array([[0.4, 0.0], [0.0, 0.8], [0.0, 0.7], [0.45, 0.0], [0.0, 0.1]])
    y = np.array([True, True, True, False, False])
    gold = np.array([A, B, B, A, B], dtype=object)
    found = calibrate(p, y, gold, NAMES, [], max_over_refusal=0.0)
    # B's two should-refuse prompts come free; A's would cost its benign 0.45 first, over budget.
    assert found.refused.tolist() == [False, True, True, False, False]
    assert found.thresholds[0] == 1.0 and 0.1 < found.thresholds[1] <= 0.7


def test_category_scope_of_a_binary_model_moves_the_single_threshold():
    gold = np.array(["Requests with safety concerns"] * 3 + ["x"] * 3, dtype=object)
    t = parse_target("safety:tpr>=0.6", ["refuse", "Requests with safety concerns"])
    found = calibrate(P[:, :1], Y, gold, ["refuse"], [t], max_over_refusal=0.0)
    assert found.thresholds[0] == pytest.approx(0.55)


def test_stratified_split():
    y = np.array([True] * 8 + [False] * 4 + [True])
    gold = np.array(["a"] * 8 + ["b"] * 4 + ["c"], dtype=object)
    cal, held = stratified_split(y, gold, 0.25, seed=3)
    assert sorted(np.r_[cal, held].tolist()) == list(range(13))
    assert (gold[held] == "a").sum() == 2 and (gold[held] == "b").sum() == 1
    assert 12 in cal  # a stratum of one stays in calibration
    again, _ = stratified_split(y, gold, 0.25, seed=3)
    assert again.tolist() == cal.tolist()
    assert len(stratified_split(y, gold, 0.0, seed=3)[1]) == 0


# --- CLI -----------------------------------------------------------------------------------------
@pytest.fixture
def data(tmp_path):
    words = "the quick brown fox jumps over the lazy dog hello world how are you today tell me a story".split()

    def prompt(i):
        return " ".join(words[(i * 5 + k * 3) % len(words)] for k in range(5)) + f" {i}"

    dev = tmp_path / "dev.jsonl"
    dev.write_text("".join(json.dumps({"category": CATEGORIES[i % 5], "prompt": prompt(i)}) + "\n"
                           for i in range(20)), encoding="utf-8")
    contrast = tmp_path / "c.jsonl"
    contrast.write_text("".join(json.dumps({"category": CATEGORIES[i % 5], "prompt": prompt(50 + i)}) + "\n"
                                for i in range(20)), encoding="utf-8")
    return dev, contrast


def cli(*args, expect=0):
    result = CliRunner().invoke(main, [*map(str, args), "--threads", str(THREADS), "--ctx", "256"])
    assert result.exit_code == expect, result.output
    return result.output


def test_calibrated_policy_meets_its_targets_under_eval(data, tmp_path, tiny_gguf, monkeypatch):
    monkeypatch.setenv("REFUSAL_EDGE_CACHE", str(tmp_path / "cache"))
    dev, contrast = data
    policy_file = tmp_path / "p.toml"
    tuned = tmp_path / "tuned.gguf"
    text = cli("calibrate", tiny_gguf, dev, "--contrast", contrast, "--target", "overall:tpr>=0.5",
               "--max-over-refusal", "0.6", "--holdout", "0", "--mode", "empirical", "-o", policy_file,
               "--write-default", tuned)
    assert "overall:tpr>=0.5" in text and "MISSED" not in text

    policy = Policy.load(policy_file, CATEGORIES)
    assert policy.rule == "per-category" and set(policy.thresholds) == set(CATEGORIES)
    report_dir = tmp_path / "ev"
    cli("eval", tiny_gguf, dev, "--contrast", contrast, "--policy", policy_file, "--out", report_dir, "--no-plots")
    overall = json.loads((report_dir / "report.json").read_text())["evaluation"]["decisions"]["overall"]
    assert overall["recall"] >= 0.5 and overall["over_refusal"] <= 0.6

    with RefusalModel.load(tuned, n_ctx=256, n_threads=THREADS) as model:
        assert model.default_policy == policy


def test_infeasible_targets_write_no_policy(data, tmp_path, tiny_gguf, monkeypatch):
    monkeypatch.setenv("REFUSAL_EDGE_CACHE", str(tmp_path / "cache"))
    dev, contrast = data
    policy_file = tmp_path / "p.toml"
    text = cli("calibrate", tiny_gguf, dev, "--contrast", contrast, "--target", "safety:tpr>=1",
               "--max-over-refusal", "0", "-o", policy_file, expect=1)
    assert "Error:" in text and "Traceback" not in text
    assert not policy_file.exists()
    assert "unknown metric" in cli("calibrate", tiny_gguf, dev, "--target", "safety:speed>=1", expect=2)


def test_output_names_the_policy_file_and_policy_out_still_works(data, tmp_path, tiny_gguf, monkeypatch):
    monkeypatch.setenv("REFUSAL_EDGE_CACHE", str(tmp_path / "cache"))
    dev, contrast = data
    common = ["calibrate", tiny_gguf, dev, "--contrast", contrast, "--max-over-refusal", "0.6", "--holdout", "0",
              "--mode", "empirical"]
    for flag in ("--output", "--policy-out"):
        cli(*common, flag, tmp_path / f"{flag[2:]}.toml")
        assert (tmp_path / f"{flag[2:]}.toml").is_file()
    text = cli(*common, "-o", tmp_path / "a.toml", "--policy-out", tmp_path / "b.toml", expect=2)
    assert "two policy files given" in text
    assert not (tmp_path / "a.toml").exists() and not (tmp_path / "b.toml").exists()
    assert "--policy-out" not in cli("calibrate", "--help")


def test_guaranteed_mode_prints_its_promise_and_both_modes(data, tmp_path, tiny_gguf, monkeypatch):
    monkeypatch.setenv("REFUSAL_EDGE_CACHE", str(tmp_path / "cache"))
    dev, contrast = data
    policy_file = tmp_path / "p.toml"
    text = cli("calibrate", tiny_gguf, dev, "--contrast", contrast, "--max-over-refusal", "0.5", "--confidence",
               "0.8", "--holdout", "0.25", "-o", policy_file)
    assert "guaranteed mode (written): one threshold" in text and "empirical mode (for comparison)" in text
    assert "guarantee: with probability >= 0.8" in text and "of 15 refused" in text  # 15 benign calibrate
    assert "guaranteed: held out" in text and "empirical: held out" in text
    policy = Policy.load(policy_file, CATEGORIES)
    assert policy.rule == "per-category" and len(set(policy.thresholds.values())) == 1


def test_too_little_data_for_a_promise_writes_no_policy(data, tmp_path, tiny_gguf, monkeypatch):
    monkeypatch.setenv("REFUSAL_EDGE_CACHE", str(tmp_path / "cache"))
    dev, contrast = data
    policy_file = tmp_path / "p.toml"
    # 15 benign prompts calibrate (20, a quarter held out); over-refusal <= 0.1 at 0.9 needs 22.
    text = cli("calibrate", tiny_gguf, dev, "--contrast", contrast, "-o", policy_file, expect=1)
    assert "needs at least 22 benign prompts in the calibration part, which has 15" in text
    assert "Traceback" not in text and not policy_file.exists()
    cli("calibrate", tiny_gguf, dev, "--contrast", contrast, "-o", policy_file, "--mode", "empirical")
    assert policy_file.exists()
