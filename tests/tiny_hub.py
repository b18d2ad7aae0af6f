"""Tiny checkpoints whose config.json is written as the Hugging Face hub ships each family's: the legacy layout
(``rope_theta`` + ``rope_scaling`` with ``type`` or ``rope_type``, a top-level ``partial_rotary_factor``,
``sliding_window_pattern`` instead of ``layer_types``) and the real fields (llama3 / yarn / longrope scaling, sliding
windows, attention bias, tied and untied embeddings, ``head_dim`` != hidden / heads), with tiny sizes.

transformers builds the model from that config.json, the weights are randomised and saved, and config.json is then
written back exactly as the hub has it (transformers would rewrite it in its own newer layout), so the converter
and the reference read the same file.
"""

from __future__ import annotations

import json
from pathlib import Path

from tiny_families import _bpe_tokenizer, _randomize, _spm_tokenizer
from tiny_hf import pre_tokenizer, refusal_strings, tokenizer_json
from tiny_model import CORPUS, train_bpe

TINY = dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
            initializer_range=0.02, attention_dropout=0.0, use_cache=True, torch_dtype="bfloat16",
            bos_token_id=None, eos_token_id=None, pad_token_id=None)  # the hub's ids are beyond the tiny vocabularies
PHI4_SPECIALS = ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
PHI4_TEMPLATE = ("{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] + '<|end|>' }}{% endfor %}"
                 "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}")

# name -> (tokenizer kind, the hub config.json less the tiny sizes above); comments name the model each follows.
HUB: dict[str, tuple[str, dict]] = {
    # Llama 3.2 1B: llama3 rope scaling, tied embeddings, an explicit head_dim (equal to hidden / heads there)
    "llama3.2": ("llama-bpe", dict(
        architectures=["LlamaForCausalLM"], model_type="llama", attention_bias=False, mlp_bias=False, head_dim=16,
        hidden_act="silu", max_position_embeddings=131072, pretraining_tp=1, rms_norm_eps=1e-5, rope_theta=500000.0,
        rope_scaling={"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                      "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        tie_word_embeddings=True)),
    # Qwen2.5 0.5B: q/k/v biases, tied, a sliding window that is off (use_sliding_window false), padded embeddings
    "qwen2.5": ("qwen2", dict(
        architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_act="silu", max_position_embeddings=32768,
        max_window_layers=21, rms_norm_eps=1e-6, rope_theta=1000000.0, sliding_window=32768, use_sliding_window=False,
        tie_word_embeddings=True)),
    # Qwen2.5 7B with the long-context setting its model card gives: YaRN (legacy "type" key), untied
    "qwen2.5-yarn": ("qwen2", dict(
        architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_act="silu", max_position_embeddings=32768,
        max_window_layers=28, rms_norm_eps=1e-6, rope_theta=1000000.0, sliding_window=131072,
        use_sliding_window=False, tie_word_embeddings=False,
        rope_scaling={"factor": 4.0, "original_max_position_embeddings": 32768, "type": "yarn"})),
    # Qwen3 0.6B: head_dim 128 != 1024 / 16 (here 32 != 64 / 4), q/k norms, tied
    "qwen3": ("qwen2", dict(
        architectures=["Qwen3ForCausalLM"], model_type="qwen3", attention_bias=False, head_dim=32, hidden_act="silu",
        max_position_embeddings=40960, max_window_layers=28, rms_norm_eps=1e-6, rope_scaling=None,
        rope_theta=1000000, sliding_window=None, use_sliding_window=False, tie_word_embeddings=True)),
    # Gemma 3 (1B's layout, 4B's linear scaling): sliding_window_pattern (no layer_types), query_pre_attn_scalar
    "gemma3": ("gemma3", dict(
        architectures=["Gemma3ForCausalLM"], model_type="gemma3_text", attention_bias=False,
        attn_logit_softcapping=None, final_logit_softcapping=None, head_dim=32, hidden_activation="gelu_pytorch_tanh",
        max_position_embeddings=32768, num_hidden_layers=6, query_pre_attn_scalar=24, rms_norm_eps=1e-6,
        rope_local_base_freq=10000, rope_scaling={"factor": 8.0, "rope_type": "linear"}, rope_theta=1000000,
        sliding_window=4, sliding_window_pattern=6, tie_word_embeddings=True, pad_token_id=0, eos_token_id=1,
        bos_token_id=2)),
    # Phi-3-mini-4k: SentencePiece, fused qkv / gate_up, Phi-3's sliding window 2047, untied
    "phi3": ("phi3", dict(
        architectures=["Phi3ForCausalLM"], model_type="phi3", attention_bias=False, embd_pdrop=0.0,
        hidden_act="silu", max_position_embeddings=4096, num_key_value_heads=4, original_max_position_embeddings=4096,
        resid_pdrop=0.0, rms_norm_eps=1e-5, rope_scaling=None, rope_theta=10000.0, sliding_window=2047,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=None)),
    # Phi-4-mini: byte-level BPE (gpt-4o pre-tokenizer), partial rotary 0.75, longrope, sliding window, tied
    "phi4-mini": ("gpt-4o", dict(
        architectures=["Phi3ForCausalLM"], model_type="phi3", attention_bias=False, embd_pdrop=0.0, full_attn_mod=1,
        hidden_act="silu", interpolate_factor=1, lm_head_bias=False, max_position_embeddings=131072, mlp_bias=False,
        original_max_position_embeddings=4096, partial_rotary_factor=0.75, resid_pdrop=0.0, rms_norm_eps=1e-5,
        rope_scaling={"long_factor": [1.0, 1.2, 2.5, 6.0, 17.0, 40.0],
                      "short_factor": [1.0, 1.05, 1.1, 1.3, 1.6, 2.0], "type": "longrope"},
        rope_theta=10000.0, sliding_window=262144, tie_word_embeddings=True)),
    # SmolLM3 3B: RoPE off on every 4th layer (no_rope_layers), tied
    "smollm3": ("llama-bpe", dict(
        architectures=["SmolLM3ForCausalLM"], model_type="smollm3", attention_bias=False, mlp_bias=False,
        hidden_act="silu", max_position_embeddings=65536, max_window_layers=28, no_rope_layer_interval=4,
        no_rope_layers=[1, 1, 1, 0], num_hidden_layers=4, pretraining_tp=2, rms_norm_eps=1e-6, rope_scaling=None,
        rope_theta=5000000.0, sliding_window=None, use_sliding_window=False, tie_word_embeddings=True)),
    # Mistral (Nemo's head_dim 128 != 5120 / 32; here 32 != 64 / 4): SentencePiece, untied, no sliding window
    "mistral": ("spm", dict(
        architectures=["MistralForCausalLM"], model_type="mistral", head_dim=32, hidden_act="silu",
        max_position_embeddings=32768, rms_norm_eps=1e-5, rope_theta=1000000.0, sliding_window=None,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)),
}


def _tokenizer(root: Path, kind: str, refusal: list[str]) -> int:
    if kind in ("phi3", "gemma3", "spm"):
        return _spm_tokenizer(root, "gemma3" if kind == "gemma3" else "phi3", refusal)
    if kind == "gpt-4o":  # the tiny BPE with Phi-4-mini's pre-tokenizer, special tokens and tokenizer class
        base, merges = train_bpe(CORPUS, 120)
        added = [(len(base) + i, t, True) for i, t in enumerate(PHI4_SPECIALS)]
        added += [(len(base) + len(added) + i, t, False) for i, t in enumerate(refusal)]
        config = {"tokenizer_class": "GPT2Tokenizer", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
                  "unk_token": "<|endoftext|>", "add_bos_token": False, "chat_template": PHI4_TEMPLATE}
        tok = tokenizer_json(base, merges, added, pre_tokenizer("gpt-4o"))
        (root / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")
        (root / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
        return len(base) + len(added)
    return _bpe_tokenizer(root, "qwen3" if kind == "qwen2" else "smollm3", refusal)


def write_hub(root: str | Path, name: str, *, seed: int = 0, extra_rows: int = 8) -> Path:
    """A tiny ``name`` checkpoint (a key of HUB) with the hub's config.json; ``extra_rows`` pads the embedding
    beyond the tokenizer, as the hub's Qwen, Phi and Llama checkpoints do."""
    import transformers

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    kind, fields = HUB[name]
    n_vocab = _tokenizer(root, kind, refusal_strings("categories"))
    config = {**TINY, **fields, "vocab_size": n_vocab + extra_rows}
    (root / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.from_pretrained(str(root)))
    _randomize(model.eval(), seed)
    model.save_pretrained(str(root))
    (root / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    return root
