"""Checkpoints whose config.json is the hub's own (tests/tiny_hub.py): Llama 3.2, Qwen2.5 (plain and YaRN), Qwen3,
Gemma 3, Phi-3-mini, Phi-4-mini, SmolLM3 and Mistral convert, pass the load check, match transformers at f32 and
decide with CONTROL refusal tokens; what the converter cannot reproduce is refused before anything is written."""

from __future__ import annotations

import json
import shutil

import gguf
import numpy as np
import pytest

from conftest import THREADS
from refusal_edge import RefusalModel
from refusal_edge.convert.errors import ConversionError
from refusal_edge.convert.hf_to_gguf import convert_checkpoint

pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")
import torch  # noqa: E402

from test_convert_families import TEXTS, GeluAsGGML, llama_logits  # noqa: E402
from tiny_families import hf_tokenize  # noqa: E402
from tiny_hub import HUB, write_hub  # noqa: E402

PAD_ROWS = 8  # write_hub's padded embedding rows


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """name -> checkpoint directory, built on first use."""
    built: dict = {}
    root = tmp_path_factory.mktemp("hub")

    def get(name):
        if name not in built:
            built[name] = write_hub(root / name, name, extra_rows=PAD_ROWS)
        return built[name]

    return get


def probe(root) -> list[int]:
    n = json.loads((root / "config.json").read_text())["vocab_size"] - PAD_ROWS
    return np.random.default_rng(1).integers(0, n, 13).tolist() + [n - 1]  # ends on a refusal token


def transformers_logits(root, ids) -> np.ndarray:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(root), dtype=torch.float32).eval()
    if model.config.model_type.startswith("gemma"):  # ggml's tanh-GELU goes through an fp16 table
        for layer in model.model.layers:
            layer.mlp.act_fn = GeluAsGGML()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


# What each family's file must hold beyond what every conversion has (key or tensor name -> value or presence).
EXPECTED = {
    "llama3.2": {"tensor:rope_freqs.weight": True, "tensor:output.weight": False},
    "qwen2.5": {"tensor:blk.0.attn_q.bias": True, "tensor:output.weight": False},
    "qwen2.5-yarn": {"qwen2.rope.scaling.type": "yarn", "qwen2.rope.scaling.factor": 4.0,
                     "qwen2.rope.scaling.original_context_length": 32768, "tensor:output.weight": True},
    "qwen3": {"qwen3.attention.key_length": 32},
    "gemma3": {"gemma3.attention.sliding_window_pattern": [True] * 5 + [False], "gemma3.rope.scaling.factor": 8.0},
    "phi3": {"tokenizer.ggml.model": "llama", "phi3.attention.sliding_window": 2047, "tensor:output.weight": True},
    "phi4-mini": {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt-4o", "phi3.rope.dimension_count": 12,
                  "tensor:rope_factors_long.weight": True, "tensor:output.weight": False},
    "smollm3": {"general.architecture": "smollm3"},
    "mistral": {"llama.attention.key_length": 32, "tokenizer.ggml.model": "llama"},
}


@pytest.mark.parametrize("name", list(HUB))
def test_hub_config_converts_checks_and_matches_transformers(name, hub, tmp_path):
    root = hub(name)
    lines: list[str] = []
    out = convert_checkpoint(root, tmp_path / "m.gguf", outtype="f32", threads=THREADS, progress=False,
                             log=lines.append).output
    assert any(s.startswith("checked: llama.cpp loads it") and "logits match" in s for s in lines), lines

    reader = gguf.GGUFReader(out)
    tensors = {t.name for t in reader.tensors}
    for key, value in EXPECTED[name].items():
        if key.startswith("tensor:"):
            assert (key[7:] in tensors) is value, key
        else:
            got = reader.fields[key].contents()
            assert got == (pytest.approx(value) if isinstance(value, float) else value), key

    ids = probe(root)
    want, got = transformers_logits(root, ids), llama_logits(out, ids)
    assert np.abs(want).max() > 5  # large enough for a wrong convention to show
    assert np.abs(want - got).max() <= 1e-3

    with RefusalModel.load(out, n_ctx=128, n_threads=THREADS) as model:
        assert len(model.spec.categories) == 5
        assert all(model.tokenizer.is_control(i) for i in model.spec.token_ids)
        for text in TEXTS:
            assert model.tokenizer.tokenize(text, special=False) == hf_tokenize(root, text), text


def test_phi4_mini_in_a_directory_named_phi3(hub, tmp_path):
    """llama.cpp's Phi-3 name rule looks up </s> and <s>, which a byte-level vocabulary lacks: the name is changed,
    with a note, and the file loads."""
    root = shutil.copytree(hub("phi4-mini"), tmp_path / "phi3-mini-bpe-refusal")
    lines: list[str] = []
    out = convert_checkpoint(root, tmp_path / "m.gguf", threads=THREADS, progress=False, log=lines.append).output
    assert any("is written as 'phi 3-mini-bpe-refusal'" in s for s in lines)
    assert gguf.GGUFReader(out).fields["general.name"].contents() == "phi 3-mini-bpe-refusal"
    with RefusalModel.load(out, n_ctx=64, n_threads=THREADS) as model:
        assert all(model.tokenizer.is_control(i) for i in model.spec.token_ids)


@pytest.mark.parametrize("name, edit, field", [
    ("llama3.2", {"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, "'dynamic'"),
    ("llama3.2", {"mlp_bias": True}, "mlp_bias"),
    ("mistral", {"attention_bias": True}, "attention_bias"),
    ("smollm3", {"hidden_act": "gelu"}, "hidden_act"),
    ("qwen2.5", {"use_sliding_window": True}, "use_sliding_window"),
    ("qwen2.5-yarn", {"rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768,
                                       "mscale": 0.7}}, "mscale"),
    ("phi4-mini", {"partial_rotary_factor": 0.5}, "long_factor and short_factor"),
    ("gemma3", {"attn_logit_softcapping": 50.0}, "attn_logit_softcapping"),
])
def test_what_cannot_be_reproduced_is_refused_before_writing(name, edit, field, hub, tmp_path):
    root = shutil.copytree(hub(name), tmp_path / "hf")
    config = json.loads((root / "config.json").read_text())
    (root / "config.json").write_text(json.dumps({**config, **edit}))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(ConversionError, match=field):
        convert_checkpoint(root, out_dir / "m.gguf", progress=False, log=lambda s: None)
    assert list(out_dir.iterdir()) == []
