"""No verb writes its output over its own input (issue 35, row 10), not even with --force: convert into its own
checkpoint's weights, annotate X -o X, quantize X -o X (also through a symlink or a hard link)."""

from __future__ import annotations

import os
import shutil

import pytest
from click.testing import CliRunner

from refusal_edge.cli import main


def refused(result, words="never writes over what it reads"):
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert words in result.output and len(result.output.strip().splitlines()) == 1, result.output


@pytest.fixture()
def copy(tiny_gguf, tmp_path):
    path = tmp_path / "model.gguf"
    shutil.copy(tiny_gguf, path)
    return path


@pytest.mark.parametrize("verb", [["annotate"], ["quantize", "--type", "q8_0", "--allow-requantize"]])
@pytest.mark.parametrize("alias", ["same", "symlink", "hardlink"])
def test_annotate_and_quantize_refuse_their_input_as_output(copy, tmp_path, verb, alias):
    before = copy.read_bytes()
    output = copy
    if alias == "symlink":
        output = tmp_path / "link.gguf"
        output.symlink_to(copy)
    elif alias == "hardlink":
        output = tmp_path / "hard.gguf"
        os.link(copy, output)
    refused(CliRunner().invoke(main, [verb[0], str(copy), "-o", str(output), "--force", *verb[1:]]))
    assert copy.read_bytes() == before


def test_convert_refuses_to_write_over_its_checkpoints_weights(tmp_path):
    pytest.importorskip("torch")
    from tiny_hf import write_tiny_hf

    tiny = write_tiny_hf(tmp_path / "hf", n_shards=1)
    weights = next(tiny.root.glob("*.safetensors"))
    before = weights.read_bytes()
    for source in (tiny.root, tiny.root / "config.json"):
        refused(CliRunner().invoke(main, ["convert", str(source), "-o", str(weights), "--force"]),
                f"is a file of the input {tiny.root}")
    assert weights.read_bytes() == before
