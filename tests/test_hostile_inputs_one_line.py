"""Row 9 of the red team's round four (issue 35): inputs that used to end in a traceback end in one line naming the
problem: a CSV field over csv's limit, a config.json nested 10**5 deep or with 0 attention heads, a symlink loop as
the weights."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from refusal_edge.cli import main


def one_line(result, words):
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert words in result.output and len(result.output.strip().splitlines()) == 1, result.output


def test_a_csv_field_of_two_megabytes_is_one_line(tiny_gguf, tmp_path):
    data = tmp_path / "big.csv"
    data.write_text('prompt\n"' + "x" * 2_000_000 + '"\n')
    one_line(CliRunner().invoke(main, ["decide", "--input", str(data), "-m", str(tiny_gguf)]),
             "big.csv: not readable as CSV (field larger than field limit")


@pytest.fixture()
def checkpoint(tmp_path):
    pytest.importorskip("safetensors")
    from tiny_hf import write_tiny_hf

    return write_tiny_hf(tmp_path / "hf", n_shards=1).root


def test_a_config_nested_deeply_is_one_line(checkpoint, tmp_path):
    (checkpoint / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    one_line(CliRunner().invoke(main, ["convert", str(checkpoint), "-o", str(tmp_path / "o.gguf")]),
             "config.json is not valid JSON: nested too deeply")


def test_zero_attention_heads_is_one_line(checkpoint, tmp_path):
    config = json.loads((checkpoint / "config.json").read_text())
    config["num_attention_heads"] = 0
    (checkpoint / "config.json").write_text(json.dumps(config))
    one_line(CliRunner().invoke(main, ["convert", str(checkpoint), "-o", str(tmp_path / "o.gguf")]),
             "num_attention_heads 0: every size must be positive")


def test_a_symlink_loop_as_the_weights_is_one_line(checkpoint, tmp_path):
    weights = next(checkpoint.glob("*.safetensors"))
    weights.unlink()
    os.symlink(weights.name, weights)
    one_line(CliRunner().invoke(main, ["convert", str(checkpoint), "-o", str(tmp_path / "o.gguf")]),
             "Too many levels of symbolic links")


@pytest.mark.parametrize("record", ['{{"model":"{sha}","scores":{{}}}}', '{{"model":"{sha}","key":"k","scores":{{}}}}',
                                    '{{"model":"{sha}","key":"k","scores":[1]}}'])
def test_a_score_store_record_without_scores_is_a_store_error(tmp_path, record):
    from refusal_edge.evaluate.store import ScoreStore, StoreError

    sha = "0" * 64
    path = tmp_path / "scores.jsonl"
    path.write_text(record.format(sha=sha) + "\n")
    with pytest.raises(StoreError, match="scores.jsonl:1: corrupt score record"):
        ScoreStore(path, sha)
