"""Builds tiny random-weight llama GGUFs with a real byte-level BPE vocabulary, in well under a second."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import gguf
import numpy as np

from refusal_edge.metadata import (CATEGORIES, REFUSE_TOKEN, RESPOND_TOKEN, RefusalSpec, TokenRef, category_token,
                                   discover)

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = (
    "the quick brown fox jumps over the lazy dog. hello world, how are you today? i am fine thank you. "
    "please tell me a story about the sea and the sky. can you help me write an email to my friend? "
    "what is the capital of france? i cannot help with that request because it is unsafe."
)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = keep[:]
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(keep, map(chr, chars)))


def train_bpe(corpus: str, n_merges: int) -> tuple[list[str], list[str]]:
    table = bytes_to_unicode()
    words = Counter(
        tuple(table[b] for b in (w if i == 0 else " " + w).encode()) for i, w in enumerate(corpus.split(" "))
    )
    vocab = [table[b] for b in range(256)]
    merges: list[str] = []
    for _ in range(n_merges):
        pairs: Counter = Counter()
        for word, count in words.items():
            for a, b in zip(word, word[1:]):
                pairs[(a, b)] += count
        if not pairs:
            break
        (a, b), _ = pairs.most_common(1)[0]
        merges.append(f"{a} {b}")
        vocab.append(a + b)
        merged = Counter()
        for word, count in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += count
        words = merged
    return vocab, merges


def build_tiny_gguf(
    path: str | Path,
    *,
    refusal_tokens: str = "categories",  # "categories", "binary" or "none"
    write_metadata: bool = True,
    refusal_token_type: int = gguf.TokenType.CONTROL,
    default_policy: dict | None = None,
    seed: int = 0,
    n_embd: int = 64,
    n_layer: int = 2,
    n_head: int = 4,
    n_head_kv: int = 2,
    n_ff: int = 128,
    context_length: int = 256,
    f16: bool = False,  # matrices in float16 (norms stay float32), as converted checkpoints often are
    quant: str | None = None,  # matrices quantized ("Q8_0", the default model's type, or "Q4_0"); norms stay float32
    nan_logits: bool = False,  # a broken model: NaN in the final norm makes every logit NaN
    category_names: tuple[str, ...] | None = None,  # other names for the five category tokens, in order
    tied: bool = False,  # no output.weight: the output matrix is the token embedding (SmolLM2's layout)
) -> Path:
    path = Path(path)
    base, merges = train_bpe(CORPUS, 120)
    extra = {"categories": [RESPOND_TOKEN] + [category_token(c) for c in CATEGORIES],
             "binary": [RESPOND_TOKEN, REFUSE_TOKEN], "none": []}[refusal_tokens]
    tokens = base + SPECIALS + extra
    types = [gguf.TokenType.NORMAL] * len(base) + [gguf.TokenType.CONTROL] * len(SPECIALS)
    types += [refusal_token_type] * len(extra)
    n_vocab = len(tokens)

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-refusal-test")
    w.add_context_length(context_length)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(n_vocab)
    qtype = gguf.GGMLQuantizationType[quant] if quant else None
    w.add_file_type(gguf.LlamaFileType[f"MOSTLY_{quant}"] if quant else
                    gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(tokens.index("<|endoftext|>"))
    w.add_eos_token_id(tokens.index("<|im_end|>"))
    w.add_add_bos_token(False)
    w.add_chat_template(CHATML)
    if write_metadata and extra:
        spec = discover(tokens)
        assert isinstance(spec, RefusalSpec)
        if category_names is not None:
            spec = RefusalSpec(spec.respond, tuple(TokenRef(name, c.token, c.id)
                                                   for name, c in zip(category_names, spec.categories, strict=True)))
        if default_policy is not None:
            spec = spec.with_default_policy(default_policy)
        spec.write_gguf_fields(w)

    rng = np.random.default_rng(seed)
    head_dim = n_embd // n_head

    def rand(*shape: int, scale: float = 0.3) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float16 if f16 else np.float32)

    def add_matrix(name: str, data: np.ndarray) -> None:
        if qtype is None:
            w.add_tensor(name, data)
        else:
            w.add_tensor(name, gguf.quants.quantize(data.astype(np.float32), qtype), raw_dtype=qtype)

    add_matrix("token_embd.weight", rand(n_vocab, n_embd, scale=1.0))
    for i in range(n_layer):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, np.float32))
        add_matrix(f"blk.{i}.attn_q.weight", rand(n_embd, n_embd))
        add_matrix(f"blk.{i}.attn_k.weight", rand(n_head_kv * head_dim, n_embd))
        add_matrix(f"blk.{i}.attn_v.weight", rand(n_head_kv * head_dim, n_embd))
        add_matrix(f"blk.{i}.attn_output.weight", rand(n_embd, n_embd))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, np.float32))
        add_matrix(f"blk.{i}.ffn_gate.weight", rand(n_ff, n_embd))
        add_matrix(f"blk.{i}.ffn_up.weight", rand(n_ff, n_embd))
        add_matrix(f"blk.{i}.ffn_down.weight", rand(n_embd, n_ff))
    w.add_tensor("output_norm.weight", np.full(n_embd, np.nan if nan_logits else 1.0, np.float32))
    if not tied:
        add_matrix("output.weight", rand(n_vocab, n_embd, scale=0.15))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
