"""What each supported Hugging Face architecture becomes in llama.cpp: one declarative table.

A ``Family`` says which llama.cpp architecture runs the checkpoint, how its block tensors are named on both sides,
which shapes they must have, how values change on the way (Q/K row permutation, Gemma's ``1 + w`` norms) and which
GGUF keys the family needs beyond the common ones (``family_keys``: read from config.json, checked against what
llama.cpp 0.3.x can run, refused with a clear error otherwise). The mechanics (reading, permuting, writing) live in
``llama_tensors.py`` and ``writer.py``; the hyperparameters common to all live in ``ArchParams`` there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping

from .errors import ConversionError
from .rope import full_attention_rope, rope_scaling

# HF tensor names outside the blocks -> GGUF names (".weight" / ".bias" kept as suffix).
TOP_LEVEL = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}

# HF block tensors (after "model.layers.N.") -> GGUF block tensors (after "blk.N.").
_ATTENTION = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output"}
_GATED_FFN = {"mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
_PRE_NORMS = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
_QK_NORMS = {"self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm"}
LLAMA_BLOCK = {**_PRE_NORMS, **_ATTENTION, **_GATED_FFN}
QWEN3_BLOCK = {**LLAMA_BLOCK, **_QK_NORMS}
# Gemma 3 normalises around both sublayers: its "post_attention_layernorm" is a post-norm, not the FFN's pre-norm.
GEMMA3_BLOCK = {"input_layernorm": "attn_norm", "post_attention_layernorm": "post_attention_norm",
                "pre_feedforward_layernorm": "ffn_norm", "post_feedforward_layernorm": "post_ffw_norm",
                **_ATTENTION, **_QK_NORMS, **_GATED_FFN}
# Phi-3 fuses Q, K, V (in that row order) and gate, up (gate first): llama.cpp reads both fused as they are.
PHI3_BLOCK = {**_PRE_NORMS, "self_attn.qkv_proj": "attn_qkv", "self_attn.o_proj": "attn_output",
              "mlp.gate_up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
BIASED = ("attn_q", "attn_k", "attn_v", "attn_qkv")  # the only tensors whose .bias llama.cpp loads for these archs


def block_shapes(p) -> dict[str, tuple[int, ...]]:
    """Every block tensor's expected GGUF-side shape (rows, columns) for hyperparameters ``p``."""
    q, kv = p.n_head * p.head_size, p.n_head_kv * p.head_size
    return {
        "attn_norm": (p.n_embd,), "ffn_norm": (p.n_embd,), "post_attention_norm": (p.n_embd,),
        "post_ffw_norm": (p.n_embd,), "attn_q_norm": (p.head_size,), "attn_k_norm": (p.head_size,),
        "attn_q": (q, p.n_embd), "attn_k": (kv, p.n_embd), "attn_v": (kv, p.n_embd), "attn_output": (p.n_embd, q),
        "attn_qkv": (q + 2 * kv, p.n_embd), "ffn_gate": (p.n_ff, p.n_embd),
        # fused gate + up (Phi-3) when the family has no separate gate
        "ffn_up": (p.n_ff * (1 if "ffn_gate" in FAMILIES[p.hf_arch].block.values() else 2), p.n_embd),
        "ffn_down": (p.n_embd, p.n_ff),
    }


def _no_keys(config: dict, p) -> dict:
    return {}


def _unscaled(config: dict, p) -> float:
    return 1.0


@dataclass(frozen=True)
class Family:
    arch: str  # llama.cpp's architecture name (general.architecture)
    block: Mapping[str, str]
    # llama.cpp's "NORM" RoPE rotates interleaved pairs where HF rotates halves: Q/K rows are permuted per head.
    # "NEOX" architectures (Qwen, Phi-3, Gemma 3) rotate halves like HF: rows stay.
    permute_qk: bool = False
    # Gemma's RMSNorm multiplies by (1 + w); llama.cpp's by w: the GGUF stores 1 + w (as llama.cpp's converter).
    norm_offset: float = 0.0
    keys: Callable[[dict, object], dict] = _no_keys  # (config.json, ArchParams) -> the family's own keys, checked
    extra_tensors: Callable[[dict, object], dict] = _no_keys  # (config.json, ArchParams) -> {GGUF name: values}
    q_norm_scale: Callable[[dict, object], float] = _unscaled  # folded into the q-norm weights (Gemma 3)
    # GGUF -> HF export (gguf_to_hf.py): transformers' model_type and the config.json keys of the family's own,
    # from the config read back so far; or why the family is not exported.
    # (config.json, ArchParams) -> what the user should know about the result (e.g. a window llama.cpp ignores)
    notes: Callable[[dict, object], list] = lambda config, p: []
    model_type: str = ""
    export_keys: Callable[[dict], dict] = lambda config: {}
    not_exported: str = ""


def _refuse(what: str) -> ConversionError:
    return ConversionError(f"config.json: {what}; llama.cpp's graph for this architecture cannot run it, so "
                           "`refusal-edge convert` refuses rather than write a model that computes something else")


def _no_sliding_window(config: dict, arch: str) -> None:
    if config.get("use_sliding_window") and config.get("sliding_window"):
        raise _refuse(f"{arch} with use_sliding_window (window {config['sliding_window']})")


def _qwen2_keys(config: dict, p) -> dict:
    _no_sliding_window(config, "Qwen2")
    return {}


def check_common_fields(config: dict, hf_arch: str) -> None:
    """Fields of config.json that change the computation in ways the tensor plan below does not convert."""
    if config.get("mlp_bias"):
        raise _unconverted("mlp_bias true", hf_arch)
    if config.get("attention_bias") and hf_arch not in ("Qwen2ForCausalLM",):
        raise _unconverted("attention_bias true", hf_arch)
    act = config.get("hidden_act")
    if hf_arch != "Gemma3ForCausalLM" and act not in (None, "silu"):
        raise _refuse(f"hidden_act {act!r} for {hf_arch} (llama.cpp's graph uses SiLU)")


def _unconverted(what: str, hf_arch: str) -> ConversionError:
    return ConversionError(f"config.json: {what} is not supported by `refusal-edge convert` for {hf_arch}; convert "
                           "with llama.cpp's convert_hf_to_gguf.py, then add the refusal metadata with "
                           "`refusal-edge annotate`")


def ignored_window_note(config: dict, p) -> list:
    """llama.cpp runs Phi-3 and Mistral with full attention (Phi-3's sliding window is switched off in its loader,
    the llama graph has none): the same as transformers for prompts no longer than the window."""
    window = config.get("sliding_window")
    if not window or int(window) >= p.context_length:
        return []
    return [f"config.json's sliding_window {window}: llama.cpp attends to the whole context, so prompts longer than "
            f"{window} tokens are computed differently from transformers"]


def _phi3_notes(config: dict, p) -> list:
    notes = ignored_window_note(config, p)
    original = dict(p.family_keys).get("rope.scaling.original_context_length")
    if phi3_rope_factors(config, p) and original:
        notes.append(f"longrope: llama.cpp uses the short factors while a sequence's context (--ctx) is at most "
                     f"{original} tokens, the long ones beyond, for every position; transformers switches per "
                     f"sequence length, so keep --ctx at most {original} for the same decisions on short prompts")
    return notes


def _qwen3_keys(config: dict, p) -> dict:
    _no_sliding_window(config, "Qwen3")
    return {}


# llama.cpp's smollm3 graph leaves out RoPE on every 4th layer (hard-coded), where transformers reads no_rope_layers.
SMOLLM3_NO_ROPE_STEP = 4


def _smollm3_keys(config: dict, p) -> dict:
    _no_sliding_window(config, "SmolLM3")
    expected = [int((i + 1) % SMOLLM3_NO_ROPE_STEP != 0) for i in range(p.n_layer)]
    given = config.get("no_rope_layers")
    if given is not None and [int(x) for x in given] != expected:
        raise _refuse(f"no_rope_layers {given} is not RoPE off on every {SMOLLM3_NO_ROPE_STEP}th layer "
                      f"({expected})")
    return {}


def _phi3_keys(config: dict, p) -> dict:
    if p.n_head * p.head_size != p.n_embd:
        raise _refuse(f"Phi-3 with {p.n_head} heads of {p.head_size} != hidden_size {p.n_embd}")
    keys = {"attention.sliding_window": int(config.get("sliding_window") or 0)}
    rope = full_attention_rope(config)
    original = rope.get("original_max_position_embeddings") or config.get("original_max_position_embeddings")
    if original:
        keys["rope.scaling.original_context_length"] = int(original)
    kind = rope.get("rope_type") or rope.get("type") or "default"
    if kind in ("longrope", "su"):
        if not original:
            raise _refuse("longrope scaling without original_max_position_embeddings")
        scale = float(rope.get("factor") or p.context_length / int(original))  # as transformers' longrope
        factor = rope.get("attention_factor")
        if factor is None:
            factor = math.sqrt(1 + math.log(scale) / math.log(int(original))) if scale > 1 else 1.0
        keys["rope.scaling.attn_factor"] = float(factor)
    elif kind != "default":
        raise _refuse(f"Phi-3 rope scaling {kind!r}")
    return keys


def phi3_rope_factors(config: dict, p) -> dict[str, list[float]]:
    """longrope's per-frequency factors: llama.cpp uses the long ones once its context exceeds the original one."""
    rope = full_attention_rope(config)
    if (rope.get("rope_type") or rope.get("type")) not in ("longrope", "su"):
        return {}
    long, short = rope.get("long_factor"), rope.get("short_factor")
    if not long or not short or len(long) != len(short) or len(long) != p.rope_dim // 2:
        raise _refuse(f"longrope needs long_factor and short_factor of {p.rope_dim // 2} values each")
    return {"rope_factors_long.weight": [float(x) for x in long], "rope_factors_short.weight": [float(x) for x in short]}


def gemma3_layer_types(config: dict, n_layer: int) -> list[str]:
    types = config.get("layer_types")
    if types:
        return list(types)
    pattern = int(config.get("sliding_window_pattern") or 6)  # transformers < 4.53: every pattern-th layer is global
    return ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(n_layer)]


def gemma3_attention_fold(config: dict, p) -> float:
    """The factor folded into the (1 + w) q-norm weights so that llama.cpp's fixed attention scale equals
    transformers' query_pre_attn_scalar ** -0.5 (RoPE is linear, so the factor passes through it)."""
    scalar = float(config.get("query_pre_attn_scalar") or p.head_size)
    # llama.cpp: 1/sqrt(head_dim), except for the 62-layer (27B) model: 1/sqrt(hidden_size / heads).
    llama_cpp = 1 / math.sqrt(p.n_embd / p.n_head if p.n_layer == 62 else p.head_size)
    return (1 / math.sqrt(scalar)) / llama_cpp


def _gemma3_keys(config: dict, p) -> dict:
    if config.get("attn_logit_softcapping"):
        raise _refuse("Gemma 3 with attn_logit_softcapping")
    if (config.get("hidden_activation") or config.get("hidden_act")) not in ("gelu_pytorch_tanh", None):
        raise _refuse(f"Gemma 3 activation {config.get('hidden_activation')!r} (llama.cpp uses tanh-GELU)")
    types = gemma3_layer_types(config, p.n_layer)
    if len(types) != p.n_layer or set(types) - {"full_attention", "sliding_attention"}:
        raise _refuse(f"layer_types {types}")
    keys: dict = {}
    if config.get("sliding_window") and "sliding_attention" in types:
        keys["attention.sliding_window"] = int(config["sliding_window"])
        keys["attention.sliding_window_pattern"] = [t == "sliding_attention" for t in types]
    local = (config.get("rope_parameters") or {}).get("sliding_attention") or {}
    local_kind = local.get("rope_type") or "default"
    if local_kind != "default":
        raise _refuse(f"Gemma 3 sliding-window rope scaling {local_kind!r}")
    keys["rope.freq_base_swa"] = float(local.get("rope_theta") or config.get("rope_local_base_freq") or 10000.0)
    if config.get("final_logit_softcapping"):
        keys["final_logit_softcapping"] = float(config["final_logit_softcapping"])
    return keys


def _qwen3_export(config: dict) -> dict:
    # transformers' Qwen3 default head_dim is 128, not hidden_size / heads: always written
    return {"use_sliding_window": False, "attention_bias": False,
            "head_dim": config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]}


def _smollm3_export(config: dict) -> dict:
    n = config["num_hidden_layers"]
    return {"no_rope_layer_interval": SMOLLM3_NO_ROPE_STEP, "use_sliding_window": False, "attention_bias": False,
            "no_rope_layers": [int((i + 1) % SMOLLM3_NO_ROPE_STEP != 0) for i in range(n)]}


FAMILIES: dict[str, Family] = {
    "LlamaForCausalLM": Family("llama", LLAMA_BLOCK, permute_qk=True, model_type="llama",
                               export_keys=lambda config: {"attention_bias": False, "mlp_bias": False}),
    # exported as Llama (same weights)
    "MistralForCausalLM": Family("llama", LLAMA_BLOCK, permute_qk=True, notes=ignored_window_note),
    "Qwen2ForCausalLM": Family("qwen2", LLAMA_BLOCK, keys=_qwen2_keys, model_type="qwen2"),
    "Qwen3ForCausalLM": Family("qwen3", QWEN3_BLOCK, keys=_qwen3_keys, model_type="qwen3",
                               export_keys=_qwen3_export),
    "SmolLM3ForCausalLM": Family("smollm3", LLAMA_BLOCK, permute_qk=True, keys=_smollm3_keys, model_type="smollm3",
                                 export_keys=_smollm3_export),
    # Phi-3 and Gemma 3 export their own config keys through family_export.py
    "Phi3ForCausalLM": Family("phi3", PHI3_BLOCK, keys=_phi3_keys, extra_tensors=phi3_rope_factors,
                              notes=_phi3_notes, model_type="phi3"),
    "Gemma3ForCausalLM": Family("gemma3", GEMMA3_BLOCK, norm_offset=1.0, keys=_gemma3_keys,
                                q_norm_scale=gemma3_attention_fold, model_type="gemma3_text"),
}


def export_family(gguf_arch: str) -> tuple[str, Family]:
    """The HF architecture a GGUF of llama.cpp architecture ``gguf_arch`` is exported as (the first in FAMILIES:
    llama -> LlamaForCausalLM), or a ConversionError saying why it is not."""
    found = [(hf, f) for hf, f in FAMILIES.items() if f.arch == gguf_arch]
    exported = [(hf, f) for hf, f in found if f.model_type]
    if exported:
        return exported[0]
    if found and found[0][1].not_exported:
        raise ConversionError(f"exporting a {gguf_arch!r} GGUF is not supported: {found[0][1].not_exported}; "
                              "export the original Hugging Face checkpoint instead")
    names = sorted({f.arch for f in FAMILIES.values() if f.model_type})
    raise ConversionError(f"the GGUF's architecture is {gguf_arch!r}; exporting handles {', '.join(names)}")


def family_of(config: dict) -> tuple[str, Family]:
    archs = config.get("architectures") or []
    hf_arch = next((a for a in archs if a in FAMILIES), None)
    if hf_arch is None:
        raise ConversionError(
            f"unsupported architecture {', '.join(archs) or '(none in config.json)'}: `refusal-edge convert` handles "
            f"{', '.join(FAMILIES)}. For another architecture llama.cpp runs, convert with llama.cpp's "
            "convert_hf_to_gguf.py and add the refusal metadata with `refusal-edge annotate`"
        )
    return hf_arch, FAMILIES[hf_arch]


def check_rope_scaling(config: dict, hf_arch: str) -> dict:
    """The common rope scaling ArchParams writes; Phi-3's longrope is its family's own."""
    if hf_arch == "Phi3ForCausalLM":
        return {}
    return rope_scaling(full_attention_rope(config))
