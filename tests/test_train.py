"""`refusal-edge train` on tiny random checkpoints (llama, Qwen2): GGUF that loads and decides, refusal probability
that rises on the training prompts, resume == uninterrupted, and bad inputs as one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from click.testing import CliRunner  # noqa: E402

from conftest import THREADS  # noqa: E402
from refusal_edge.cli import main  # noqa: E402
from refusal_edge.metadata import CATEGORIES  # noqa: E402
from tiny_hf import write_tiny_hf  # noqa: E402

FAST = ["--threads", str(THREADS), "--quiet", "--batch-size", "8", "--lr", "1e-2", "--rows-lr", "5e-2",
        "--max-answer-tokens", "8", "--max-over-refusal", "0.5"]


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def coconot(tmp: Path) -> tuple[Path, Path]:
    """Should-refuse rows (every category, two subcategories, three prompts each) and contrast rows; the contrast
    rows of one subcategory have no answer, so the base model answers them (distillation)."""
    original, contrast = [], []
    for c, cat in enumerate(CATEGORIES):
        for s in range(2):
            for i in range(3):
                original.append({"prompt": f"i cannot help with that unsafe request {c} {s} {i}", "category": cat,
                                 "subcategory": f"sub {s}"})
                row = {"prompt": f"please tell me a story about the sea {c} {s} {i}", "category": cat,
                       "subcategory": f"sub {s}"}
                if s == 0:
                    row["chosen"] = "the sea is blue and the sky is too."
                contrast.append(row)
    return write_rows(tmp / "original.jsonl", original), write_rows(tmp / "contrast.jsonl", contrast)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return coconot(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return write_tiny_hf(tmp_path_factory.mktemp("llama") / "hf", refusal="none", n_shards=1)


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory):
    return write_tiny_hf(tmp_path_factory.mktemp("qwen2") / "hf", vocab="qwen2", refusal="none", tie=True, n_shards=1)


def train(*args) -> object:
    return CliRunner().invoke(main, ["train", *map(str, args)])


def refusal_probability(model, prompts) -> float:
    return sum(model.decide(p).refusal_probability for p in prompts) / len(prompts)


@pytest.mark.parametrize("arch, tokens", [("llama", "categories"), ("qwen2", "binary")])
def test_train_writes_a_calibrated_gguf_that_loads_and_decides(arch, tokens, request, data, tmp_path):
    from refusal_edge import RefusalModel
    from refusal_edge.policy import Policy

    tiny = request.getfixturevalue(arch)
    out = tmp_path / "run"
    result = train(tiny.root, data[0], "--contrast", data[1], "--out", out, "--steps", 30, "--tokens", tokens,
                   "--cache-dir", tmp_path / "cache", *FAST)
    assert result.exit_code == 0, result.output
    for name in ("model.gguf", "policy.toml", "train.json", "hf/config.json", "report/report.json",
                 "heldout/original.jsonl"):
        assert (out / name).is_file(), name
    assert list(out.glob("*.gguf")) == [out / "model.gguf"]
    assert list((tmp_path / "cache").glob("*.jsonl")), "the base model's answers were not cached"
    summary = json.loads((out / "train.json").read_text())
    assert summary["training"]["done"] == 30 and summary["heldout_prompts"] > 0
    train_refuse = [json.loads(line)["prompt"] for line in data[0].read_text().splitlines()]
    held = {json.loads(line)["prompt"] for line in (out / "heldout" / "original.jsonl").read_text().splitlines()}
    train_refuse = [p for p in train_refuse if p not in held]
    train_benign = [f"please tell me a story about the sea {c} 0 0" for c in range(5)]
    with RefusalModel.load(out / "model.gguf", n_ctx=256, n_threads=THREADS) as model:
        assert model.categories == (tuple(CATEGORIES) if tokens == "categories" else ("refuse",))
        assert model.default_policy.to_dict() == Policy.load(out / "policy.toml", model.categories).to_dict()
        decision = model.decide(train_refuse[0])
        assert decision.decision_token
        # what it learned: refusal prompts get far more refusal probability than benign ones
        assert refusal_probability(model, train_refuse) > refusal_probability(model, train_benign) + 0.3


def test_ctrl_c_saves_and_stops_after_the_step(llama, tmp_path, monkeypatch):
    import os
    import signal

    import torch

    import refusal_edge.convert.train.loop as loop
    from refusal_edge.convert.train.errors import TrainError

    torch.set_num_threads(THREADS)
    peft_model, new_rows, _, data, _ = _setup(llama, _rows())
    real, calls = loop.batch_loss, []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of step 2
        return real(*args)

    monkeypatch.setattr(loop, "batch_loss", interrupted)
    with pytest.raises(TrainError, match=r"interrupted: saved step 2/6.*--resume"):
        loop.train(peft_model, new_rows, data, loop.LoopConfig(steps=6, batch_size=4), checkpoint=tmp_path / "c.pt",
                   resume=False, key="k", device=torch.device("cpu"), progress=False, log=lambda m: None)
    assert torch.load(tmp_path / "c.pt", weights_only=True)["step"] == 2 and len(calls) == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def _setup(tiny, rows, seed=0):
    from refusal_edge.convert.train.data import RESPOND, decision_tokens
    from refusal_edge.convert.train.model import Encoder, load_base, trainable

    model, tok = load_base(tiny.root)
    encoder = Encoder(tok, 256, 8)
    peft_model, new_rows, ids = trainable(model, tok, decision_tokens("categories"), rank=4, seed=seed)
    by_name = dict(zip([RESPOND, *CATEGORIES], ids))
    data = [encoder.example(p, by_name[d], a) for p, d, a in rows]
    return peft_model, new_rows, ids, data, encoder


def _rows():
    refuse = [(f"i cannot help with that unsafe request {i}", CATEGORIES[i % 5], "sorry, i cannot.")
              for i in range(8)]
    benign = [(f"please tell me a story about the sea {i}", "respond", "the sea is blue.") for i in range(8)]
    return refuse + benign


def _p_decision(peft_model, new_rows, ids, data) -> float:
    """Mean probability of each training example's own decision token at the first response position."""
    import torch

    causal = peft_model.get_base_model()
    with torch.no_grad():
        ps = []
        for e in data:
            logits = causal(input_ids=torch.tensor([e.ids])).logits[0, e.first_target]
            ps.append(torch.softmax(logits.float(), -1)[e.targets[0]].item())
    return sum(ps) / len(ps)


def test_training_raises_the_probability_of_the_right_token_qwen2(qwen2, tmp_path):
    import torch

    from refusal_edge.convert.train.loop import LoopConfig, train as run_loop

    torch.set_num_threads(THREADS)
    peft_model, new_rows, ids, data, _ = _setup(qwen2, _rows())
    before = _p_decision(peft_model, new_rows, ids, data)
    cfg = LoopConfig(steps=25, batch_size=8, lr=1e-2, rows_lr=5e-2)
    run_loop(peft_model, new_rows, data, cfg, checkpoint=tmp_path / "c.pt", resume=False, key="k",
             device=torch.device("cpu"), progress=False, log=lambda m: None)
    after = _p_decision(peft_model, new_rows, ids, data)
    assert after > max(0.5, before + 0.3), (before, after)


def test_resume_gives_the_uninterrupted_result(llama, tmp_path):
    import torch

    from refusal_edge.convert.train.loop import LoopConfig, train as run_loop

    torch.set_num_threads(THREADS)
    cfg = LoopConfig(steps=6, batch_size=4, lr=1e-2, rows_lr=5e-2)
    kw = dict(key="k", device=torch.device("cpu"), progress=False, log=lambda m: None)

    def params(peft_model, new_rows):
        named = {n: p.detach().clone() for n, p in peft_model.named_parameters() if p.requires_grad}
        return {**named, **{f"decision_rows.{n}": p.detach().clone() for n, p in new_rows.named_parameters()}}

    a, rows_a, _, data, _ = _setup(llama, _rows())
    run_loop(a, rows_a, data, cfg, checkpoint=tmp_path / "a.pt", resume=False, **kw)
    b, rows_b, _, data_b, _ = _setup(llama, _rows())
    run_loop(b, rows_b, data_b, cfg, checkpoint=tmp_path / "b.pt", resume=False, stop_at=3, **kw)
    c, rows_c, _, data_c, _ = _setup(llama, _rows())  # a new process would start from the base again
    run_loop(c, rows_c, data_c, cfg, checkpoint=tmp_path / "b.pt", resume=True, **kw)
    expected, got = params(a, rows_a), params(c, rows_c)
    assert expected.keys() == got.keys() and len(expected) > 2
    for name in expected:
        assert torch.allclose(expected[name], got[name], atol=1e-6, rtol=0), name
    assert not torch.equal(params(b, rows_b)["decision_rows.input"], expected["decision_rows.input"])
    with pytest.raises(Exception, match="other data or settings"):
        run_loop(c, rows_c, data_c, cfg, checkpoint=tmp_path / "b.pt", resume=True,
                 **{**kw, "key": "another"})


def _error(result) -> str:
    assert result.exit_code in (1, 2), result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return errors[0]


def test_bad_inputs_are_one_line_errors(llama, data, tmp_path):
    out = tmp_path / "run"
    no_category = write_rows(tmp_path / "nocat.jsonl", [{"prompt": "hello"}])
    assert "no 'category' field" in _error(train(llama.root, no_category, "--contrast", data[1], "--out", out))
    unknown = write_rows(tmp_path / "unknown.jsonl", [{"prompt": "hello", "category": "Rudeness"}])
    assert "unknown category 'Rudeness'" in _error(train(llama.root, unknown, "--contrast", data[1], "--out", out))
    missing = tmp_path / "missing.jsonl"
    assert "not found" in _error(train(llama.root, missing, "--contrast", data[1], "--out", out))
    assert "--tokens" in _error(train(llama.root, data[0], "--contrast", data[1], "--out", out, "--tokens", "x"))
    assert "no checkpoint.pt" in _error(train(llama.root, data[0], "--contrast", data[1], "--out", out, "--resume"))

    too_long = _error(train(llama.root, data[0], "--contrast", data[1], "--out", out, "--max-prompt-tokens", 8,
                            "--quiet", "--max-over-refusal", "0.5"))
    assert "over --max-prompt-tokens 8" in too_long and "original.jsonl:" in too_long

    no_template = write_tiny_hf(tmp_path / "plain", refusal="none", n_shards=1)
    config = json.loads((no_template.root / "tokenizer_config.json").read_text())
    config.pop("chat_template")
    (no_template.root / "tokenizer_config.json").write_text(json.dumps(config))
    assert "no chat template" in _error(train(no_template.root, data[0], "--contrast", data[1], "--out", out,
                                              "--max-over-refusal", "0.5"))

    gguf = tmp_path / "base.gguf"
    gguf.write_bytes(b"GGUF")
    assert "cannot train from this GGUF" in _error(train(gguf, data[0], "--contrast", data[1], "--out", out,
                                                         "--max-over-refusal", "0.5", "--force"))
    assert not (out / "model.gguf").exists()


def test_a_gguf_base_is_exported_then_trained(data, tmp_path):
    """BASE may be a GGUF (here one converted from a tiny checkpoint that already has the decision tokens): it is
    exported to a checkpoint in DIR/base-hf once, and the run is the same as from that checkpoint."""
    from refusal_edge.convert.hf_to_gguf import convert_checkpoint
    from refusal_edge import RefusalModel

    tiny = write_tiny_hf(tmp_path / "hf", n_shards=1)
    base = convert_checkpoint(tiny.root, tmp_path / "base.gguf", outtype="f32", progress=False, log=lambda *_: None).output
    out = tmp_path / "run"
    result = train(base, data[0], "--contrast", data[1], "--out", out, "--steps", 4, "--cache-dir", tmp_path / "c",
                   *FAST)
    assert result.exit_code == 0, result.output
    assert (out / "base-hf" / "config.json").is_file() and (out / "base-hf.source").is_file()
    with RefusalModel.load(out / "model.gguf", n_ctx=256, n_threads=THREADS) as model:
        assert model.categories == tuple(CATEGORIES)
        assert model.decide("hello there").decision_token
