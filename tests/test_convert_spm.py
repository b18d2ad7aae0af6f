"""SentencePiece (Llama-2 / Mistral style) tokenizers: converted when the sentencepiece package is there."""

from __future__ import annotations

import io
import json

import pytest

from conftest import THREADS
from refusal_edge.convert.hf_to_gguf import convert_checkpoint
from refusal_edge import RefusalModel
from tiny_hf import refusal_strings, write_shards, hf_weights
from tiny_model import CORPUS

import numpy as np

spm = pytest.importorskip("sentencepiece")

LLAMA2_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + "
                   "' [/INST]' }}{% else %}{{ m['content'] + eos_token }}{% endif %}{% endfor %}")


def write_spm_checkpoint(root):
    root.mkdir()
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS.split(". ") * 20), model_writer=buf,
                                   vocab_size=400, model_type="bpe", byte_fallback=True, character_coverage=1.0,
                                   bos_id=1, eos_id=2, unk_id=0, minloglevel=2)
    (root / "tokenizer.model").write_bytes(buf.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    n = sp.vocab_size()
    refusal = refusal_strings("categories")
    added = {t: n + i for i, t in enumerate(refusal)}
    (root / "added_tokens.json").write_text(json.dumps(added))
    (root / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True,
         "chat_template": LLAMA2_TEMPLATE}))
    cfg = {"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 256, "rms_norm_eps": 1e-5,
           "rope_theta": 10000.0, "vocab_size": n + len(refusal), "tie_word_embeddings": False}
    (root / "config.json").write_text(json.dumps(cfg))
    write_shards(root, hf_weights(cfg, np.random.default_rng(0)), 2)
    return sp


def test_sentencepiece_checkpoint(tmp_path):
    sp = write_spm_checkpoint(tmp_path / "hf")
    out = convert_checkpoint(tmp_path / "hf", tmp_path / "spm.gguf", progress=False).output
    with RefusalModel.load(out, n_ctx=128, n_threads=THREADS) as model:
        assert model.spec.respond.id == sp.vocab_size()
        assert all(model.tokenizer.is_control(i) for i in model.spec.token_ids)
        for text in ("hello world, how are you today?", "the quick brown fox"):
            assert model.tokenizer.tokenize(text, special=False) == sp.encode(text), text
        assert model.prompt_tokens("hi")[0] == 1  # <s>
