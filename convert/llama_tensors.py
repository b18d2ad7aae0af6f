"""Hyperparameters from config.json and the HF -> GGUF tensor plan, for every family in ``architectures.FAMILIES``.

llama.cpp's ``llama``-style graphs (NORM RoPE) rotate interleaved pairs while Hugging Face rotates halves, so the
rows of every Q and K projection are permuted per head (``permute``), K with ``num_key_value_heads``. NEOX
architectures (Qwen, Phi-3, Gemma 3) keep the rows. Values change only through lazy wrappers, read row block by
row block, so no tensor is ever held whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import gguf
import numpy as np

from .architectures import (BIASED, FAMILIES, TOP_LEVEL, block_shapes, check_common_fields, check_rope_scaling,
                            family_of)
from .errors import ConversionError
from .hf_source import HFCheckpoint, LazyTensor
from .rope import full_attention_rope, llama3_rope_freqs

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
    rope_scaling: dict = field(default_factory=dict)  # {"type": "linear"/"yarn", ...}; llama3 uses rope_freqs
    tie_embeddings: bool = False
    name: str | None = None
    hf_arch: str = "LlamaForCausalLM"  # the key of its Family in architectures.FAMILIES
    rotary_dims: int | None = None  # partial rotary (Phi-4-mini): fewer than head_size dimensions rotate
    family_keys: tuple = ()  # (key without "{arch}.", value): the family's own keys, from its Family.keys
    q_norm_scale: float = 1.0  # folded into the q-norm weights (Gemma 3's query_pre_attn_scalar)

    @property
    def head_size(self) -> int:
        return self.head_dim or self.n_embd // self.n_head

    @property
    def rope_dim(self) -> int:
        return self.rotary_dims or self.head_size

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
        elif self.rope_scaling.get("type") == "yarn":
            s = self.rope_scaling
            w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
            w.add_rope_scaling_factor(s["factor"])
            w.add_rope_scaling_orig_ctx_len(s["original_max_position_embeddings"])
            for key, add in (("beta_fast", w.add_rope_scaling_yarn_beta_fast),
                             ("beta_slow", w.add_rope_scaling_yarn_beta_slow),
                             ("attn_factor", w.add_rope_scaling_yarn_attn_factor)):
                if key in s:
                    add(s[key])
        for key, value in self.family_keys:
            _add_key(w, f"{self.arch}.{key}", value)


def _add_key(w, key: str, value) -> None:
    if isinstance(value, bool):
        w.add_bool(key, value)
    elif isinstance(value, int):
        w.add_uint32(key, value)
    elif isinstance(value, float):
        w.add_float32(key, value)
    else:  # a per-layer list (e.g. Gemma 3's sliding-window pattern)
        w.add_array(key, list(value))


def arch_params(config: dict, name: str | None = None) -> ArchParams:
    hf_arch, family = family_of(config)
    check_common_fields(config, hf_arch)
    try:
        n_embd, n_head = int(config["hidden_size"]), int(config["num_attention_heads"])
        rope = full_attention_rope(config)
        head_dim = int(config["head_dim"]) if config.get("head_dim") else None
        partial = float(rope.get("partial_rotary_factor") or config.get("partial_rotary_factor") or 1.0)
        params = ArchParams(
            arch=family.arch,
            n_vocab=int(config.get("vocab_size") or 0),
            n_embd=n_embd,
            n_layer=int(config["num_hidden_layers"]),
            n_head=n_head,
            n_head_kv=int(config.get("num_key_value_heads") or n_head),
            n_ff=int(config["intermediate_size"]),
            context_length=int(config.get("max_position_embeddings") or 4096),
            rms_eps=float(config.get("rms_norm_eps") or 1e-6),
            rope_freq_base=float(rope.get("rope_theta") or 10000.0),
            head_dim=head_dim,
            rope_scaling=check_rope_scaling(config, hf_arch),
            tie_embeddings=bool(config.get("tie_word_embeddings", False)),
            name=name or config.get("_name_or_path") or None,
            hf_arch=hf_arch,
            rotary_dims=int((head_dim or n_embd // n_head) * partial) if partial != 1.0 else None,
        )
    except KeyError as exc:
        raise ConversionError(f"config.json lacks {exc.args[0]!r}") from None
    except (TypeError, ValueError, ZeroDivisionError) as exc:
        raise ConversionError(f"config.json holds a malformed hyperparameter: {exc}") from None
    sizes = {"hidden_size": params.n_embd, "num_attention_heads": params.n_head,
             "num_hidden_layers": params.n_layer, "intermediate_size": params.n_ff}
    if any(value <= 0 for value in sizes.values()):
        raise ConversionError("config.json: " + ", ".join(f"{k} {v}" for k, v in sizes.items() if v <= 0)
                              + ": every size must be positive")
    if params.n_head_kv <= 0 or params.n_head % params.n_head_kv:
        raise ConversionError(f"config.json: {n_head} attention heads is not a multiple of {params.n_head_kv} KV heads")
    keys = family.keys(config, params)
    return replace(params, family_keys=tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in keys.items()),
                   q_norm_scale=float(family.q_norm_scale(config, params)))


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


class AffineTensor(LazyTensor):
    """(base + offset) * scale, row block by row block: Gemma's (1 + w) norms, a folded attention scale."""

    def __init__(self, base: LazyTensor, offset: float = 0.0, scale: float = 1.0):
        self.base, self.offset, self.scale = base, offset, scale
        self.name, self.shape, self.source_dtype = base.name, base.shape, base.source_dtype

    def rows(self, start: int, stop: int) -> np.ndarray:
        return (self.base.rows(start, stop) + np.float32(self.offset)) * np.float32(self.scale)


def gguf_name(hf_name: str, params: ArchParams) -> str | None:
    """The GGUF name of an HF tensor for this family, or None when the family has no such tensor."""
    stem, dot, kind = hf_name.rpartition(".")
    if not dot or kind not in ("weight", "bias"):
        return None
    if stem in TOP_LEVEL:
        return f"{TOP_LEVEL[stem]}.{kind}" if kind == "weight" else None
    parts = stem.split(".", 3)
    if len(parts) < 4 or parts[:2] != ["model", "layers"] or not parts[2].isdigit():
        return None
    target = FAMILIES[params.hf_arch].block.get(parts[3])
    if target is None or (kind == "bias" and target not in BIASED) or int(parts[2]) >= params.n_layer:
        return None
    return f"blk.{int(parts[2])}.{target}.{kind}"


def _transformed(name: str, tensor: LazyTensor, params: ArchParams, hf_name: str) -> LazyTensor:
    family = FAMILIES[params.hf_arch]
    suffix = name.split(".")[-2]
    if family.permute_qk and suffix in ("attn_q", "attn_k"):
        return PermutedTensor(tensor, params.n_head if suffix == "attn_q" else params.n_head_kv, hf_name)
    if family.norm_offset and suffix.endswith("norm") and name.endswith(".weight"):
        return AffineTensor(tensor, family.norm_offset, params.q_norm_scale if suffix == "attn_q_norm" else 1.0)
    return tensor


def tensor_plan(ckpt: HFCheckpoint, params: ArchParams) -> list[tuple[str, LazyTensor]]:
    """(gguf name, lazy tensor) for every tensor to write, in llama.cpp's usual order; checks names and shapes."""
    plan: dict[str, LazyTensor] = {}
    for hf_name, tensor in ckpt.tensors.items():
        if hf_name.endswith(IGNORED_SUFFIXES):
            continue
        if tensor.source_dtype not in SUPPORTED_DTYPES:
            raise ConversionError(
                f"tensor {hf_name!r} has dtype {tensor.source_dtype}; `refusal-edge convert` reads "
                f"{', '.join(SUPPORTED_DTYPES)} (quantized checkpoints, e.g. GPTQ/AWQ/FP8, are not supported)"
            )
        name = gguf_name(hf_name, params)
        if name is None:
            raise ConversionError(f"unexpected tensor {hf_name!r} for a {params.hf_arch} checkpoint")
        if name == "output.weight" and params.tie_embeddings:
            continue  # llama.cpp falls back to token_embd.weight
        plan[name] = _transformed(name, tensor, params, hf_name)
    if params.rope_scaling.get("type") == "llama3":
        plan["rope_freqs.weight"] = ArrayTensor("rope_freqs", llama3_rope_freqs(
            params.rope_scaling, params.rope_dim, params.rope_freq_base))
    for name, values in FAMILIES[params.hf_arch].extra_tensors(ckpt.config, params).items():
        plan[name] = ArrayTensor(name, np.asarray(values, dtype=np.float32))
    _check(plan, params)
    return sorted(plan.items(), key=lambda kv: _order(kv[0]))


def _order(name: str) -> tuple:
    if name.startswith("blk."):
        return (1, int(name.split(".")[1]), name)
    return (0 if name.startswith(("token_embd", "rope_")) else 2, 0, name)


def _check(plan: dict[str, LazyTensor], p: ArchParams) -> None:
    shapes = block_shapes(p)
    expected = {"token_embd.weight": None, "output_norm.weight": (p.n_embd,)}
    if not p.tie_embeddings:
        expected["output.weight"] = None
    for i in range(p.n_layer):
        expected.update({f"blk.{i}.{t}.weight": shapes[t] for t in FAMILIES[p.hf_arch].block.values()})
    missing = [n for n in expected if n not in plan]
    if missing:
        raise ConversionError(f"the checkpoint lacks {len(missing)} tensor(s) the architecture needs, e.g. "
                              f"{', '.join(missing[:3])} (an incomplete download?)")
    for name, shape in expected.items():
        if shape is not None and tuple(plan[name].shape) != shape:
            raise ConversionError(f"tensor {name} has shape {tuple(plan[name].shape)}, config.json implies {shape}")
    for name, t in plan.items():
        if name.endswith(".bias"):
            rows = shapes[name.split(".")[-2]][0]
            if tuple(t.shape) != (rows,):
                raise ConversionError(f"tensor {name} has shape {tuple(t.shape)}, config.json implies ({rows},)")
    embd = plan["token_embd.weight"].shape
    if len(embd) != 2 or embd[1] != p.n_embd:
        raise ConversionError(f"token embeddings have shape {tuple(embd)}, config.json implies (*, {p.n_embd})")
    if "output.weight" in plan and tuple(plan["output.weight"].shape) != tuple(embd):
        raise ConversionError(f"output matrix has shape {tuple(plan['output.weight'].shape)}, the token embeddings "
                              f"{tuple(embd)}: vocabulary/embedding size mismatch")
