"""`train`'s loop: the batch's shared prefix (the chat template's opening) runs once, and that changes nothing."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from conftest import THREADS  # noqa: E402
from tiny_hf import write_tiny_hf  # noqa: E402

from refusal_edge.convert.train import loop  # noqa: E402
from refusal_edge.convert.train.data import decision_tokens  # noqa: E402
from refusal_edge.convert.train.model import Encoded, Encoder, load_base, trainable  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(THREADS)
    tiny = write_tiny_hf(tmp_path_factory.mktemp("hf") / "hf", refusal="none", n_shards=1)
    model, tok = load_base(tiny.root, progress=False)
    peft_model, rows, ids = trainable(model, tok, decision_tokens("categories"), 4, 0)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    encoder = Encoder(tok, 200, 12)
    words = ["hello there", "how do i bake bread", "what is the capital of france", "tell me a story about a cat"]
    batch = [encoder.example("please answer this one carefully: " + w * (1 + k % 2), ids[k % len(ids)], "sure, here it is " * (1 + k % 3),
                             learns_decision=k % 4 != 3) for k, w in enumerate(words * 2)]
    return peft_model, rows, batch


def _loss_and_grads(peft_model, rows, batch, monkeypatch, share: bool):
    peft_model.zero_grad(set_to_none=True)
    rows.zero_grad(set_to_none=True)
    if not share:
        monkeypatch.setattr(loop, "shared_prefix", lambda b: 0)
    loss = loop.batch_loss(peft_model.get_base_model(), batch, 2.0, torch.device("cpu"), False)
    loss.backward()
    monkeypatch.undo()
    grads = [p.grad.clone() for p in peft_model.parameters() if p.requires_grad] + [rows.input.grad.clone()]
    return loss.item(), grads


def test_the_shared_prefix_runs_once_with_the_same_loss_and_gradients(setup, monkeypatch):
    peft_model, rows, batch = setup
    assert loop.shared_prefix(batch) >= 8  # the template's opening and the common start of the prompts
    plain, plain_grads = _loss_and_grads(peft_model, rows, batch, monkeypatch, share=False)
    shared, shared_grads = _loss_and_grads(peft_model, rows, batch, monkeypatch, share=True)
    assert shared == pytest.approx(plain, rel=1e-5)
    assert any(g.abs().max() > 0 for g in plain_grads)
    for a, b in zip(plain_grads, shared_grads):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_shared_prefix_stops_at_the_first_answer_position_and_at_a_difference():
    a = Encoded(ids=[1, 2, 3, 4, 5, 6], first_target=4, targets=[7, 8])
    b = Encoded(ids=[1, 2, 3, 4, 5, 6, 9], first_target=5, targets=[7, 8, 9])
    c = Encoded(ids=[1, 2, 9, 4], first_target=3, targets=[7])
    assert loop.shared_prefix([a, b]) == 4  # a's answer starts after position 4: its logits must be computed
    assert loop.shared_prefix([a, b, c]) == 2


def test_an_example_that_only_teaches_the_continuation_has_no_decision_target(setup):
    peft_model, rows, batch = setup
    lm = peft_model.get_base_model()
    learns = [e for e in batch if e.learns_decision][:1]
    masked = [Encoded(e.ids, e.first_target, e.targets, learns_decision=False) for e in learns]
    weighted = loop.batch_loss(lm, learns, 1e6, torch.device("cpu"), False).item()
    unweighted = loop.batch_loss(lm, masked, 1e6, torch.device("cpu"), False).item()
    answer_only = loop.batch_loss(lm, masked, 1.0, torch.device("cpu"), False).item()
    assert unweighted == pytest.approx(answer_only)  # the decision weight no longer matters
    assert weighted != pytest.approx(unweighted)


def test_training_runs_with_deterministic_kernels_and_restores_the_setting(tmp_path, monkeypatch):
    """A CPU kernel in backward raced between threads (two recipe runs differed in the last bits of every
    weight): the loop turns deterministic algorithms on for its steps and gives the caller's setting back."""
    torch.set_num_threads(THREADS)
    tiny = write_tiny_hf(tmp_path / "hf", refusal="none", n_shards=1)

    def run():
        model, tok = load_base(tiny.root, progress=False)
        peft_model, rows, ids = trainable(model, tok, decision_tokens("categories"), 4, 0)
        encoder = Encoder(tok, 200, 12)
        data = [encoder.example(f"question {k}: " + "why " * k, ids[k % len(ids)], "because " * (1 + k % 3))
                for k in range(8)]
        seen = []
        real = loop.batch_loss

        def recording(*args, **kwargs):
            seen.append(torch.are_deterministic_algorithms_enabled())
            return real(*args, **kwargs)

        monkeypatch.setattr(loop, "batch_loss", recording)
        loop.train(peft_model, rows, data, loop.LoopConfig(steps=3, batch_size=4), checkpoint=tmp_path / "c.pt",
                   resume=False, key="k", device=torch.device("cpu"), progress=False, log=lambda m: None)
        monkeypatch.undo()
        (tmp_path / "c.pt").unlink()
        return seen, [p.detach().clone() for p in peft_model.parameters() if p.requires_grad]

    assert not torch.are_deterministic_algorithms_enabled()
    seen, first = run()
    assert seen == [True] * 3
    assert not torch.are_deterministic_algorithms_enabled()
    _, second = run()
    assert all(torch.equal(a, b) for a, b in zip(first, second))
