"""`refusal-edge eval` end to end on the tiny model: outputs, stored scores, sweeps, answers, bad input."""

import csv
import json
import sys

import pytest
from click.testing import CliRunner

from refusal_edge import Policy, RefusalModel
from refusal_edge.cli import main
from refusal_edge.metadata import CATEGORIES
from conftest import THREADS

WORDS = "the quick brown fox jumps over the lazy dog hello world how are you today tell me a story".split()


def prompt(i, n=5):
    return " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(n)) + f" {i}"


@pytest.fixture
def data(tmp_path):
    dev = tmp_path / "dev.jsonl"
    dev.write_text("".join(json.dumps({"id": f"d{i}", "category": CATEGORIES[i % 5], "subcategory": f"s{i % 2}",
                                       "prompt": prompt(i)}) + "\n" for i in range(15)), encoding="utf-8")
    contrast = tmp_path / "contrast.jsonl"
    contrast.write_text("".join(json.dumps({"id": f"c{i}", "category": CATEGORIES[(i * 2) % 5], "subcategory": "x",
                                            "prompt": prompt(100 + i), "chosen": "sure"}) + "\n" for i in range(10)),
                        encoding="utf-8")
    return dev, contrast


@pytest.fixture
def run(tmp_path, monkeypatch, tiny_gguf):
    monkeypatch.setenv("REFUSAL_EDGE_CACHE", str(tmp_path / "cache"))

    def invoke(*args, expect=0):
        result = CliRunner().invoke(main, ["eval", str(tiny_gguf), *map(str, args), "--threads", str(THREADS),
                                           "--ctx", "256"])
        assert result.exit_code == expect, result.output
        return result.output

    return invoke


def test_report_matches_decisions_made_prompt_by_prompt(run, data, tmp_path, tiny_model):
    out = tmp_path / "out"
    text = run(*data, "--out", out, "--threshold", "0.02")
    assert "25 prefilled now, 0 from" in text
    report = json.loads((out / "report.json").read_text())
    assert {p.name for p in out.iterdir()} == {"report.json", "prompts.csv", "refusal_vs_threshold.png", "roc.png"}

    policy = Policy(rule="per-category", threshold=0.02)
    rows = list(csv.DictReader(open(out / "prompts.csv", encoding="utf-8")))
    assert len(rows) == 25
    tp = fp = 0
    for row in rows:
        d = tiny_model.decide(row["prompt"], policy)
        assert int(row["refused"]) == d.refused
        assert float(row["p_safety"]) == pytest.approx(d.probabilities[CATEGORIES[3]], rel=1e-4)
        tp += d.refused and row["should_refuse"] == "1"
        fp += d.refused and row["should_refuse"] == "0"
    overall = report["evaluation"]["decisions"]["overall"]
    assert (overall["tp"], overall["fp"]) == (tp, fp)
    assert tp + fp > 0  # the threshold makes some refusals happen
    assert set(report["evaluation"]["rules"]) == {"binary", "per-category", "paper-category", "natural"}
    assert len(report["sweep"]["points"]) == 21  # --out records the default sweep for the plots
    assert (out / "roc.png").read_bytes()[:4] == b"\x89PNG"


def test_second_run_reads_the_store_without_loading_the_model(run, data, monkeypatch):
    run(*data)

    def refuse_to_load(*args, **kwargs):
        raise AssertionError("the model was loaded although every score is stored")

    monkeypatch.setattr(RefusalModel, "load", refuse_to_load)
    text = run(*data, "--sweep", "0:0.1:0.01", "--sweep-category", "safety")
    assert "0 prefilled now, 25 from" in text
    sweep_lines = text.split("Sweep of ")[1].splitlines()
    assert sweep_lines[0] == "Requests with safety concerns (per-category rule)"
    assert sum(1 for line in sweep_lines if line.split() and line.split()[0].replace(".", "").isdigit()) == 11
    binary = run(*data, "--sweep", "0:1:0.5", "--sweep-category", "safety", "--rule", "binary")
    assert "Sweep of every threshold (binary rule)" in binary


def test_generate_reports_agreement_with_a_plug_in_judge(run, data, tmp_path, monkeypatch):
    (tmp_path / "my_judge.py").write_text(
        "calls = []\n"
        "def says_the(prompt, answer):\n"
        "    calls.append(prompt)\n"
        "    return ' the' in ' ' + answer\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "out"
    text = run(*data, "--generate", "--max-tokens", "6", "--judge", "my_judge:says_the", "--out", out,
               "--no-plots", "--threshold", "0.02")
    assert "judged by my_judge:says_the" in text
    assert len(sys.modules["my_judge"].calls) == 25
    rows = list(csv.DictReader(open(out / "prompts.csv", encoding="utf-8")))
    verdicts = [(" the" in " " + r["answer"]) for r in rows]
    assert [int(r["answer_refuses"]) for r in rows] == list(map(int, verdicts))
    agreement = json.loads((out / "report.json").read_text())["generation"]["agreement"]
    expected = sum(v == (r["refused"] == "1") for v, r in zip(verdicts, rows)) / 25
    assert agreement["agreement"] == pytest.approx(expected)
    assert {p.name for p in out.iterdir()} == {"report.json", "prompts.csv"}

    # Answers are stored too: a rerun decodes nothing and does not need the model.
    monkeypatch.setattr(RefusalModel, "load", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    again = run(*data, "--generate", "--max-tokens", "6", "--threshold", "0.02")
    assert "Answers (25 decoded" in again


def test_xstest_and_generic_formats(run, tmp_path):
    xs = tmp_path / "xstest.csv"
    xs.write_text("prompt,type,label\n" + "".join(f'"{prompt(i)}",{t},{lab}\n' for i, (t, lab) in enumerate(
        [("homonyms", "safe"), ("contrast_homonyms", "unsafe")] * 3)), encoding="utf-8")
    text = run(xs, "--subcategories")
    assert "3 should refuse, 3 benign [xstest]" in text
    assert "(none) / contrast_homonyms" in text
    generic = tmp_path / "g.jsonl"
    generic.write_text("".join(json.dumps({"q": prompt(i), "bad": i % 2}) + "\n" for i in range(4)), encoding="utf-8")
    assert "2 should refuse, 2 benign [generic]" in run(generic, "--prompt-field", "q", "--label-field", "bad")


def test_bad_data_is_a_clear_error_and_writes_nothing(run, data, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"category": "x", "prompt": "fine"}) + "\n{oops\n", encoding="utf-8")
    out = tmp_path / "out"
    text = run(bad, "--out", out, expect=1)
    assert "bad.jsonl:2: not valid JSON" in text and "Traceback" not in text
    assert not out.exists()
    assert "1 malformed rows skipped" in run(bad, "--skip-bad-rows")
    assert "unknown category" in run(data[0], "--sweep-category", "nonsense", expect=2)
    assert "no data" in run(expect=1)


def test_bad_options_fail_before_any_prompt_is_scored(run, data, tmp_path):
    assert "unknown category" in run(*data, "--sweep-category", "nonsense", expect=2)
    assert "--sweep" in run(*data, "--sweep", "1:0:0.1", expect=2)
    stored = [json.loads(line) for f in (tmp_path / "cache").rglob("*.jsonl") for line in f.read_text().splitlines()]
    assert not any("scores" in record for record in stored)
