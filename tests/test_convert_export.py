"""`refusal-edge convert MODEL.gguf --to hf`: a GGUF back to a Hugging Face checkpoint. The round trip HF -> GGUF ->
HF -> GGUF gives the same GGUF byte for byte; the exported weights are the original ones (Q/K un-permuted); the
tokenizer files tokenize like the GGUF, the refusal tokens special with their ids; transformers runs the export."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from tiny_hf import reference_logits, write_tiny_hf
from tiny_model import CHATML

from refusal_edge.convert.errors import ConversionError
from refusal_edge.convert.gguf_to_hf import export_gguf
from refusal_edge.convert.hf_source import HFCheckpoint
from refusal_edge.convert.hf_to_gguf import convert_checkpoint
from refusal_edge.cli import main
from refusal_edge.metadata import TOKEN_TYPE_CONTROL

QUIET = {"progress": False, "log": lambda *a: None}
TEXTS = ["hello world", "Refusal-edge: 13 lazy dogs, don't panic!", "[respond] [refuse] <|im_start|>user é 漢字"]


def to_gguf(root, path, outtype="f32"):
    return convert_checkpoint(root, path, outtype=outtype, **QUIET).output


def stored(root) -> dict[str, np.ndarray]:
    return {name: t.numpy() for name, t in HFCheckpoint(root).tensors.items()}


CASES = {  # name: (write_tiny_hf arguments, GGUF outtype, export outtype)
    "llama-f32": ({}, "f32", "f32"),
    "llama-f16": ({"dtype": "F16"}, "f16", "f32"),
    "tied-gqa-spare-rows": ({"tie": True, "n_head_kv": 1, "extra_rows": 3}, "f32", "f32"),
    "qwen2-biases": ({"vocab": "qwen2"}, "f32", "f32"),
    "bf16": ({"dtype": "BF16"}, "bf16", "bf16"),
    "binary": ({"refusal": "binary", "n_layer": 1}, "f16", "f32"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_round_trip_gives_the_same_gguf_and_the_same_weights(tmp_path, case):
    args, gguf_type, hf_type = CASES[case]
    tiny = write_tiny_hf(tmp_path / "hf", **args)
    first = to_gguf(tiny.root, tmp_path / "first.gguf", gguf_type)
    export_gguf(first, tmp_path / "back", outtype=hf_type, log=lambda *a: None)
    second = to_gguf(tmp_path / "back", tmp_path / "second.gguf", gguf_type)
    assert second.read_bytes() == first.read_bytes()
    config = json.loads((tmp_path / "back" / "config.json").read_text())
    assert config["tie_word_embeddings"] == args.get("tie", False)
    assert config["vocab_size"] == tiny.n_vocab and config["num_key_value_heads"] == args.get("n_head_kv", 2)
    if gguf_type == "f16":
        return  # the f32 source was rounded to f16 in the GGUF: the byte-identical GGUF above is the check
    weights = stored(tmp_path / "back")
    expected = {k: v for k, v in tiny.weights.items() if not (args.get("tie") and k == "lm_head.weight")}
    assert weights.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_array_equal(weights[name], value, err_msg=name)


def test_the_tokenizer_files_tokenize_like_the_gguf_with_the_refusal_tokens_special(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from refusal_edge.engines.llama.vocab import load_tokenizer

    tiny = write_tiny_hf(tmp_path / "hf", extra_rows=2)
    gguf = to_gguf(tiny.root, tmp_path / "m.gguf")
    export_gguf(gguf, tmp_path / "back", log=lambda *a: None)
    theirs = tokenizers.Tokenizer.from_file(str(tmp_path / "back" / "tokenizer.json"))
    ours = load_tokenizer(gguf)
    try:
        for text in TEXTS:
            assert theirs.encode(text, add_special_tokens=False).ids == ours.tokenize(text, special=True), text
        from refusal_edge.model import read_spec

        spec = read_spec(ours)
        added = {t["id"]: t for t in json.loads((tmp_path / "back" / "tokenizer.json").read_text())["added_tokens"]}
        for ref in spec.refs:
            assert added[ref.id]["content"] == ref.token and added[ref.id]["special"] is True
            assert ours.is_control(ref.id)
        config = json.loads((tmp_path / "back" / "tokenizer_config.json").read_text())
        assert config["chat_template"] == CHATML
        assert config["eos_token"] == "<|im_end|>" and config["add_bos_token"] is False
    finally:
        ours.close()


def test_transformers_runs_the_export_like_the_original_weights(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    tiny = write_tiny_hf(tmp_path / "hf", n_head_kv=1, tie=True)
    gguf = to_gguf(tiny.root, tmp_path / "m.gguf")
    export_gguf(gguf, tmp_path / "back", log=lambda *a: None)
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "back", dtype=torch.float32)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "back")
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hello there"}], add_generation_prompt=True,
                                         tokenize=False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert "<|im_start|>user\nhello there<|im_end|>" in text and len(ids) > 6
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double().numpy()
    np.testing.assert_allclose(logits, reference_logits(tiny, ids), atol=1e-4)


def test_a_quantized_gguf_exports_its_dequantized_weights(tmp_path):
    tiny = write_tiny_hf(tmp_path / "hf", n_embd=64, n_ff=128)
    gguf = convert_checkpoint(tiny.root, tmp_path / "q.gguf", outtype="q8_0", **QUIET).output
    export_gguf(gguf, tmp_path / "back", log=lambda *a: None)
    weights = stored(tmp_path / "back")
    q = weights["model.layers.0.self_attn.q_proj.weight"]
    original = tiny.weights["model.layers.0.self_attn.q_proj.weight"]
    assert not np.array_equal(q, original)  # quantized values, not the originals
    np.testing.assert_allclose(q, original, atol=np.abs(original).max() / 100)  # but in HF row order


def test_cli_exports_and_names_what_is_wrong(tmp_path):
    tiny = write_tiny_hf(tmp_path / "hf", n_layer=1)
    gguf = to_gguf(tiny.root, tmp_path / "m.gguf")
    run = CliRunner().invoke(main, ["convert", str(gguf), "--to", "hf", "-o", str(tmp_path / "out")])
    assert run.exit_code == 0, run.output
    assert "wrote" in run.output and (tmp_path / "out" / "model.safetensors").is_file()
    again = CliRunner().invoke(main, ["convert", str(gguf), "--to", "hf", "-o", str(tmp_path / "out")])
    assert again.exit_code != 0 and "already exists; pass --force" in again.output
    forced = CliRunner().invoke(main, ["convert", str(gguf), "--to", "hf", "-o", str(tmp_path / "out"), "--force",
                                       "--outtype", "bf16"])
    assert forced.exit_code == 0, forced.output
    assert json.loads((tmp_path / "out" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    for args, message in [
        ([str(gguf), "-o", str(tmp_path / "x.gguf")], "is a GGUF already: pass --to hf"),
        ([str(gguf), "--to", "hf", "-o", str(tmp_path / "y"), "--quant", "q4_k_m"], "--quant makes a GGUF"),
        ([str(gguf), "--to", "hf", "-o", str(tmp_path / "y"), "--outtype", "q8_0"], "choose one of f32, bf16"),
        ([str(tmp_path / "missing.gguf"), "--to", "hf", "-o", str(tmp_path / "y")], "GGUF file not found"),
        ([str(tiny.root / "config.json"), "--to", "hf", "-o", str(tmp_path / "y")], "not a readable GGUF"),
    ]:
        run = CliRunner().invoke(main, ["convert", *args])
        assert run.exit_code != 0 and message in run.output, (args, run.output)
        assert "Traceback" not in run.output
    assert not (tmp_path / "y").exists() and not list(tmp_path.glob(".y.*"))


def test_a_sentencepiece_vocabulary_without_scores_is_refused_clearly(tmp_path):
    import gguf as gguf_py

    path = tmp_path / "spm.gguf"
    w = gguf_py.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(["<unk>", "a"])
    w.add_token_types([2, TOKEN_TYPE_CONTROL])
    for key, value in {"embedding_length": 8, "attention.head_count": 2, "feed_forward_length": 8,
                       "block_count": 0, "context_length": 16}.items():
        w.add_uint32(f"llama.{key}", value)
    w.add_tensor("token_embd.weight", np.zeros((2, 8), dtype=np.float32))
    w.add_tensor("output_norm.weight", np.ones(8, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ConversionError, match="SentencePiece vocabulary has no scores"):
        export_gguf(path, tmp_path / "out", log=lambda *a: None)
    assert not (tmp_path / "out").exists()
