"""`train --out DIR` never overwrites what a user owns, and checks its data before training (issue 35, row 6): a
non-empty DIR that holds no run to resume is refused unless --force; too few benign prompts for the calibration
that follows training is an error before any training, not after it."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from test_train import _error, coconot, train, write_rows  # noqa: E402


@pytest.fixture()
def data(tmp_path):
    return coconot(tmp_path)


def users_files(out):
    out.mkdir()
    (out / "hf").mkdir()
    owned = {out / "model.gguf": b"GGUF mine", out / "hf" / "config.json": b"{}", out / "policy.toml": b"rule = 1"}
    for path, content in owned.items():
        path.write_bytes(content)
    return owned


def test_a_non_empty_out_that_is_no_run_is_refused_and_left_alone(data, tmp_path):
    out = tmp_path / "mine"
    owned = users_files(out)
    error = _error(train(tmp_path / "base", data[0], "--contrast", data[1], "--out", out))
    assert "is not empty and holds no run to resume" in error and "--force" in error
    assert all(path.read_bytes() == content for path, content in owned.items())


def test_force_gets_past_the_directory_check_and_the_data_is_checked_before_training(data, tmp_path):
    out = tmp_path / "mine"
    owned = users_files(out)
    # the default --max-over-refusal 0.1 at confidence 0.9 needs 22 benign calibration prompts; this data has ~14
    error = _error(train(tmp_path / "base", data[0], "--contrast", data[1], "--out", out, "--force"))
    assert "too few benign prompts to calibrate after training" in error and "needs 22" in error, error
    assert all(path.read_bytes() == content for path, content in owned.items())  # nothing trained, nothing written


def test_min_refusal_needs_should_refuse_prompts_too(data, tmp_path):
    error = _error(train(tmp_path / "base", data[0], "--contrast", data[1], "--out", tmp_path / "new",
                         "--max-over-refusal", "0.5", "--min-refusal", "0.99"))
    assert "too few should-refuse prompts" in error and "--min-refusal" in error, error
    assert not (tmp_path / "new").exists()


def test_an_empty_data_file_is_an_error_before_training(data, tmp_path):
    empty = write_rows(tmp_path / "empty.jsonl", [])
    error = _error(train(tmp_path / "base", data[0], "--contrast", empty, "--out", tmp_path / "new"))
    assert "empty.jsonl: no rows" in error
