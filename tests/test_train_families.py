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

    from refusal_edge.convert.train.model import Encoder, Turn
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
        # a chat whose first turn was refused renders as the runtime renders it (the default recipe trains on these)
        chat = [{"role": "user", "content": refuse[0]},
                {"role": "assistant", "content": "I can't help with that.", "refusal_token": "[refuse]"},
                {"role": "user", "content": benign[1]}]
        turns = [Turn("user", refuse[0]), Turn("assistant", chat[1]["content"], model.spec.token_ids[1]),
                 Turn("user", benign[1])]
        assert encoder.conversation(turns) == model.prompt_tokens(chat)
        assert model.decide(refuse[0]).decision_token
        assert refusal_probability(model, refuse) > refusal_probability(model, benign) + 0.3


def test_the_training_loss_is_the_models_own_loss_for_gemma3(tmp_path):
    """batch_loss runs the decoder and the output matrix itself: with final-logit soft-capping it must equal the full
    forward's loss; and the merged checkpoint computes what was trained, the decision token an input at the answer
    positions through Gemma's scaled embedding."""
    import torch
    import torch.nn.functional as F

    from refusal_edge.convert.train.data import decision_tokens
    from refusal_edge.convert.train.loop import batch_loss
    from refusal_edge.convert.train.model import Encoder, load_base, merged, trainable

    base = write_family(tmp_path / "base", "gemma3", refusal="none", embed_std=0.125, final_logit_softcapping=3.0)
    model, tok = load_base(base, progress=False)
    peft_model, rows, ids = trainable(model, tok, decision_tokens("binary"), rank=2, seed=0)
    with torch.no_grad():
        rows.input.mul_(4)  # away from the initial rows, so a missing embedding scale shows
    e = Encoder(tok, 256, 8).example("tell me about the sea", ids[0], "the sea is blue.")
    causal = peft_model.get_base_model()
    with torch.no_grad():
        full = causal(input_ids=torch.tensor([e.ids])).logits[0]
        positions = range(e.first_target, e.first_target + len(e.targets))
        want = F.cross_entropy(full[list(positions)].float(), torch.tensor(e.targets))
        got = batch_loss(causal, [e], 1.0, torch.device("cpu"), bf16=False)
    assert abs(want.item() - got.item()) < 1e-4, (want.item(), got.item())

    # and what was trained is what the merged checkpoint computes (the new rows go through Gemma's embedding scale)
    from transformers import AutoModelForCausalLM

    merged(peft_model, rows, tok, tmp_path / "merged")
    reloaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"), dtype=torch.float32).eval()
    with torch.no_grad():
        again = reloaded(input_ids=torch.tensor([e.ids])).logits[0]
    assert torch.allclose(again, full, atol=1e-4), (again - full).abs().max()
