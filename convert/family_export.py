"""config.json keys of the families whose GGUF holds more than the common hyperparameters (GGUF -> HF export).

Phi-3: partial rotary, the original context, the window and longrope (its factors are tensors in the GGUF, values in
config.json). Gemma 3: the per-layer window pattern, the local rope base, tanh-GELU, and ``query_pre_attn_scalar``
equal to the scale llama.cpp uses: the GGUF's q-norm weights hold the checkpoint's own scalar folded in
(``architectures.gemma3_attention_fold``), so the export keeps them folded and names llama.cpp's scale.
"""

from __future__ import annotations

import gguf
import numpy as np


def field(reader: gguf.GGUFReader, key: str, default=None):
    value = reader.fields.get(key)
    return default if value is None else value.contents()


def float32_text(value: float) -> float:
    """A float32 hyperparameter as its shortest decimal (1e-05, not 9.999999747378752e-06): the same float32."""
    return float(str(np.float32(value)))


def phi3_keys(reader: gguf.GGUFReader, arch: str, config: dict) -> dict:
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    rope_dim = int(field(reader, f"{arch}.rope.dimension_count", head_dim))
    original = field(reader, f"{arch}.rope.scaling.original_context_length")
    keys: dict = {"sliding_window": int(field(reader, f"{arch}.attention.sliding_window", 0)) or None}
    if rope_dim != head_dim:
        keys["partial_rotary_factor"] = rope_dim / head_dim
    if original:
        keys["original_max_position_embeddings"] = int(original)
    factors = {t.name: t for t in reader.tensors if t.name.startswith("rope_factors_")}
    if factors:
        keys["rope_scaling"] = {
            "type": "longrope", "rope_type": "longrope",
            "long_factor": [float32_text(x) for x in factors["rope_factors_long.weight"].data],
            "short_factor": [float32_text(x) for x in factors["rope_factors_short.weight"].data],
            "attention_factor": float32_text(field(reader, f"{arch}.rope.scaling.attn_factor", 1.0))}
    return keys


def gemma3_keys(reader: gguf.GGUFReader, arch: str, config: dict) -> dict:
    n_embd, n_head, n_layer = config["hidden_size"], config["num_attention_heads"], config["num_hidden_layers"]
    head_dim = config.get("head_dim") or n_embd // n_head
    window = field(reader, f"{arch}.attention.sliding_window")
    pattern = field(reader, f"{arch}.attention.sliding_window_pattern")
    sliding = list(pattern) if window and pattern else [False] * n_layer
    softcap = field(reader, f"{arch}.final_logit_softcapping")
    return {
        "hidden_activation": "gelu_pytorch_tanh", "hidden_act": "gelu_pytorch_tanh", "head_dim": head_dim,
        # llama.cpp's attention scale: 1/sqrt(head_dim), except for the 62-layer (27B) model
        "query_pre_attn_scalar": n_embd // n_head if n_layer == 62 else head_dim,
        "sliding_window": int(window) if window else None,
        "layer_types": ["sliding_attention" if s else "full_attention" for s in sliding],
        "rope_local_base_freq": float32_text(field(reader, f"{arch}.rope.freq_base_swa", 10000.0)),
        "attn_logit_softcapping": None, "final_logit_softcapping": float32_text(softcap) if softcap else None,
        "attention_bias": False,
    }


FAMILY_KEYS = {"Phi3ForCausalLM": phi3_keys, "Gemma3ForCausalLM": gemma3_keys}
