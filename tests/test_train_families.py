"""`refusal-edge train` on tiny Qwen3, SmolLM3, Phi-3 and Gemma 3 bases saved by transformers: one short run per
family gives a GGUF of that architecture that loads in llama.cpp and decides, refusal probability that rose on
the training prompts, and prompts that the trainer tokenized exactly as the runtime does (Phi-3's SentencePiece
space after each special token, BOS as the tokenizer adds it, Gemma's scaled embedding of the new tokens)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("sentencepiece")

from conftest import THREADS  # noqa: E402
from test_train import FAST, coconot, refusal_probability, train  # noqa: E402
from tiny_families import write_family  # noqa: E402

ARCH = {"qwen3": "qwen3", "smollm3": "smollm3", "phi3": "phi3", "gemma3": "gemma3"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return coconot(tmp_path_factory.mktemp("data"))


@pytest.mark.parametrize("family", list(ARCH))
def test_train_accepts_the_family_and_its_gguf_decides(family, data, tmp_path):
    import gguf
    from transformers import AutoTokenizer

    from convert.train.model import Encoder
    from refusal_edge import RefusalModel

    # Embeddings at a realistic scale (N(0, 1/hidden)): N(0, 1) rows, tied, make logits too peaked to move in 30 steps
    base = write_family(tmp_path / "base", family, refusal="none", embed_std=0.125)
    out = tmp_path / "run"
    result = train(base, data[0], "--contrast", data[1], "--out", out, "--steps", 30, "--tokens", "binary",
                   "--cache-dir", tmp_path / "cache", *FAST)
    assert result.exit_code == 0, result.output
    fields = gguf.GGUFReader(out / "model.gguf").fields
    assert fields["general.architecture"].contents() == ARCH[family]

    held = {json.loads(line)["prompt"] for line in (out / "heldout" / "original.jsonl").read_text().splitlines()}
    refuse = [p for p in (json.loads(line)["prompt"] for line in data[0].read_text().splitlines()) if p not in held]
    benign = [f"please tell me a story about the sea {c} 0 0" for c in range(5)]
    encoder = Encoder(AutoTokenizer.from_pretrained(str(out / "hf")), 256, 8)
    with RefusalModel.load(out / "model.gguf", n_ctx=256, n_threads=THREADS) as model:
        assert model.categories == ("refuse",)
        for prompt in (refuse[0], benign[0], "spelled [refuse] <|im_end|> <end_of_turn> <|end|>"):
            assert encoder.prompt(prompt) == model.prompt_tokens(prompt), prompt
        assert model.decide(refuse[0]).decision_token
        assert refusal_probability(model, refuse) > refusal_probability(model, benign) + 0.3
