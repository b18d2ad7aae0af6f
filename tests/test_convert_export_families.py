"""`convert MODEL.gguf --to hf` for Qwen3 and SmolLM3 checkpoints saved by transformers: HF -> GGUF -> HF -> GGUF
gives the same GGUF byte for byte, transformers runs the export to the original checkpoint's logits, and the exported
tokenizer tokenizes like the original; so does Phi-4-mini (Phi-3 with a byte-level vocabulary). Phi-3-mini
(SentencePiece) and Gemma 3 GGUFs are refused with the reason."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")
import torch  # noqa: E402

from refusal_edge.convert.errors import ConversionError  # noqa: E402
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


def test_phi4_mini_round_trip_and_transformers_logits(tmp_path):
    """Phi-3's architecture with a byte-level vocabulary: partial rotary, longrope factors (tensors in the GGUF,
    config.json values on the Hugging Face side), the window and tied embeddings come back."""
    from tiny_hub import write_hub

    original = write_hub(tmp_path / "hf", "phi4-mini")
    first = convert_checkpoint(original, tmp_path / "first.gguf", outtype="f32", **QUIET).output
    export_gguf(first, tmp_path / "back", log=lambda *a: None)
    second = convert_checkpoint(tmp_path / "back", tmp_path / "second.gguf", outtype="f32", **QUIET).output
    assert second.read_bytes() == first.read_bytes()
    config = json.loads((tmp_path / "back" / "config.json").read_text())
    assert config["partial_rotary_factor"] == 0.75 and config["rope_scaling"]["type"] == "longrope"
    assert config["tie_word_embeddings"] and config["sliding_window"] == 262144
    for text in TEXTS:
        assert hf_tokenize(tmp_path / "back", text) == hf_tokenize(original, text), text
    n = config["vocab_size"] - 8  # write_hub's padded rows
    ids = np.random.default_rng(1).integers(0, n, 13).tolist() + [n - 1]
    want, got = logits(original, ids), logits(tmp_path / "back", ids)
    assert np.abs(want).max() > 5 and np.abs(want - got).max() < 1e-4


@pytest.mark.parametrize("family, reason", [
    ("phi3", "the GGUF's vocabulary is 'llama' \\(SentencePiece"),
    ("gemma3", "exporting a 'gemma3' GGUF is not supported: .*query_pre_attn_scalar")])
def test_families_not_exported_are_refused_with_the_reason(family, reason, tmp_path):
    gguf = convert_checkpoint(write_family(tmp_path / "hf", family), tmp_path / "m.gguf", outtype="f32",
                              **QUIET).output
    with pytest.raises(ConversionError, match=reason):
        export_gguf(gguf, tmp_path / "back", log=lambda *a: None)
    assert not (tmp_path / "back").exists() and not list(tmp_path.glob(".back.*"))
