"""Every GGUF `convert`, `annotate` and `quantize` write is loaded by llama.cpp in a child process before it gets
its name: a file llama.cpp refuses, or one that computes other logits than its source, fails the verb, leaves
nothing behind and says what llama.cpp refused."""

from __future__ import annotations

import json
import sys

import gguf
import pytest
from click.testing import CliRunner

import refusal_edge.convert.hf_to_gguf as hf_to_gguf
import refusal_edge.convert.load_check as load_check
from conftest import THREADS
from refusal_edge.cli import main
from refusal_edge.convert.errors import ConversionError
from refusal_edge.convert.hf_to_gguf import convert_checkpoint
from refusal_edge.convert.load_check import check_gguf_loads, coarsest
from tiny_hf import write_tiny_hf
from tiny_model import build_tiny_gguf


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def phi3_named(tmp_path_factory):
    """A byte-level BPE checkpoint in a directory whose name llama.cpp's Phi-3 token rule matches."""
    return write_tiny_hf(tmp_path_factory.mktemp("named") / "phi3-tiny-refusal").root


def leftovers(directory):
    return sorted(p.name for p in directory.iterdir())


def test_a_file_llama_cpp_refuses_fails_convert_naming_the_refusal(phi3_named, tmp_path, monkeypatch):
    """The issue's case: without the name fix, llama.cpp refuses the vocabulary; convert says so, exits non-zero
    and leaves no file that looks complete (nor a partial one)."""
    monkeypatch.setattr(hf_to_gguf, "llama_cpp_safe_name", lambda name, tokens: (name, None))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = run("convert", phi3_named, "-o", out_dir / "m.gguf", "--threads", THREADS)
    assert result.exit_code != 0
    assert "llama.cpp cannot load m.gguf" in result.output
    assert "error loading model vocabulary: unordered_map::at" in result.output
    assert "Traceback" not in result.output and "wrote" not in result.output
    assert leftovers(out_dir) == []


def test_with_the_name_fix_the_same_checkpoint_converts_and_is_checked(phi3_named, tmp_path):
    result = run("convert", phi3_named, "-o", tmp_path / "m.gguf", "--threads", THREADS)
    assert result.exit_code == 0, result.output
    assert "checked: llama.cpp loads it (vocabulary of" in result.output and "refusal tokens CONTROL" in result.output
    assert "is written as 'phi 3-tiny-refusal'" in result.output


def test_other_logits_than_the_source_fail_convert(tmp_path, monkeypatch):
    """A wrong convention (Q/K rows left unpermuted) loads fine in llama.cpp; the logit comparison catches it."""
    pytest.importorskip("transformers")
    import refusal_edge.convert.llama_tensors as lt

    tiny = write_tiny_hf(tmp_path / "hf")
    monkeypatch.setattr(lt, "PermutedTensor", lambda base, n_head, name: base)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(ConversionError, match="computes other logits than the source checkpoint"):
        convert_checkpoint(tiny.root, out_dir / "m.gguf", outtype="f32", threads=THREADS, progress=False,
                           log=lambda s: None)
    assert leftovers(out_dir) == []


def test_another_tokenization_than_the_checkpoints_is_named(tmp_path):
    """The file loads, but llama.cpp splits the sample text otherwise than the checkpoint's own tokenizer (here one
    whose merges were dropped after the conversion: it spells everything byte by byte)."""
    pytest.importorskip("tokenizers")
    tiny = write_tiny_hf(tmp_path / "hf")
    path = convert_checkpoint(tiny.root, tmp_path / "m.gguf", check_load=False, progress=False).output
    check_gguf_loads(path, source=tiny.root, threads=THREADS)  # the same tokenizer: passes
    data = json.loads((tiny.root / "tokenizer.json").read_text(encoding="utf-8"))
    data["model"]["merges"] = []
    (tiny.root / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ConversionError, match="pre-tokenizer or vocabulary is wrong"):
        check_gguf_loads(path, source=tiny.root, threads=THREADS)


def test_decision_tokens_that_are_not_control_are_named(tmp_path):
    path = build_tiny_gguf(tmp_path / "normal.gguf", refusal_token_type=gguf.TokenType.NORMAL)
    with pytest.raises(ConversionError, match=r"loads in llama.cpp, but: refusal token '\[respond\]'.*not a CONTROL"):
        check_gguf_loads(path, threads=THREADS)


def test_annotate_and_quantize_check_their_output(tmp_path):
    source = build_tiny_gguf(tmp_path / "plain.gguf", write_metadata=False)
    result = run("annotate", source, "-o", tmp_path / "a.gguf")
    assert result.exit_code == 0, result.output
    assert "checked: llama.cpp loads it" in result.output and "refusal tokens CONTROL" in result.output
    result = run("quantize", tmp_path / "a.gguf", "-o", tmp_path / "q.gguf", "--type", "q8_0", "--threads", THREADS)
    assert result.exit_code == 0, result.output
    assert "checked: llama.cpp loads it" in result.output


def test_a_crash_in_the_child_is_reported_not_suffered(tmp_path):
    path = build_tiny_gguf(tmp_path / "m.gguf")
    with pytest.raises(ConversionError, match=r"llama.cpp crashed \(SIGABRT\)"):
        check_gguf_loads(path, command=[sys.executable, "-c", "import os; os.abort()"])
    with pytest.raises(ConversionError, match="did not load m.gguf within 0.5 s"):
        check_gguf_loads(path, timeout=0.5, command=[sys.executable, "-c", "import time; time.sleep(30)"])


def test_no_logit_comparison_where_the_reference_would_not_fit(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    tiny = write_tiny_hf(tmp_path / "hf")
    path = convert_checkpoint(tiny.root, tmp_path / "m.gguf", check_load=False, progress=False).output
    monkeypatch.setattr(load_check, "available_memory", lambda: 1000)
    checked = check_gguf_loads(path, source=tiny.root, weight_type="f16", threads=THREADS)
    assert checked.max_logit_delta is None
    assert any("logits not compared" in n and "more than half" in n for n in checked.notes)
    monkeypatch.undo()
    checked = check_gguf_loads(path, source=tiny.root, weight_type="f16", threads=THREADS)
    assert checked.max_logit_delta is not None and checked.max_logit_delta < 1e-2


def test_the_coarsest_weight_type_sets_the_tolerance():
    assert coarsest("f16", None) == "f16" and coarsest("f16", "f32") == "f16" and coarsest("f32", "q8_0") == "q8_0"
    assert coarsest("f16", "q6_k") is None  # no tolerance for k-quants: the file is loaded, not compared
