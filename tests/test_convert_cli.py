"""The `convert`, `annotate` and `quantize` verbs through the real CLI entry point."""

from __future__ import annotations

import gguf
import pytest
from click.testing import CliRunner

from conftest import THREADS
from refusal_edge import RefusalModel
from refusal_edge.cli import main
from tiny_hf import write_tiny_hf
from tiny_model import build_tiny_gguf


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    return write_tiny_hf(tmp_path_factory.mktemp("cli") / "hf").root


def test_help(hf):
    for verb in ("convert", "annotate", "quantize"):
        result = run(verb, "--help")
        assert result.exit_code == 0 and "--force" in result.output
    assert "--keep-embeddings" in run("convert", "--help").output


def test_convert_annotate_quantize(hf, tmp_path):
    out = tmp_path / "m.gguf"
    explicit = ("--category", "safety=[Requests with safety concerns]", "--category", "human=[Humanizing requests]",
                "--respond", "[respond]")
    result = run("convert", hf, "-o", out, *explicit, "--name", "tiny")
    assert result.exit_code == 0, result.output
    assert "refusal tokens (CONTROL): [respond]=" in result.output
    assert gguf.GGUFReader(out).fields["general.name"].contents() == "tiny"

    again = run("convert", hf, "-o", out)
    assert again.exit_code == 1 and "already exists; pass --force" in again.output
    assert run("convert", hf, "-o", out, *explicit, "--force", "-q").exit_code == 0

    plain = build_tiny_gguf(tmp_path / "plain.gguf", write_metadata=False,
                            refusal_token_type=gguf.TokenType.USER_DEFINED)
    annotated = tmp_path / "annotated.gguf"
    result = run("annotate", plain, "-o", annotated)
    assert result.exit_code == 0, result.output
    with RefusalModel.load(annotated, n_ctx=64, n_threads=THREADS) as model:
        assert len(model.categories) == 5

    q = tmp_path / "m.q8_0.gguf"
    result = run("quantize", out, "-o", q, "--type", "Q8_0", "--threads", THREADS)
    assert result.exit_code == 0, result.output
    with RefusalModel.load(q, n_ctx=64, n_threads=THREADS) as model:
        assert model.categories == ("safety", "human")

    one_step = tmp_path / "one.gguf"
    result = run("convert", hf, "-o", one_step, "--quant", "q4_0", "--keep-embeddings", "q8_0", "-t", THREADS, "-q")
    assert result.exit_code == 0 and result.output == "", result.output
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(one_step).tensors}
    assert types["token_embd.weight"] == gguf.GGMLQuantizationType.Q8_0


def test_cli_errors_are_one_line_messages(hf, tmp_path):
    cases = [
        (("convert", tmp_path / "nope", "-o", tmp_path / "o.gguf"), "source not found"),
        (("convert", hf, "-o", tmp_path / "o.gguf", "--category", "broken"), "expected NAME=TOKEN"),
        (("convert", hf, "-o", tmp_path / "o.gguf", "--respond", "[zzz]", "--category", "a=[b]"), "not a single entry"),
        (("annotate", tmp_path / "nope.gguf", "-o", tmp_path / "o.gguf"), "GGUF file not found"),
        (("quantize", tmp_path / "nope.gguf", "-o", tmp_path / "o.gguf", "--type", "q4_0"), "not found"),
    ]
    for args, message in cases:
        result = run(*args)
        assert result.exit_code == 1, result.output
        assert message in result.output and "Traceback" not in result.output
    bad = run("quantize", tmp_path / "x.gguf", "-o", tmp_path / "o.gguf", "--type", "q9")
    assert bad.exit_code == 2 and "q4_k_m" in bad.output
