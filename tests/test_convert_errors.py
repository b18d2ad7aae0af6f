"""Every failure `refusal-edge convert` lists gets a clear error, before or without leaving a partial file."""

from __future__ import annotations

import errno
import json
import shutil
import sys
from collections import namedtuple

import pytest

from refusal_edge.convert.errors import ConversionError
from refusal_edge.convert.hf_to_gguf import convert_checkpoint
from tiny_hf import write_safetensors, write_tiny_hf


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return write_tiny_hf(tmp_path_factory.mktemp("good") / "hf")


@pytest.fixture
def hf(good, tmp_path):
    """A fresh, writable copy of the good checkpoint to break."""
    root = tmp_path / "hf"
    shutil.copytree(good.root, root)
    return root


def fails(source, out, match, **kw):
    with pytest.raises(ConversionError, match=match):
        convert_checkpoint(source, out, progress=False, **kw)
    assert not out.exists()
    assert not list(out.parent.glob(".*.partial"))


def edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_missing_source(tmp_path):
    fails(tmp_path / "nowhere", tmp_path / "o.gguf", "source not found")
    fails("./relative/nowhere", tmp_path / "o.gguf", "source not found")


def test_source_is_a_file(tmp_path):
    f = tmp_path / "model.gguf"
    f.write_bytes(b"GGUF")
    fails(f, tmp_path / "o.gguf", "is a file.*annotate")


def test_no_config(hf, tmp_path):
    (hf / "config.json").unlink()
    fails(hf, tmp_path / "o.gguf", "no config.json")


def test_no_weights(hf, tmp_path):
    for p in hf.glob("*.safetensors*"):
        p.unlink()
    fails(hf, tmp_path / "o.gguf", "holds no weights")


def test_missing_shard(hf, tmp_path):
    next(hf.glob("model-00002-*.safetensors")).unlink()
    fails(hf, tmp_path / "o.gguf", "missing: model-00002-of-00002.safetensors")


def test_truncated_shard(hf, tmp_path):
    shard = next(hf.glob("model-00001-*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:-100])
    fails(hf, tmp_path / "o.gguf", "truncated")


def test_missing_tensor(hf, tmp_path):
    index = hf / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    shard = hf / data["weight_map"]["model.layers.1.mlp.up_proj.weight"]
    from refusal_edge.convert.hf_source import read_safetensors_header

    kept = {n: t.numpy() for n, t in read_safetensors_header(shard).items() if n != "model.layers.1.mlp.up_proj.weight"}
    write_safetensors(shard, kept)
    del data["weight_map"]["model.layers.1.mlp.up_proj.weight"]
    index.write_text(json.dumps(data))
    fails(hf, tmp_path / "o.gguf", "lacks 1 tensor.*blk.1.ffn_up.weight")


def test_unsupported_architecture_points_to_annotate(hf, tmp_path):
    edit_json(hf / "config.json", architectures=["GPTNeoXForCausalLM"])
    fails(hf, tmp_path / "o.gguf", "unsupported architecture GPTNeoXForCausalLM.*annotate")


def test_unsupported_dtype(hf, tmp_path):
    shard = next(hf.glob("model-00001-*.safetensors"))
    from refusal_edge.convert.hf_source import read_safetensors_header

    tensors = {n: t.numpy() for n, t in read_safetensors_header(shard).items()}
    name = next(iter(tensors))
    write_safetensors(shard, tensors, overrides={name: "I8"})
    fails(hf, tmp_path / "o.gguf", "dtype I8")


def test_unsupported_rope_scaling(hf, tmp_path):
    edit_json(hf / "config.json", rope_scaling={"rope_type": "dynamic", "factor": 4.0})
    fails(hf, tmp_path / "o.gguf", "rope scaling 'dynamic'")
    edit_json(hf / "config.json", rope_scaling={"rope_type": "yarn", "factor": 4.0})  # supported, but incomplete
    fails(hf, tmp_path / "o.gguf", "yarn rope scaling needs factor and original_max_position_embeddings")


def test_shape_contradicts_config(hf, tmp_path):
    edit_json(hf / "config.json", intermediate_size=100)
    fails(hf, tmp_path / "o.gguf", "config.json implies")


def test_no_refusal_tokens(tmp_path):
    tiny = write_tiny_hf(tmp_path / "hf", refusal="none")
    fails(tiny.root, tmp_path / "o.gguf", "no refusal tokens found.*--category")


def test_explicit_token_not_a_single_token(hf, tmp_path):
    fails(hf, tmp_path / "o.gguf", "'\\[not one token\\]'.*not a single entry",
          categories={"x": "[not one token]"})
    fails(hf, tmp_path / "o.gguf", "needs at least one --category", respond="[respond]")


def test_vocabulary_larger_than_embedding(hf, tmp_path):
    tok = json.loads((hf / "tokenizer.json").read_text())
    n = max(t["id"] for t in tok["added_tokens"]) + 1
    tok["added_tokens"].append({"id": n, "content": "[extra]", "special": False})
    (hf / "tokenizer.json").write_text(json.dumps(tok))
    fails(hf, tmp_path / "o.gguf", f"vocabulary/embedding size mismatch: the tokenizer has {n + 1} tokens")


def test_unknown_pre_tokenizer_and_override(hf, tmp_path):
    tok = json.loads((hf / "tokenizer.json").read_text())
    tok["pre_tokenizer"] = {"type": "Whitespace"}
    (hf / "tokenizer.json").write_text(json.dumps(tok))
    fails(hf, tmp_path / "o.gguf", "unrecognised pre-tokenizer.*--pre-tokenizer")
    # A wrong override: llama.cpp would split text otherwise than the checkpoint's tokenizer (the load check)
    fails(hf, tmp_path / "o.gguf", "pre-tokenizer or vocabulary is wrong", pre_tokenizer="gpt-2")
    # GPT-2's regex spelled as a Split step is not recognised, but naming it gives the same tokens
    gpt2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
    tok["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": gpt2}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    (hf / "tokenizer.json").write_text(json.dumps(tok))
    fails(hf, tmp_path / "o.gguf", "unrecognised pre-tokenizer.*--pre-tokenizer")
    assert convert_checkpoint(hf, tmp_path / "o.gguf", pre_tokenizer="gpt-2", progress=False).output.exists()


def test_no_tokenizer(hf, tmp_path):
    (hf / "tokenizer.json").unlink()
    fails(hf, tmp_path / "o.gguf", "has no tokenizer")


def test_sentencepiece_without_the_package(hf, tmp_path, monkeypatch):
    (hf / "tokenizer.json").unlink()
    (hf / "tokenizer.model").write_bytes(b"\x00")
    monkeypatch.setitem(sys.modules, "sentencepiece", None)
    fails(hf, tmp_path / "o.gguf", r"SentencePiece.*needs sentencepiece.*pip install 'refusal-edge\[convert\]'")


def test_wordpiece_tokenizer(hf, tmp_path):
    edit_json(hf / "tokenizer.json", model={"type": "WordPiece", "vocab": {}})
    fails(hf, tmp_path / "o.gguf", "WordPiece tokenizer is not supported.*annotate")


def test_existing_output_needs_force(good, tmp_path):
    out = tmp_path / "o.gguf"
    out.write_bytes(b"keep me")
    with pytest.raises(ConversionError, match="already exists; pass --force"):
        convert_checkpoint(good.root, out, progress=False)
    assert out.read_bytes() == b"keep me"
    convert_checkpoint(good.root, out, force=True, progress=False)
    assert out.read_bytes()[:4] == b"GGUF"


def test_output_directory_missing(good, tmp_path):
    with pytest.raises(ConversionError, match="does not exist"):
        convert_checkpoint(good.root, tmp_path / "no" / "o.gguf", progress=False)


def test_not_enough_disk_space(good, tmp_path, monkeypatch):
    import refusal_edge.convert.output as output

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(output.shutil, "disk_usage", lambda p: usage(10**6, 10**6 - 1000, 1000))
    fails(good.root, tmp_path / "o.gguf", "not enough disk space.*free")


def test_disk_full_while_writing(good, tmp_path, monkeypatch):
    import refusal_edge.convert.writer as writer

    calls = {"n": 0}
    real = writer.encode

    def full(rows, qtype):
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(rows, qtype)

    monkeypatch.setattr(writer, "encode", full)
    fails(good.root, tmp_path / "o.gguf", "disk full while writing")


def test_interrupted_conversion_leaves_nothing(good, tmp_path, monkeypatch):
    import refusal_edge.convert.writer as writer

    def interrupt(rows, qtype):
        raise KeyboardInterrupt

    monkeypatch.setattr(writer, "encode", interrupt)
    with pytest.raises(KeyboardInterrupt):
        convert_checkpoint(good.root, tmp_path / "o.gguf", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_corrupt_weights(hf, tmp_path):
    import numpy as np
    from refusal_edge.convert.hf_source import read_safetensors_header

    shard = next(hf.glob("model-00001-*.safetensors"))
    tensors = {n: t.numpy() for n, t in read_safetensors_header(shard).items()}
    name = next(n for n in tensors if tensors[n].ndim == 2)
    tensors[name][0, 0] = np.nan
    write_safetensors(shard, tensors)
    fails(hf, tmp_path / "o.gguf", "NaN or infinite")


def test_bad_option_values(good, tmp_path):
    fails(good.root, tmp_path / "o.gguf", "unsupported --outtype", outtype="q4_0")
    fails(good.root, tmp_path / "o.gguf", "unknown quantization type", quant="q9_k")
    fails(good.root, tmp_path / "o.gguf", "--quant re-quantizes", outtype="q8_0", quant="q4_0")


def test_verify_without_torch_fails_before_converting(good, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    fails(good.root, tmp_path / "o.gguf", "pip install 'refusal-edge\\[torch\\]'", verify=True)


def test_bin_checkpoint_without_torch(good, tmp_path, monkeypatch):
    root = tmp_path / "hf"
    root.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (root / name).write_bytes((good.root / name).read_bytes())
    (root / "pytorch_model.bin").write_bytes(b"not really")
    monkeypatch.setitem(sys.modules, "torch", None)
    fails(root, tmp_path / "o.gguf", "PyTorch .bin checkpoint, which needs torch")


def test_sigterm_unwinds_and_removes_the_partial_file(good, tmp_path, monkeypatch):
    import os
    import signal

    import refusal_edge.convert.writer as writer

    real = writer.encode

    def killed(rows, qtype):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(rows, qtype)

    monkeypatch.setattr(writer, "encode", killed)
    with pytest.raises(KeyboardInterrupt):
        convert_checkpoint(good.root, tmp_path / "o.gguf", progress=False)
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is not None  # the previous handler is back


def test_not_enough_space_for_quantization(good, tmp_path, monkeypatch):
    import refusal_edge.convert.output as output

    usage = namedtuple("usage", "total used free")
    size = convert_checkpoint(good.root, tmp_path / "probe.gguf", progress=False).output.stat().st_size
    (tmp_path / "probe.gguf").unlink()
    monkeypatch.setattr(output.shutil, "disk_usage", lambda p: usage(10**9, 0, size + 10))
    fails(good.root, tmp_path / "o.gguf", "intermediate file and the quantized output", quant="q4_0")
