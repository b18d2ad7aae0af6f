"""CLI verb `train` (mapped from refusal_edge.cli.VERBS). Imports no torch until the command runs."""

from __future__ import annotations

import json

import click

from refusal_edge.flags import click_options
from refusal_edge.progress import set_quiet

from .options import TrainOptions


@click.command("train")
@click_options(TrainOptions, into="options")
@click.option("--json", "as_json", is_flag=True, help="Print the run's summary (train.json) as one JSON object.")
def train(options: TrainOptions, as_json: bool):
    """Teach a chat model the refusal tokens: SFT, then a calibrated refusal-token GGUF.

    BASE is a local Hugging Face chat checkpoint (Llama, Mistral, Qwen2, Qwen3, SmolLM3, Phi-3, Gemma 3).
    ORIGINAL holds prompts that should be refused (CoCoNot rows: prompt, category, subcategory, optional
    response). Held-out prompts of every
    category calibrate policy.toml and make the report; they are never trained on.

    \b
    Examples:
      refusal-edge train ./SmolLM2-135M-Instruct original_dev.jsonl --contrast contrast_pref.jsonl -o run/
      refusal-edge train ./qwen2-chat dev.jsonl --contrast c.jsonl -o run/ --tokens binary --quant q4_k_m
      refusal-edge train ./base dev.jsonl --contrast c.jsonl -o run/ --resume
    """
    from .pipeline import run

    set_quiet(not options.progress)
    log = (lambda msg: click.echo(msg, err=True))
    summary = run(options, log=log)
    if as_json:
        click.echo(json.dumps(summary, default=str))
    elif "paused_at" not in summary:
        out = options.out
        log(f"wrote {out}/model.gguf, {out}/policy.toml, {out}/hf/ and {out}/report/ "
            f"in {summary['wall_seconds'] / 60:.1f} min")
