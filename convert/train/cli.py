"""CLI verb `train` (mapped from refusal_edge.cli.VERBS). Imports no torch until the command runs."""

from __future__ import annotations

from pathlib import Path

import click

from ..quantize import QUANT_TYPES

_PATH = click.Path(dir_okay=False, path_type=Path)


@click.command("train")
@click.argument("base", type=click.Path(path_type=Path))
@click.argument("original", type=_PATH)
@click.option("--contrast", required=True, type=_PATH,
              help="Benign look-alike prompts to answer (CoCoNot contrast rows; `chosen`/`response` is the answer).")
@click.option("--chat", type=_PATH, default=None, help="More benign prompts (with or without a `response`).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output directory: hf/, model.gguf, policy.toml, report/, train.json.")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Training steps [default: --epochs].")
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True), default=2.0, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--rank", type=click.IntRange(min=1), default=8, show_default=True, help="LoRA rank.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True)
@click.option("--rows-lr", type=click.FloatRange(min=0, min_open=True), default=3e-3, show_default=True,
              help="Learning rate of the decision tokens' embedding rows.")
@click.option("--threads", "-t", type=click.IntRange(min=1), default=None, help="CPU threads [default: all].")
@click.option("--seed", type=int, default=0, show_default=True, help="Split, data order and initialisation.")
@click.option("--device", default="auto", show_default=True, help="auto (a GPU when torch sees one), cpu, cuda, mps.")
@click.option("--tokens", type=click.Choice(["categories", "binary"]), default="categories", show_default=True,
              help="[respond] + the five CoCoNot category tokens, or [respond] + [refuse].")
@click.option("--quant", type=click.Choice(list(QUANT_TYPES), case_sensitive=False), default=None,
              help="Quantize model.gguf with llama.cpp's quantizer (e.g. q4_k_m) [default: f16].")
@click.option("--max-over-refusal", type=click.FloatRange(0, 1), default=0.10, show_default=True,
              help="Calibration: share of held-out benign prompts that may be refused.")
@click.option("--min-refusal", type=click.FloatRange(0, 1), default=None,
              help="Calibration: share of held-out should-refuse prompts that must be refused.")
@click.option("--heldout", type=click.FloatRange(0, 0.9), default=0.3, show_default=True,
              help="Share of every category/subcategory held out (never trained on) for calibration and report.")
@click.option("--max-prompt-tokens", type=click.IntRange(min=8), default=512, show_default=True,
              help="A longer prompt (in its chat template) is an error.")
@click.option("--max-answer-tokens", type=click.IntRange(min=1), default=48, show_default=True,
              help="Answers are cut here (the decision is the first token).")
@click.option("--resume", is_flag=True, help="Continue from DIR/checkpoint.pt (same data and settings).")
@click.option("--stop-after", type=click.IntRange(min=1), default=None,
              help="Pause after this step (the schedule stays that of --steps); continue with --resume.")
@click.option("--save-every", type=click.IntRange(min=1), default=50, show_default=True, help="Checkpoint interval.")
@click.option("--bf16", is_flag=True, help="bf16 autocast (faster on CPUs with bf16 units and on GPUs).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the base model's distilled answers are cached [default: the refusal-edge cache].")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option("--force", "-f", is_flag=True,
              help="Write into a non-empty --out that holds no run to resume (its outputs are replaced).")
def train(base, original, contrast, chat, out, steps, epochs, batch_size, rank, lr, rows_lr, threads, seed, device,
          tokens, quant, max_over_refusal, min_refusal, heldout, max_prompt_tokens, max_answer_tokens, resume,
          stop_after, save_every, bf16, cache_dir, quiet, force):
    """Teach a chat model the refusal tokens: SFT, then a calibrated refusal-token GGUF.

    BASE is a local Hugging Face chat checkpoint (Llama, Mistral, Qwen2, Qwen3, SmolLM3, Phi-3, Gemma 3).
    ORIGINAL holds prompts that should be refused (CoCoNot rows: prompt, category, subcategory, optional
    response). Held-out prompts of every
    category calibrate policy.toml and make the report; they are never trained on.

    \b
    Examples:
      refusal-edge train ./SmolLM2-135M-Instruct original_dev.jsonl --contrast contrast_pref.jsonl --out run/
      refusal-edge train ./qwen2-chat dev.jsonl --contrast c.jsonl --out run/ --tokens binary --quant q4_k_m
      refusal-edge train ./base dev.jsonl --contrast c.jsonl --out run/ --resume
    """
    from .pipeline import TrainOptions, run

    options = TrainOptions(
        base=base, original=original, contrast=contrast, chat=chat, out=out, steps=steps, epochs=epochs,
        batch_size=batch_size, rank=rank, lr=lr, rows_lr=rows_lr, threads=threads, seed=seed, device=device,
        tokens=tokens, quant=quant.lower() if quant else None, max_over_refusal=max_over_refusal,
        min_refusal=min_refusal, heldout=heldout, max_prompt_tokens=max_prompt_tokens,
        max_answer_tokens=max_answer_tokens, resume=resume, stop_after=stop_after, save_every=save_every, bf16=bf16,
        cache_dir=cache_dir, progress=not quiet, force=force)
    log = (lambda msg: click.echo(msg, err=True))
    summary = run(options, log=log)
    if "paused_at" not in summary:
        log(f"wrote {out}/model.gguf, {out}/policy.toml, {out}/hf/ and {out}/report/ "
            f"in {summary['wall_seconds'] / 60:.1f} min")
