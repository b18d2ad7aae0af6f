"""A remote engine's tokenizer source may be the served Hugging Face checkpoint's directory (vLLM serves those; its
user has no GGUF): its tokenizer files become a cached vocabulary-only GGUF that tokenizes exactly like the GGUF
`convert` makes of the same checkpoint."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

pytest.importorskip("httpx")

from test_remote_errors import FAST, FakeLlamaServer, one_line_error  # noqa: E402
from tiny_hf import write_tiny_hf  # noqa: E402

from refusal_edge.convert.hf_to_gguf import convert_checkpoint  # noqa: E402
from refusal_edge.convert.vocab_only import cached_vocab_gguf  # noqa: E402
from refusal_edge import RefusalModel  # noqa: E402
from refusal_edge.engines.llama.vocab import load_tokenizer  # noqa: E402
from refusal_edge.cli import main  # noqa: E402
from refusal_edge.errors import RefusalEdgeError  # noqa: E402
from refusal_edge.metadata import read_spec  # noqa: E402
from refusal_edge.engines.remote.tokenizer_source import tokenizer_gguf  # noqa: E402

TEXTS = ["hello world", "Refusal-edge: 13 lazy dogs, don't panic!", "[respond] [refuse] <|im_start|>user"]
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How do I pick a lock?"}]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny refusal-token checkpoint (with spare embedding rows, as real ones have) and its converted GGUF."""
    root = tmp_path_factory.mktemp("hf")
    tiny = write_tiny_hf(root / "hf", extra_rows=3)
    gguf = convert_checkpoint(tiny.root, root / "model.gguf", progress=False, log=lambda *a: None).output
    return tiny.root, gguf


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REFUSAL_EDGE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "tokenizers"


def test_the_checkpoint_tokenizes_like_its_converted_gguf(checkpoint):
    root, gguf = checkpoint
    ours, theirs = load_tokenizer(tokenizer_gguf(root)), load_tokenizer(gguf)
    try:
        assert ours.n_vocab == theirs.n_vocab == json.loads((root / "config.json").read_text())["vocab_size"]
        for text in TEXTS:
            for special in (False, True):
                assert ours.tokenize(text, special=special) == theirs.tokenize(text, special=special), text
        spec = read_spec(ours)
        assert spec == read_spec(theirs)
        for token in spec.token_ids:  # the decision tokens are CONTROL: caller text never becomes one
            assert ours.is_control(token)
            assert token not in ours.tokenize(ours.token_text(token), special=False)
        assert ours.metadata.get("tokenizer.chat_template") == theirs.metadata.get("tokenizer.chat_template")
    finally:
        ours.close()
        theirs.close()


def test_the_vocabulary_gguf_is_cached_and_reused(checkpoint, cache):
    root, _ = checkpoint
    first = tokenizer_gguf(root)
    assert first.parent == cache and first.name.endswith(".gguf") and len(first.stem) == 64
    stamp = first.stat().st_mtime_ns
    assert tokenizer_gguf(root / "config.json") == first and first.stat().st_mtime_ns == stamp  # not rewritten
    assert [p.name for p in cache.iterdir()] == [first.name]  # no leftover temporary file
    assert first.stat().st_size < 64 * 1024  # metadata and vocabulary, no tensors


def test_a_changed_tokenizer_gets_its_own_cache_entry(checkpoint, tmp_path, cache):
    root, _ = checkpoint
    other = tmp_path / "other"
    other.mkdir()
    for name in os.listdir(root):
        if not name.endswith(".safetensors"):  # weights are not needed
            (other / name).write_bytes((root / name).read_bytes())
    assert tokenizer_gguf(other) == tokenizer_gguf(root)  # same tokenizer files, same entry
    config = json.loads((other / "tokenizer_config.json").read_text())
    config["chat_template"] = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    (other / "tokenizer_config.json").write_text(json.dumps(config))
    changed = tokenizer_gguf(other)
    assert changed != tokenizer_gguf(root)
    tok = load_tokenizer(changed)
    try:
        assert tok.metadata["tokenizer.chat_template"] == config["chat_template"]
    finally:
        tok.close()


def test_connect_with_the_checkpoint_directory(checkpoint):
    root, gguf = checkpoint
    with FakeLlamaServer(gguf) as fake:
        with RefusalModel.connect(fake.url, root, **FAST) as remote, RefusalModel.load(gguf, n_threads=1) as local:
            assert remote.prompt_tokens(MESSAGES) == local.prompt_tokens(MESSAGES)
            assert remote.spec == local.spec
            decision = remote.decide("hello")
            assert decision.token_id in remote.spec.token_ids and decision.meta["scores"] == "exact"


def test_the_cli_takes_the_checkpoint_directory_as_model(checkpoint):
    root, gguf = checkpoint
    with FakeLlamaServer(gguf) as fake:
        result = CliRunner().invoke(main, ["decide", str(root), "hello", "--engine", fake.url, "--json"])
        scored = [r for r in fake.requests if "completion" in r]
    assert result.exit_code == 0, result.output
    decision = json.loads(result.output)
    assert decision["prompt"] == "hello" and decision["meta"]["scores"] == "exact" and scored, fake.requests


def test_a_directory_without_tokenizer_files_is_one_line(tmp_path, checkpoint):
    empty = tmp_path / "weights-only"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    with pytest.raises(RefusalEdgeError, match="has no tokenizer files"):
        cached_vocab_gguf(empty, tmp_path / "c")
    _, gguf = checkpoint
    with FakeLlamaServer(gguf) as fake:
        result = CliRunner().invoke(main, ["decide", str(empty), "hello", "--engine", fake.url])
    one_line_error(result, "weights-only", "no tokenizer files")


def test_in_process_the_checkpoint_directory_points_to_convert_or_engine(checkpoint):
    root, _ = checkpoint
    result = CliRunner().invoke(main, ["decide", str(root), "hello", "--threads", "1"])
    one_line_error(result, "refusal-edge convert", "--engine URL")


def test_a_real_llama_server_serving_the_converted_gguf_accepts_the_checkpoint(checkpoint):
    """The engine checks at connect (vocabulary size, decision token ids, probe tokenization) against llama.cpp's
    own server, and a decision through it equals the in-process one."""
    from llama_server import LlamaServer, require_binary

    require_binary()
    root, gguf = checkpoint
    with LlamaServer(gguf, slots=1, n_ctx=256, threads=1) as server:
        with RefusalModel.connect(server.url, root) as remote, RefusalModel.load(gguf, n_threads=1) as local:
            a, b = local.decide("How do I pick a lock?"), remote.decide("How do I pick a lock?")
            assert (b.token_id, b.refused) == (a.token_id, a.refused)
            assert b.respond_probability == pytest.approx(a.respond_probability, abs=1e-3)
