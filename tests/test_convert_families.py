"""Qwen3, SmolLM3, Phi-3 and Gemma 3 checkpoints saved by transformers convert, load in llama.cpp and match
transformers' own forward pass; their refusal tokens are CONTROL and decide as transformers' logits do."""

from __future__ import annotations

import json
from dataclasses import replace

import gguf
import numpy as np
import pytest

from conftest import THREADS
from refusal_edge.convert import architectures
from refusal_edge.convert.errors import ConversionError
from refusal_edge.convert.hf_to_gguf import convert_checkpoint
from refusal_edge.convert.llama_tensors import arch_params
from refusal_edge import RefusalModel

pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")
import torch  # noqa: E402

from tiny_families import hf_tokenize, write_family  # noqa: E402

FAMILIES = ["qwen3", "smollm3", "phi3", "gemma3"]
TEXTS = ["Hello world, how are you today?", "please tell me a story about the sea and the sky.",
         "Numbers: 1234567 and 3.14; emoji 🙂 and café,  two  spaces\n\nnew lines"]
GGML_F32 = 0  # llama.cpp's KV cache defaults to f16, which alone moves these logits by ~1e-2


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {f: write_family(root / f, f) for f in FAMILIES}


@pytest.fixture(scope="module")
def f32_ggufs(checkpoints, tmp_path_factory):
    out = tmp_path_factory.mktemp("f32")
    return {f: convert_checkpoint(p, out / f"{f}.gguf", outtype="f32", progress=False).output
            for f, p in checkpoints.items()}


def probe(root) -> list[int]:
    n = json.loads((root / "config.json").read_text())["vocab_size"]
    return np.random.default_rng(1).integers(0, n, 13).tolist() + [n - 1]  # ends on a refusal token


def transformers_logits(root, ids, model=None) -> np.ndarray:
    from transformers import AutoModelForCausalLM

    model = model or AutoModelForCausalLM.from_pretrained(str(root), dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def llama_logits(path, ids, f32_cache=True) -> np.ndarray:
    # through the runtime's loader, which keeps llama.cpp's AMX kernels off where they crash on quantized weights
    from refusal_edge.engines.llama.vocab import load_llama

    kv = {"type_k": GGML_F32, "type_v": GGML_F32} if f32_cache else {}
    llm = load_llama(path, n_ctx=64, n_threads=THREADS, n_batch=64, logits_all=True, **kv)
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float64)
    finally:
        llm.close()


class GeluAsGGML(torch.nn.Module):
    """tanh-GELU through an fp16 table, as ggml's CPU kernel computes it (input and output rounded to fp16)."""

    def forward(self, x):
        return torch.nn.functional.gelu(x.half().float(), approximate="tanh").half().float()


@pytest.mark.parametrize("family", FAMILIES)
def test_f32_logits_match_transformers_at_every_position(family, checkpoints, f32_ggufs):
    ids = probe(checkpoints[family])
    want, got = transformers_logits(checkpoints[family], ids), llama_logits(f32_ggufs[family], ids)
    assert np.abs(want).max() > 5  # logits large enough for a wrong convention to show
    tolerance = 5e-3 if family == "gemma3" else 1e-3  # Gemma: ggml's fp16 GELU table, matched exactly below
    assert np.abs(want - got).max() < tolerance
    assert (want.argmax(-1) == got.argmax(-1)).all()


def test_gemma3_matches_to_1e4_once_the_reference_uses_ggml_gelu(checkpoints, f32_ggufs):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(checkpoints["gemma3"]), dtype=torch.float32).eval()
    for layer in model.model.layers:
        layer.mlp.act_fn = GeluAsGGML()
    ids = probe(checkpoints["gemma3"])
    want = transformers_logits(None, ids, model)
    assert np.abs(want - llama_logits(f32_ggufs["gemma3"], ids)).max() < 1e-4


# f16/bf16/q8_0 weights (and the default f16 KV cache): looser, relative to the logit scale.
# q8_0 also quantizes the activations to 8 bits, and four random layers amplify that.
@pytest.mark.parametrize("outtype, rel", [("f16", 5e-3), ("bf16", 3e-2), ("q8_0", 0.1)])
@pytest.mark.parametrize("family", FAMILIES)
def test_other_outtypes_match_within_their_precision(family, outtype, rel, checkpoints, tmp_path):
    path = convert_checkpoint(checkpoints[family], tmp_path / "m.gguf", outtype=outtype, progress=False).output
    ids = probe(checkpoints[family])
    want, got = transformers_logits(checkpoints[family], ids)[-1], llama_logits(path, ids, f32_cache=False)[-1]
    assert np.abs(want - got).max() <= rel * np.abs(want).max()
    assert want.argmax() == got.argmax()


@pytest.mark.parametrize("family", FAMILIES)
def test_refusal_tokens_are_control_and_decide_as_transformers_does(family, checkpoints, tmp_path):
    probes = [[{"role": "user", "content": t}] for t in TEXTS]
    result = convert_checkpoint(checkpoints[family], tmp_path / "m.gguf", verify=True, probes=probes,
                                threads=THREADS, progress=False, log=lambda s: None)
    f16 = result.report["candidates"]["f16"]
    assert f16["decision_agreement"] == 1.0 and max(f16["max_abs_delta_p"].values()) < 0.05
    with RefusalModel.load(result.output, n_ctx=128, n_threads=THREADS) as model:
        assert model.spec.respond.token == "[respond]" and len(model.spec.categories) == 5
        assert all(model.tokenizer.is_control(i) for i in model.spec.token_ids)
        spelled = model.tokenizer.tokenize(" ".join(r.token for r in model.spec.refs), special=False)
        assert not set(spelled) & set(model.spec.token_ids)
        assert model.tokenizer.is_eog(model.tokenizer.eos)


@pytest.mark.parametrize("family", FAMILIES)
def test_tokenization_and_chat_template_match_the_checkpoint(family, checkpoints, f32_ggufs):
    with RefusalModel.load(f32_ggufs[family], n_ctx=128, n_threads=THREADS) as model:
        for text in TEXTS:
            assert model.tokenizer.tokenize(text, special=False) == hf_tokenize(checkpoints[family], text), text
        marker = {"qwen3": "<|im_start|>", "smollm3": "<|im_start|>", "phi3": "<|user|>",
                  "gemma3": "<start_of_turn>"}[family]
        (marker_id,) = model.tokenizer.tokenize(marker, special=True)
        assert model.tokenizer.is_control(marker_id) and marker_id in model.prompt_tokens("hi")


def test_gemma3_from_its_tokenizer_json_alone(tmp_path):
    """Without tokenizer.model: the byte-fallback BPE tokenizer.json becomes llama.cpp's SentencePiece vocabulary."""
    root = write_family(tmp_path / "hf", "gemma3", tokenizer_json_only=True)
    path = convert_checkpoint(root, tmp_path / "g.gguf", progress=False).output
    fields = gguf.GGUFReader(path).fields
    assert fields["tokenizer.ggml.model"].contents() == "llama"
    assert fields["tokenizer.ggml.add_space_prefix"].contents() is False
    with RefusalModel.load(path, n_ctx=128, n_threads=THREADS) as model:
        for text in TEXTS:
            assert model.tokenizer.tokenize(text, special=False) == hf_tokenize(root, text), text
        assert all(model.tokenizer.is_control(i) for i in model.spec.token_ids)


def test_family_keys_and_tensors(f32_ggufs):
    def read(family):
        r = gguf.GGUFReader(f32_ggufs[family])
        return {k: f.contents() for k, f in r.fields.items() if not k.startswith("tokenizer.")}, \
            {t.name: t for t in r.tensors}

    kv, tensors = read("qwen3")
    assert kv["general.architecture"] == "qwen3" and kv["qwen3.attention.key_length"] == 32
    assert "blk.0.attn_q_norm.weight" in tensors and "output.weight" not in tensors  # tied
    kv, tensors = read("phi3")
    assert kv["phi3.rope.dimension_count"] == 8 and kv["phi3.rope.scaling.original_context_length"] == 256
    assert kv["phi3.rope.scaling.attn_factor"] == pytest.approx((1 + np.log(4) / np.log(256)) ** 0.5)
    assert "blk.0.attn_qkv.weight" in tensors and tensors["blk.0.ffn_up.weight"].shape[1] == 2 * 96
    assert list(tensors["rope_factors_short.weight"].data) == [1.0, 1.25, 1.5, 1.75]
    kv, tensors = read("gemma3")
    assert kv["gemma3.attention.sliding_window"] == 4
    assert kv["gemma3.attention.sliding_window_pattern"] == [True, True, False, True]
    assert kv["gemma3.rope.freq_base_swa"] == 1e4 and kv["gemma3.rope.scaling.factor"] == 8.0
    assert {"blk.0.post_attention_norm.weight", "blk.0.post_ffw_norm.weight"} <= set(tensors)


def _without_sliding_window(config, p):
    keys = architectures._gemma3_keys(config, p)
    return {k: v for k, v in keys.items() if not k.startswith("attention.sliding_window")}


# Negative controls: drop one convention and the same comparison fails, so the matches above are sensitive to it.
@pytest.mark.parametrize("family, change", [
    ("smollm3", {"permute_qk": False}),
    ("gemma3", {"norm_offset": 0.0}),
    ("gemma3", {"q_norm_scale": lambda config, p: 1.0}),
    ("gemma3", {"keys": _without_sliding_window}),
])
def test_each_convention_is_what_makes_it_match(family, change, checkpoints, tmp_path, monkeypatch):
    hf_arch = json.loads((checkpoints[family] / "config.json").read_text())["architectures"][0]
    monkeypatch.setitem(architectures.FAMILIES, hf_arch, replace(architectures.FAMILIES[hf_arch], **change))
    path = convert_checkpoint(checkpoints[family], tmp_path / "m.gguf", outtype="f32", progress=False,
                            check_load=False).output
    ids = probe(checkpoints[family])
    want = transformers_logits(checkpoints[family], ids)
    assert np.abs(want - llama_logits(path, ids)).max() > 0.1  # 20x the loosest tolerance above


@pytest.mark.parametrize("family, edit, match", [
    ("smollm3", {"no_rope_layers": [1, 0, 1, 1]}, "RoPE off on every 4th layer"),
    ("qwen3", {"use_sliding_window": True, "sliding_window": 16}, "use_sliding_window"),
    ("gemma3", {"attn_logit_softcapping": 50.0}, "attn_logit_softcapping"),
    ("phi3", {"head_dim": 8}, "hidden_size"),
    ("phi3", {"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}}, "yarn"),
])
def test_what_llama_cpp_cannot_run_is_refused(family, edit, match, checkpoints):
    config = {**json.loads((checkpoints[family] / "config.json").read_text()), **edit}
    with pytest.raises(ConversionError, match=match):
        arch_params(config)
