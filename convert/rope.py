"""RoPE settings from config.json (both transformers layouts) and the scalings llama.cpp's common keys express."""

from __future__ import annotations

import math

import numpy as np

from .errors import ConversionError


def full_attention_rope(config: dict) -> dict:
    """theta and scaling of the (full-attention) layers: transformers >= 5 keeps them under ``rope_parameters``
    (per layer type for Gemma 3), earlier versions as ``rope_theta`` + ``rope_scaling``."""
    params = config.get("rope_parameters") or {}
    if isinstance(params.get("full_attention"), dict):
        params = params["full_attention"]
    rope = dict(params)
    if not rope.get("rope_type") and not rope.get("type"):
        rope.update(config.get("rope_scaling") or {})
    if "rope_theta" in config:
        rope.setdefault("rope_theta", config["rope_theta"])
    return rope


def rope_scaling(rope: dict) -> dict:
    kind = rope.get("rope_type") or rope.get("type") or "default"
    if kind == "default":
        return {}
    if kind == "linear":
        return {"type": "linear", "factor": float(rope["factor"])}
    if kind == "llama3":
        return {"type": "llama3", **{k: float(rope[k]) for k in
                ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")}}
    if kind == "yarn":
        return _yarn(rope)
    raise ConversionError(f"config.json: rope scaling {kind!r} is not supported by `refusal-edge convert` "
                          "(convert with llama.cpp's convert_hf_to_gguf.py, then `refusal-edge annotate`)")


# transformers' YaRN options -> llama.cpp's rope.scaling.yarn_* keys (both default to the paper's values).
YARN_OPTIONS = {"beta_fast": "beta_fast", "beta_slow": "beta_slow", "attention_factor": "attn_factor"}


def _yarn(rope: dict) -> dict:
    """YaRN as llama.cpp runs it: the factor, the original context, beta_fast/beta_slow and the attention factor."""
    if not rope.get("factor") or not rope.get("original_max_position_embeddings"):
        raise ConversionError("config.json: yarn rope scaling needs factor and original_max_position_embeddings")
    for key in ("mscale", "mscale_all_dim"):  # DeepSeek's variant: llama.cpp's common keys do not express it
        if rope.get(key):
            raise ConversionError(f"config.json: yarn rope scaling with {key} is not supported by `refusal-edge convert`")
    if rope.get("truncate") is False:  # gpt-oss: the correction range is not rounded, llama.cpp's always is
        raise ConversionError("config.json: yarn rope scaling with truncate false is not supported by "
                              "`refusal-edge convert`")
    out = {"type": "yarn", "factor": float(rope["factor"]),
           "original_max_position_embeddings": int(rope["original_max_position_embeddings"])}
    out.update({gguf_key: float(rope[key]) for key, gguf_key in YARN_OPTIONS.items() if rope.get(key) is not None})
    return out


def llama3_rope_freqs(s: dict, rope_dim: int, freq_base: float) -> np.ndarray:
    """The rope_freqs.weight factors llama.cpp applies for Llama-3.1+ rope scaling (as convert_hf_to_gguf.py)."""
    freqs = 1.0 / (freq_base ** (np.arange(0, rope_dim, 2, dtype=np.float64) / rope_dim))
    low_wavelen = s["original_max_position_embeddings"] / s["low_freq_factor"]
    high_wavelen = s["original_max_position_embeddings"] / s["high_freq_factor"]
    factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(s["factor"])
        else:
            smooth = (s["original_max_position_embeddings"] / wavelen - s["low_freq_factor"]) / (
                s["high_freq_factor"] - s["low_freq_factor"])
            factors.append(1.0 / ((1 - smooth) / s["factor"] + smooth))
    return np.asarray(factors, dtype=np.float32)
