"""Llama-family architecture: hyperparameters from config.json and the HF -> GGUF tensor plan.

llama.cpp's ``llama`` graph applies RoPE to interleaved pairs while Hugging Face rotates halves, so the rows of
every Q and K projection are permuted per head (``permute``), K with ``num_key_value_heads``. Qwen2 uses the
NEOX layout in llama.cpp: no permutation, and its Q/K/V projections carry biases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import gguf
import numpy as np

from .errors import ConversionError
from .hf_source import HFCheckpoint, LazyTensor

# HF architectures -> gguf architecture names.
ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
}
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
SUPPORTED_DTYPES = ("F32", "F16", "BF16", "F64")


@dataclass(frozen=True)
class ArchParams:
    """The ``{arch}.*`` hyperparameters of a GGUF (and its name)."""

    arch: str
    n_vocab: int
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    context_length: int
    rms_eps: float
    rope_freq_base: float
    head_dim: int | None = None  # written (key/value length) only when it differs from n_embd // n_head
    rope_scaling: dict = field(default_factory=dict)  # {"type": "linear", "factor": f}; llama3 uses rope_freqs
    tie_embeddings: bool = False
    name: str | None = None

    @property
    def rope_dim(self) -> int:
        return self.head_dim or self.n_embd // self.n_head

    def write(self, w) -> None:
        """Add the fields to a gguf.GGUFWriter."""
        if self.name:
            w.add_name(self.name)
        w.add_vocab_size(self.n_vocab)
        w.add_context_length(self.context_length)
        w.add_embedding_length(self.n_embd)
        w.add_block_count(self.n_layer)
        w.add_feed_forward_length(self.n_ff)
        w.add_head_count(self.n_head)
        w.add_head_count_kv(self.n_head_kv)
        w.add_rope_dimension_count(self.rope_dim)
        w.add_rope_freq_base(float(self.rope_freq_base))
        w.add_layer_norm_rms_eps(float(self.rms_eps))
        if self.head_dim and self.head_dim != self.n_embd // self.n_head:
            w.add_key_length(self.head_dim)
            w.add_value_length(self.head_dim)
        if self.rope_scaling.get("type") == "linear":
            w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            w.add_rope_scaling_factor(float(self.rope_scaling["factor"]))


def arch_params(config: dict, name: str | None = None) -> ArchParams:
    archs = config.get("architectures") or []
    arch = next((ARCHITECTURES[a] for a in archs if a in ARCHITECTURES), None)
    if arch is None:
        raise ConversionError(
            f"unsupported architecture {', '.join(archs) or '(none in config.json)'}: `refusal-edge convert` handles "
            f"{', '.join(ARCHITECTURES)}. For another architecture llama.cpp runs, convert with llama.cpp's "
            "convert_hf_to_gguf.py and add the refusal metadata with `refusal-edge annotate`"
        )
    try:
        n_embd, n_head = int(config["hidden_size"]), int(config["num_attention_heads"])
        params = ArchParams(
            arch=arch,
            n_vocab=int(config.get("vocab_size") or 0),
            n_embd=n_embd,
            n_layer=int(config["num_hidden_layers"]),
            n_head=n_head,
            n_head_kv=int(config.get("num_key_value_heads") or n_head),
            n_ff=int(config["intermediate_size"]),
            context_length=int(config.get("max_position_embeddings") or 4096),
            rms_eps=float(config.get("rms_norm_eps") or 1e-6),
            rope_freq_base=float(_rope(config).get("rope_theta") or 10000.0),
            head_dim=int(config["head_dim"]) if config.get("head_dim") else None,
            rope_scaling=_rope_scaling(config),
            tie_embeddings=bool(config.get("tie_word_embeddings", False)),
            name=name or config.get("_name_or_path") or None,
        )
    except KeyError as exc:
        raise ConversionError(f"config.json lacks {exc.args[0]!r}") from None
    if params.n_head % params.n_head_kv:
        raise ConversionError(f"config.json: {n_head} attention heads is not a multiple of {params.n_head_kv} KV heads")
    return params


def _rope(config: dict) -> dict:
    """transformers >= 5 stores rope_theta and the scaling under rope_parameters."""
    rope = dict(config.get("rope_parameters") or {})
    if "rope_theta" in config:
        rope.setdefault("rope_theta", config["rope_theta"])
    return rope


def _rope_scaling(config: dict) -> dict:
    scaling = config.get("rope_scaling") or _rope(config)
    kind = scaling.get("rope_type") or scaling.get("type") or "default"
    if kind == "default":
        return {}
    if kind == "linear":
        return {"type": "linear", "factor": float(scaling["factor"])}
    if kind == "llama3":
        return {"type": "llama3", **{k: float(scaling[k]) for k in
                ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")}}
    raise ConversionError(f"config.json: rope scaling {kind!r} is not supported by `refusal-edge convert` "
                          "(convert with llama.cpp's convert_hf_to_gguf.py, then `refusal-edge annotate`)")


def llama3_rope_freqs(params: ArchParams) -> np.ndarray:
    """The rope_freqs.weight factors llama.cpp applies for Llama-3.1+ rope scaling (as convert_hf_to_gguf.py)."""
    s = params.rope_scaling
    dim = params.rope_dim
    freqs = 1.0 / (params.rope_freq_base ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
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


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF's rotate-half layout -> llama.cpp's interleaved pairs, per head (rows of a Q/K weight or bias)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's interleaved pairs -> HF's rotate-half layout: the inverse of ``permute``."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class PermutedTensor(LazyTensor):
    """Q/K rows permuted per head, read a whole number of heads at a time."""

    def __init__(self, base: LazyTensor, n_head: int, name: str):
        self.base, self.n_head, self.name = base, n_head, name
        self.shape, self.source_dtype = base.shape, base.source_dtype
        self.head_rows = base.shape[0] // n_head

    def rows(self, start: int, stop: int) -> np.ndarray:
        h = self.head_rows
        h0, h1 = start // h, -(-stop // h)
        block = permute(self.base.rows(h0 * h, h1 * h), h1 - h0)
        return block[start - h0 * h: stop - h0 * h]


class ArrayTensor(LazyTensor):
    """An in-memory numpy array behind the LazyTensor interface."""

    def __init__(self, name: str, array: np.ndarray):
        self.name, self.array = name, np.asarray(array)
        self.shape, self.source_dtype = self.array.shape, str(self.array.dtype)

    def rows(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.array[start:stop], dtype=np.float32)


def tensor_plan(ckpt: HFCheckpoint, params: ArchParams) -> list[tuple[str, LazyTensor]]:
    """(gguf name, lazy tensor) for every tensor to write, in llama.cpp's usual order; checks names and shapes."""
    arch = gguf.MODEL_ARCH.LLAMA if params.arch == "llama" else gguf.MODEL_ARCH.QWEN2
    names = gguf.get_tensor_name_map(arch, params.n_layer)
    plan: dict[str, LazyTensor] = {}
    for hf_name, tensor in ckpt.tensors.items():
        if hf_name.endswith(IGNORED_SUFFIXES):
            continue
        if tensor.source_dtype not in SUPPORTED_DTYPES:
            raise ConversionError(
                f"tensor {hf_name!r} has dtype {tensor.source_dtype}; `refusal-edge convert` reads "
                f"{', '.join(SUPPORTED_DTYPES)} (quantized checkpoints, e.g. GPTQ/AWQ/FP8, are not supported)"
            )
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ConversionError(f"unexpected tensor {hf_name!r} for a {params.arch} checkpoint")
        if name == "output.weight" and params.tie_embeddings:
            continue  # llama.cpp falls back to token_embd.weight
        if params.arch == "llama" and (name.endswith(".attn_q.weight") or name.endswith(".attn_q.bias")):
            tensor = PermutedTensor(tensor, params.n_head, hf_name)
        elif params.arch == "llama" and (name.endswith(".attn_k.weight") or name.endswith(".attn_k.bias")):
            tensor = PermutedTensor(tensor, params.n_head_kv, hf_name)
        plan[name] = tensor
    if params.rope_scaling.get("type") == "llama3":
        plan["rope_freqs.weight"] = ArrayTensor("rope_freqs", llama3_rope_freqs(params))
    _check(plan, params)
    return sorted(plan.items(), key=lambda kv: _order(kv[0]))


def _order(name: str) -> tuple:
    if name.startswith("blk."):
        return (1, int(name.split(".")[1]), name)
    return ({"token_embd.weight": 0, "rope_freqs.weight": 0}.get(name, 2), 0, name)


def _check(plan: dict[str, LazyTensor], p: ArchParams) -> None:
    head_dim = p.head_dim or p.n_embd // p.n_head
    q_rows, kv_rows = p.n_head * head_dim, p.n_head_kv * head_dim
    expected = {"token_embd.weight": None, "output_norm.weight": (p.n_embd,)}
    if not p.tie_embeddings:
        expected["output.weight"] = None
    for i in range(p.n_layer):
        b = f"blk.{i}."
        expected.update({
            b + "attn_norm.weight": (p.n_embd,), b + "ffn_norm.weight": (p.n_embd,),
            b + "attn_q.weight": (q_rows, p.n_embd), b + "attn_k.weight": (kv_rows, p.n_embd),
            b + "attn_v.weight": (kv_rows, p.n_embd), b + "attn_output.weight": (p.n_embd, q_rows),
            b + "ffn_gate.weight": (p.n_ff, p.n_embd), b + "ffn_up.weight": (p.n_ff, p.n_embd),
            b + "ffn_down.weight": (p.n_embd, p.n_ff),
        })
    missing = [n for n in expected if n not in plan]
    if missing:
        raise ConversionError(f"the checkpoint lacks {len(missing)} tensor(s) the architecture needs, e.g. "
                              f"{', '.join(missing[:3])} (an incomplete download?)")
    for name, shape in expected.items():
        if shape is not None and tuple(plan[name].shape) != shape:
            raise ConversionError(f"tensor {name} has shape {tuple(plan[name].shape)}, config.json implies {shape}")
    embd = plan["token_embd.weight"].shape
    if len(embd) != 2 or embd[1] != p.n_embd:
        raise ConversionError(f"token embeddings have shape {tuple(embd)}, config.json implies (*, {p.n_embd})")
    if "output.weight" in plan and tuple(plan["output.weight"].shape) != tuple(embd):
        raise ConversionError(f"output matrix has shape {tuple(plan['output.weight'].shape)}, the token embeddings "
                              f"{tuple(embd)}: vocabulary/embedding size mismatch")
