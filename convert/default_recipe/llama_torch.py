"""A minimal llama in torch, loaded from a GGUF, with LoRA adapters: just enough to fine-tune SmolLM2.

Workstation side only (imports torch). Written out rather than borrowed from transformers so that the
training loop can run the frozen bottom of the network once and cache it, which is what makes the
default model trainable on two CPU cores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..llama_tensors import permute as permute_qk  # noqa: F401  (HF -> llama.cpp order; re-exported)
from ..llama_tensors import unpermute as unpermute_qk  # llama.cpp -> HF order


@dataclass(frozen=True)
class LlamaConfig:
    n_vocab: int
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    rope_base: float
    rms_eps: float

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


def _field(reader: gguf.GGUFReader, key: str, default=None):
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def read_config(reader: gguf.GGUFReader) -> LlamaConfig:
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"expected a llama GGUF, got architecture {arch!r}")
    n_head = int(_field(reader, "llama.attention.head_count"))
    return LlamaConfig(
        n_vocab=len(reader.fields["tokenizer.ggml.tokens"].data),
        n_embd=int(_field(reader, "llama.embedding_length")),
        n_layer=int(_field(reader, "llama.block_count")),
        n_head=n_head,
        # llama.cpp's own defaults when the keys are missing: a GQA model breaks silently with any other
        n_head_kv=int(_field(reader, "llama.attention.head_count_kv", n_head)),
        n_ff=int(_field(reader, "llama.feed_forward_length")),
        rope_base=float(_field(reader, "llama.rope.freq_base", 10000.0)),
        rms_eps=float(_field(reader, "llama.attention.layer_norm_rms_epsilon", 1e-5)),
    )


def load_gguf_weights(path: str | Path) -> tuple[LlamaConfig, dict[str, np.ndarray]]:
    """Dequantized float32 weights under their GGUF names, attn_q/attn_k already un-permuted to HF order."""
    reader = gguf.GGUFReader(str(path))
    config = read_config(reader)
    weights = {}
    for t in reader.tensors:
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        w = w.reshape([int(n) for n in reversed(t.shape)])  # GGUF lists dimensions innermost first
        if t.name.endswith("attn_q.weight"):
            w = unpermute_qk(w, config.n_head)
        elif t.name.endswith("attn_k.weight"):
            w = unpermute_qk(w, config.n_head_kv)
        weights[t.name] = w
    return config, weights


class LoRALinear(nn.Module):
    """A frozen weight plus a trainable low-rank update ``scale * B @ A`` (B starts at zero)."""

    def __init__(self, weight: torch.Tensor, rank: int, alpha: float) -> None:
        super().__init__()
        self.register_buffer("weight", weight, persistent=False)
        self.rank = rank
        if rank:
            out_features, in_features = weight.shape
            self.scale = alpha / rank
            self.lora_a = nn.Parameter(torch.randn(rank, in_features) / math.sqrt(in_features))
            self.lora_b = nn.Parameter(torch.zeros(out_features, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight)
        if self.rank:
            y = y + F.linear(F.linear(x, self.lora_a.to(x.dtype)), self.lora_b.to(x.dtype)) * self.scale
        return y

    def delta(self) -> torch.Tensor:
        """The merged update in float32, HF row order."""
        return (self.lora_b.float() @ self.lora_a.float()) * self.scale


class Block(nn.Module):
    NAMES = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")

    def __init__(self, cfg: LlamaConfig, w: dict[str, torch.Tensor], i: int, rank: int, alpha: float,
                 targets: tuple[str, ...], dtype: torch.dtype) -> None:
        super().__init__()
        self.cfg = cfg
        self.attn_norm = w[f"blk.{i}.attn_norm.weight"]
        self.ffn_norm = w[f"blk.{i}.ffn_norm.weight"]
        self.lin = nn.ModuleDict({
            name: LoRALinear(w[f"blk.{i}.{name}.weight"].to(dtype), rank if name in targets else 0, alpha)
            for name in self.NAMES
        })

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        cfg, lin = self.cfg, self.lin
        b, t, _ = x.shape
        h = rms_norm(x, self.attn_norm, cfg.rms_eps)
        q = lin["attn_q"](h).view(b, t, cfg.n_head, cfg.head_dim).transpose(1, 2)
        k = lin["attn_k"](h).view(b, t, cfg.n_head_kv, cfg.head_dim).transpose(1, 2)
        v = lin["attn_v"](h).view(b, t, cfg.n_head_kv, cfg.head_dim).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        x = x + lin["attn_output"](attn.transpose(1, 2).reshape(b, t, -1))
        h = rms_norm(x, self.ffn_norm, cfg.rms_eps)
        return x + lin["ffn_down"](F.silu(lin["ffn_gate"](h)) * lin["ffn_up"](h))


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * weight).to(x.dtype)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """HF's split-half rotary layout (the GGUF weights were un-permuted into it)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


class Llama(nn.Module):
    """Frozen base; LoRA on ``targets`` in layers >= ``first_trained``; ``n_new`` trainable tied token rows."""

    def __init__(self, cfg: LlamaConfig, weights: dict[str, np.ndarray], *, n_new: int, new_rows: np.ndarray,
                 rank: int, alpha: float, targets: tuple[str, ...], first_trained: int,
                 dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.cfg = cfg
        self.first_trained = first_trained
        w = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()}
        self.register_buffer("embed", w["token_embd.weight"].to(dtype), persistent=False)
        self.new_rows = nn.Parameter(torch.from_numpy(new_rows.astype(np.float32)).clone())
        assert self.new_rows.shape == (n_new, cfg.n_embd)
        self.output_norm = w["output_norm.weight"]
        # SmolLM2 ties its output to the embedding; an untied model keeps its own matrix (new rows shared).
        untied = w.get("output.weight")
        self.register_buffer("output", None if untied is None else untied.to(dtype), persistent=False)
        self.blocks = nn.ModuleList(
            Block(cfg, w, i, rank if i >= first_trained else 0, alpha, targets, dtype) for i in range(cfg.n_layer)
        )
        inv = 1.0 / cfg.rope_base ** (torch.arange(0, cfg.head_dim, 2).float() / cfg.head_dim)
        self.register_buffer("inv_freq", inv, persistent=False)
        self.dtype = dtype

    def table(self, output: bool = False) -> torch.Tensor:
        """The embedding (or untied output) matrix with the new rows appended."""
        base = self.output if output and self.output is not None else self.embed
        return torch.cat([base, self.new_rows.to(self.dtype)], dim=0)

    def rotary(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = torch.outer(torch.arange(t).float(), self.inv_freq)
        emb = torch.cat([freqs, freqs], dim=-1)
        return emb.cos().to(self.dtype), emb.sin().to(self.dtype)

    def run_layers(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        cos, sin = self.rotary(x.shape[1])
        for block in self.blocks[start:stop]:
            x = block(x, cos, sin)
        return x

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.table())

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Full-vocabulary logits (float32) for hidden states of any leading shape."""
        h = rms_norm(hidden, self.output_norm, self.cfg.rms_eps)
        return F.linear(h, self.table(output=True)).float()
