"""Tiny checkpoints of the families people fine-tune in 2026, saved by transformers itself.

Random weights (larger than transformers' initialisation, norms away from their init, so that every convention
matters) in tiny configs that still exercise each family's particulars, and small real tokenizers: Qwen3 and
SmolLM3 a byte-level BPE (qwen2 / llama-bpe pre-tokenizer), Phi-3 a Llama-style SentencePiece, Gemma 3 a
SentencePiece BPE with byte fallback and no dummy prefix (tokenizer.model, and the tokenizer.json transformers
writes for it). The paper's refusal tokens are appended as plain added tokens, as the paper's tokenizers have them.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

from tiny_hf import refusal_strings, small_tokenizer
from tiny_model import CHATML, CORPUS

GEMMA_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{{ '<start_of_turn>' + ('model' if m['role'] == 'assistant' "
                  "else m['role']) + '\n' + m['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
                  "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}")
PHI3_TEMPLATE = ("{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] + '<|end|>\n' }}{% endfor %}"
                 "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}")
PHI3_SPECIALS = ["<|endoftext|>", "<|assistant|>", "<|end|>", "<|user|>", "<|system|>"]
GEMMA_SPECIALS = ["<start_of_turn>", "<end_of_turn>"]

# (config class, model class, tiny hyperparameters): each keeps its family's particular in play.
COMMON = dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
              max_position_embeddings=1024, rms_norm_eps=1e-6)
NO_IDS = dict(pad_token_id=None, bos_token_id=None, eos_token_id=None)  # the tiny BPE's are read from its files
FAMILIES = {
    # head_dim 32 != 64 / 4: key_length/value_length must be written; per-head q/k norms.
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM",
              dict(COMMON, **NO_IDS, num_hidden_layers=2, head_dim=32, tie_word_embeddings=True,
                   rope_parameters={"rope_type": "default", "rope_theta": 1e6})),
    # 4 layers: the 4th has no RoPE.
    "smollm3": ("SmolLM3Config", "SmolLM3ForCausalLM",
                dict(COMMON, **NO_IDS, num_hidden_layers=4, tie_word_embeddings=True, no_rope_layer_interval=4,
                     rope_parameters={"rope_type": "default", "rope_theta": 2e6})),
    # Phi-4-mini style: partial rotary, GQA, longrope (short factors below the original context).
    "phi3": ("Phi3Config", "Phi3ForCausalLM",
             dict(COMMON, num_hidden_layers=2, tie_word_embeddings=False, original_max_position_embeddings=256,
                  rope_parameters={"rope_type": "longrope", "rope_theta": 1e4, "partial_rotary_factor": 0.5,
                                   "original_max_position_embeddings": 256,
                                   "short_factor": [1.0 + 0.25 * i for i in range(4)],
                                   "long_factor": [2.0 + i for i in range(4)]},
                  pad_token_id=0, bos_token_id=1, eos_token_id=2)),
    # Sliding window 4 over 13-token probes, a global layer with linear rope scaling, query_pre_attn_scalar that is
    # not head_dim (the fold into q-norm), post-norms, tanh-GELU, tied embeddings scaled by sqrt(hidden).
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM",
               dict(COMMON, num_hidden_layers=4, head_dim=32, tie_word_embeddings=True, sliding_window=4,
                    layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"],
                    query_pre_attn_scalar=24,
                    rope_parameters={"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
                                     "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}},
                    pad_token_id=0, eos_token_id=1, bos_token_id=2)),
}


def _train_spm(**options) -> bytes:
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS.split(". ") * 20), model_writer=buf,
                                   vocab_size=300, model_type="bpe", byte_fallback=True, character_coverage=1.0,
                                   remove_extra_whitespaces=False, minloglevel=2, **options)
    return buf.getvalue()


def _vocab_and_merges(model: bytes) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A SentencePiece BPE model as the vocabulary and merge list tokenizers' BPE needs (merges ranked by the
    merged piece's score, as transformers' SentencePiece extractor ranks them)."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=model)
    vocab = {sp.IdToPiece(i): i for i in range(sp.vocab_size())}
    normal = {p for p, i in vocab.items() if not (sp.IsControl(i) or sp.IsUnknown(i) or sp.IsByte(i))}
    merges = []
    for piece in sorted(normal, key=lambda p: -sp.GetScore(vocab[p])):
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            if left in normal and right in normal:
                merges.append((vocab[piece], vocab[left], vocab[right], left, right))
    merges.sort(key=lambda m: m[:3])
    return vocab, [(m[3], m[4]) for m in merges]


def _spm_tokenizer(root: Path, family: str, refusal: list[str]) -> int:
    """tokenizer.model + the tokenizer.json/tokenizer_config.json transformers saves; returns the vocabulary size."""
    import transformers

    if family == "gemma3":
        model = _train_spm(add_dummy_prefix=False, pad_id=0, eos_id=1, bos_id=2, unk_id=3,
                           pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
                           user_defined_symbols=GEMMA_SPECIALS)
        vocab, merges = _vocab_and_merges(model)
        tok = transformers.GemmaTokenizer(vocab=vocab, merges=merges, mask_token="<unk>")
        tok.add_special_tokens({"additional_special_tokens": GEMMA_SPECIALS})
        template = GEMMA_TEMPLATE
    else:
        model = _train_spm(unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
        vocab, merges = _vocab_and_merges(model)
        tok = transformers.LlamaTokenizer(vocab=vocab, merges=merges)
        tok.add_special_tokens({"additional_special_tokens": PHI3_SPECIALS})
        template = PHI3_TEMPLATE
    tok.add_tokens(refusal)
    tok.chat_template = template
    tok.save_pretrained(str(root))
    (root / "tokenizer.model").write_bytes(model)
    config = json.loads((root / "tokenizer_config.json").read_text(encoding="utf-8"))
    if family == "phi3":
        config.update(eos_token="<|endoftext|>", add_bos_token=False)  # as Phi-3-mini's tokenizer_config
    (root / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return len(tok)


def _bpe_tokenizer(root: Path, family: str, refusal: list[str]) -> int:
    tok, config, n_vocab = small_tokenizer(refusal, pre="qwen2" if family == "qwen3" else "llama-bpe")
    config["chat_template"] = CHATML
    (root / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")
    (root / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return n_vocab


def _randomize(model, seed: int, embed_std: float = 1.0) -> None:
    """Weights far enough from the initialisation that a missed convention shows in the logits."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(0.15 * torch.randn(p.shape, generator=gen))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * embed_std)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * (2.0 / math.sqrt(p.shape[1])))


def write_family(root: str | Path, family: str, *, dtype: str = "float32", seed: int = 0,
                 tokenizer_json_only: bool = False, refusal: str = "categories", embed_std: float = 1.0,
                 **overrides) -> Path:
    """A tiny ``family`` checkpoint saved by transformers at ``root`` (safetensors in ``dtype``); ``refusal``
    "none" leaves the refusal tokens out (a base for `train`, which adds them); ``embed_std`` scales the random
    embeddings (N(0, 1) rows, tied, give logits of ~60: fine for conversion, too peaked to train in a few steps)."""
    import torch
    import transformers

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    refusal = refusal_strings(refusal)
    spm_based = family in ("phi3", "gemma3")
    n_vocab = (_spm_tokenizer if spm_based else _bpe_tokenizer)(root, family, refusal)
    config_name, model_name, hyper = FAMILIES[family]
    config = getattr(transformers, config_name)(vocab_size=n_vocab, **{**hyper, **overrides})
    torch.manual_seed(seed)
    model = getattr(transformers, model_name)(config).eval()
    _randomize(model, seed, embed_std)
    model.to(getattr(torch, dtype)).save_pretrained(str(root))
    if tokenizer_json_only:
        (root / "tokenizer.model").unlink()
    return root


def hf_tokenize(root: Path, text: str) -> list[int]:
    """The checkpoint's own tokenizer (tokenizer.json through the tokenizers library), no special tokens added."""
    import tokenizers

    return tokenizers.Tokenizer.from_file(str(root / "tokenizer.json")).encode(text, add_special_tokens=False).ids
