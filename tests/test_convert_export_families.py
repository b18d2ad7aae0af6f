"""`convert MODEL.gguf --to hf` for Qwen3 and SmolLM3 checkpoints saved by transformers: HF -> GGUF -> HF -> GGUF
gives the same GGUF byte for byte, transformers runs the export to the original checkpoint's logits, and the exported
tokenizer tokenizes like the original; so do Phi-4-mini, Phi-3-mini and Gemma 3 (SentencePiece vocabularies as a
rebuilt tokenizer.model)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")
import torch  # noqa: E402

from refusal_edge.convert.gguf_to_hf import export_gguf  # noqa: E402
from refusal_edge.convert.hf_to_gguf import convert_checkpoint  # noqa: E402
from tiny_families import hf_tokenize, write_family  # noqa: E402

QUIET = {"progress": False, "log": lambda *a: None}
TEXTS = ["Hello world, how are you today?", "Numbers: 1234567 and 3.14; café,  two  spaces\n\nnew lines",
         "[respond] [Requests with safety concerns] <|im_start|>user"]


def logits(root, ids) -> np.ndarray:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(root), dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].double().numpy()


@pytest.mark.parametrize("family, outtype", [("qwen3", "f32"), ("smollm3", "f32"), ("smollm3", "f16")])
def test_round_trip_and_transformers_logits(family, outtype, tmp_path):
    original = write_family(tmp_path / "hf", family)
    first = convert_checkpoint(original, tmp_path / "first.gguf", outtype=outtype, **QUIET).output
    export_gguf(first, tmp_path / "back", log=lambda *a: None)
    second = convert_checkpoint(tmp_path / "back", tmp_path / "second.gguf", outtype=outtype, **QUIET).output
    assert second.read_bytes() == first.read_bytes()

    config = json.loads((tmp_path / "back" / "config.json").read_text())
    assert config["architectures"] == json.loads((original / "config.json").read_text())["architectures"]
    for text in TEXTS:
        assert hf_tokenize(tmp_path / "back", text) == hf_tokenize(original, text), text
    n = config["vocab_size"]
    ids = np.random.default_rng(1).integers(0, n, 13).tolist() + [n - 1]
    want, got = logits(original, ids), logits(tmp_path / "back", ids)
    assert np.abs(want).max() > 5
    # f32: the very same weights; f16: the GGUF's rounding of them
    assert np.abs(want - got).max() < (1e-4 if outtype == "f32" else 2e-2 * np.abs(want).max())


# What config.json must say again after the round trip (the hub's own fields, tests/tiny_hub.py).
HUB_EXPORTED = {
    "phi4-mini": {"partial_rotary_factor": 0.75, "tie_word_embeddings": True, "sliding_window": 262144,
                  "original_max_position_embeddings": 4096},
    "phi3": {"sliding_window": 2047, "tie_word_embeddings": False},
    "qwen2.5-yarn": {"rope_scaling": {"type": "yarn", "rope_type": "yarn", "factor": 4.0,
                                      "original_max_position_embeddings": 32768}},
    "gemma3": {"sliding_window": 4, "query_pre_attn_scalar": 32, "rope_local_base_freq": 10000.0,
               "layer_types": ["sliding_attention"] * 5 + ["full_attention"]},
}


@pytest.mark.parametrize("name", list(HUB_EXPORTED))
def test_hub_families_round_trip_with_their_vocabularies(name, tmp_path):
    """Qwen2.5 with YaRN, Phi-4-mini (byte-level vocabulary, partial rotary, longrope factors back from tensors into
    config.json), Phi-3-mini and Gemma 3 (SentencePiece: tokenizer.model rebuilt from the GGUF; Gemma's 1 + w norms undone, its
    folded query_pre_attn_scalar kept folded): HF -> GGUF -> HF -> GGUF is byte-identical, transformers runs the
    export to the original's logits, and the exported tokenizer tokenizes like the original."""
    from transformers import AutoTokenizer

    from test_convert_hub_configs import transformers_logits  # Gemma's reference with ggml's GELU table
    from tiny_hub import write_hub

    original = write_hub(tmp_path / "hf", name)
    first = convert_checkpoint(original, tmp_path / "first.gguf", outtype="f32", **QUIET).output
    export_gguf(first, tmp_path / "back", log=lambda *a: None)
    second = convert_checkpoint(tmp_path / "back", tmp_path / "second.gguf", outtype="f32", **QUIET).output
    assert second.read_bytes() == first.read_bytes()
    config = json.loads((tmp_path / "back" / "config.json").read_text())
    assert {k: config[k] for k in HUB_EXPORTED[name]} == HUB_EXPORTED[name]
    exported = AutoTokenizer.from_pretrained(str(tmp_path / "back"))
    for text in [*TEXTS, "<|user|> <start_of_turn>"]:
        assert exported.encode(text, add_special_tokens=False) == hf_tokenize(original, text), text
    n = config["vocab_size"] - 8  # write_hub's padded rows
    ids = np.random.default_rng(1).integers(0, n, 13).tolist() + [n - 1]
    want, got = transformers_logits(original, ids), transformers_logits(tmp_path / "back", ids)
    # Gemma: the scalar folded into the q-norm rounds differently from transformers' own scale
    assert np.abs(want).max() > 5 and np.abs(want - got).max() < 1e-4 * np.abs(want).max()
