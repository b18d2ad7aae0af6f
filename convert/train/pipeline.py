"""`refusal-edge train` from start to end: data -> distilled answers -> SFT -> merged checkpoint -> GGUF ->
calibrated policy -> held-out report. Every input is checked before the slow parts start."""

from __future__ import annotations

import os
import platform
import random
import time
from dataclasses import asdict
from pathlib import Path

from .data import RESPOND, build_examples, decision_tokens, read_training_rows, split_rows, write_heldout
from .errors import TrainError
from .options import TrainOptions


def pick_device(name: str):
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
                            else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise TrainError(f"--device {name!r}: not a torch device (auto, cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainError(f"--device {name}: torch sees no CUDA device")
    return device


def _check_out(o: TrainOptions) -> Path:
    checkpoint = o.out / "checkpoint.pt"
    if o.resume and not checkpoint.is_file():
        raise TrainError(f"--resume: {o.out} holds no checkpoint.pt to resume from")
    if not o.resume and checkpoint.is_file():
        raise TrainError(f"{o.out} holds a training checkpoint: pass --resume to continue it, or choose another --out")
    if o.out.exists() and not o.out.is_dir():
        raise TrainError(f"--out {o.out} is a file, not a directory")
    if not o.resume and not o.force and o.out.is_dir() and any(o.out.iterdir()):
        raise TrainError(f"--out {o.out} is not empty and holds no run to resume: choose an empty or new directory, "
                         "or pass --force to write into it (its model.gguf, policy.toml, hf/, report/ and train.json "
                         "are replaced)")
    return checkpoint


def _check_calibration_data(split, o: TrainOptions) -> None:
    """Calibration runs after training, on the held-out split: whether it can succeed is known now. The default
    calibration (guaranteed mode) needs enough benign prompts in its calibration part to promise
    --max-over-refusal (and should-refuse ones for --min-refusal); fail before the slow part, not after it."""
    from refusal_edge.evaluate.binomial import trials_needed
    from refusal_edge.evaluate.guarantee import DEFAULT_CONFIDENCE
    from refusal_edge.settings import CALIBRATION_HOLDOUT

    statements = 1 + (o.min_refusal is not None)
    each = 1.0 - (1.0 - DEFAULT_CONFIDENCE) / statements
    wanted = [("benign", sum(not r.should_refuse for r in split.heldout), o.max_over_refusal, "--max-over-refusal")]
    if o.min_refusal is not None:
        wanted.append(("should-refuse", sum(r.should_refuse for r in split.heldout), 1.0 - o.min_refusal,
                       "--min-refusal"))
    for kind, held, limit, option in wanted:
        usable = held - min(int(round(CALIBRATION_HOLDOUT * held)), max(held - 1, 0))  # calibrate's own split
        needed = trials_needed(limit, each)
        if needed is None or usable < needed:
            raise TrainError(
                f"too few {kind} prompts to calibrate after training: {option} at confidence {DEFAULT_CONFIDENCE:g} "
                f"needs {needed if needed is not None else 'more'} in calibration's part of the held-out split, "
                f"which would hold {usable} (of {held} held out): add {kind} prompts, raise --heldout, or loosen "
                f"{option}")


def run(o: TrainOptions, log=print) -> dict:
    import torch

    from refusal_edge.files import cache_dir

    from .distill import distill
    from .loop import LoopConfig, fingerprint, train
    from .model import Encoder, base_identity, hf_base, load_base, merged, trainable
    from .outputs import calibrate_and_report, set_default_policy, write_gguf, write_summary

    t_start = time.perf_counter()
    tokens = decision_tokens(o.tokens)
    checkpoint = _check_out(o)
    original = read_training_rows(o.original, "original")
    contrast = read_training_rows(o.contrast, "contrast")
    chat = read_training_rows(o.chat, "chat") if o.chat else []
    split = split_rows(original, contrast, chat, o.heldout, o.seed)
    _check_calibration_data(split, o)
    threads = o.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    device = pick_device(o.device)
    random.seed(o.seed)
    torch.manual_seed(o.seed)

    base = hf_base(Path(o.base), o.out, log)
    model, tok = load_base(base, progress=o.progress)
    encoder = Encoder(tok, o.max_prompt_tokens, o.max_answer_tokens)
    for r in split.train:  # too-long prompts are errors now, not after distillation
        encoder.prompt(r.prompt, r.where)
    model.to(device)
    unanswered = [r.prompt for r in split.train if not r.should_refuse and r.response is None]
    answers = {}
    if unanswered:
        base_id = base_identity(base)
        log(f"{len(unanswered)} benign prompts without an answer: the base model answers them (cached)")
        answers = distill(model, tok, unanswered, base_id=base_id, max_tokens=o.max_answer_tokens, encoder=encoder,
                          cache=(o.cache_dir or cache_dir() / "train-distill") / f"{base_id[:16]}.jsonl",
                          progress=o.progress)
    examples = build_examples(split.train, answers, o.tokens, o.seed)

    peft_model, rows, ids = trainable(model, tok, tokens, o.rank, o.seed)
    rows.to(device)
    decision_id = dict(zip([RESPOND, *(["refuse"] if o.tokens == "binary" else _categories())], ids))
    data = [encoder.example(e.prompt, decision_id[e.decision], e.response, e.where) for e in examples]
    per_epoch = -(-len(data) // o.batch_size)
    steps = o.steps or max(1, round(o.epochs * per_epoch))
    cfg = LoopConfig(steps=steps, batch_size=o.batch_size, lr=o.lr, rows_lr=o.rows_lr, first_weight=o.first_weight,
                     seed=o.seed, save_every=o.save_every, bf16=o.bf16)
    log(f"data: {len(data)} training examples ({sum(r.should_refuse for r in split.train)} refusals), "
        f"{len(split.heldout)} held out; {steps} steps of {o.batch_size} ({steps / per_epoch:.2f} epochs) on {device}")
    key = fingerprint(data, cfg, {"base": base_identity(base), "rank": o.rank, "tokens": tokens})
    o.out.mkdir(parents=True, exist_ok=True)
    figures = train(peft_model, rows, data, cfg, checkpoint=checkpoint, resume=o.resume, key=key, device=device,
                    stop_at=o.stop_after, progress=o.progress, log=log)
    if figures["done"] < steps:
        log(f"paused after step {figures['done']}/{steps} (--stop-after): run again with --resume to continue")
        return {"paused_at": figures["done"], **figures}

    peft_model.to("cpu")
    rows.to("cpu")
    hf_dir = merged(peft_model, rows, tok, o.out / "hf")
    gguf = write_gguf(hf_dir, o.out / "model.gguf", o.quant, threads, o.progress, log)
    heldout = write_heldout(split, o.out / "heldout")
    result = calibrate_and_report(gguf, heldout, o.out, max_over_refusal=o.max_over_refusal,
                                  min_refusal=o.min_refusal, threads=threads, seed=o.seed, log=log)
    set_default_policy(gguf, o.out / "policy.toml")
    summary = {"options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(o).items()},
               "tokens": list(tokens), "examples": len(data), "heldout_prompts": len(split.heldout),
               "training": figures, "outputs": {"hf": str(hf_dir), "gguf": str(gguf), **result},
               "wall_seconds": round(time.perf_counter() - t_start, 1), "machine": platform.machine(),
               "torch": torch.__version__, "threads": threads}
    write_summary(o.out / "train.json", summary)
    return summary


def _categories():
    from refusal_edge.metadata import CATEGORIES

    return list(CATEGORIES)
