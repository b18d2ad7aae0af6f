"""The settings of one `refusal-edge train` run: one field per setting, its flag, help and bounds beside it
(``refusal_edge.flags``), so that the CLI's options are generated from here and a new setting is one field."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from refusal_edge.flags import flag

from ..quantize import QUANT_TYPES


@dataclass(frozen=True)
class TrainOptions:
    base: Path = field(metadata=flag(argument=True, metavar="BASE"))
    original: Path = field(metadata=flag(argument=True, path="file", metavar="ORIGINAL"))
    contrast: Path = field(metadata=flag(
        "Benign look-alike prompts to answer (CoCoNot contrast rows; `chosen`/`response` is the answer).",
        path="file"))
    chat: Path | None = field(metadata=flag(
        "More benign prompts (with or without a `response`).", path="file", required=False))
    out: Path = field(metadata=flag(
        "Output directory: hf/, model.gguf, policy.toml, report/, train.json.", names=("-o", "--output", "--out"),
        path="dir"))
    steps: int | None = field(default=None, metadata=flag("Training steps [default: --epochs].", low=1))
    epochs: float = field(default=2.0, metadata=flag(low=0, open_low=True))
    batch_size: int = field(default=8, metadata=flag(low=1))
    rank: int = field(default=8, metadata=flag("LoRA rank.", low=1))
    lr: float = field(default=1e-3, metadata=flag(low=0, open_low=True))
    rows_lr: float = field(default=3e-3, metadata=flag(
        "Learning rate of the decision tokens' embedding rows.", low=0, open_low=True))
    first_weight: float = 2.0  # the decision token's weight in the loss (no flag: the recipe's choice)
    threads: int | None = field(default=None, metadata=flag(
        "CPU threads [default: all cores].", names=("-t", "--threads"), low=1))
    seed: int = field(default=0, metadata=flag("Split, data order and initialisation."))
    device: str = field(default="auto", metadata=flag("auto (a GPU when torch sees one), cpu, cuda, mps."))
    tokens: str = field(default="categories", metadata=flag(
        "[respond] + the five CoCoNot category tokens, or [respond] + [refuse].", choices=("categories", "binary")))
    quant: str | None = field(default=None, metadata=flag(
        "Quantize model.gguf with llama.cpp's quantizer (e.g. q4_k_m) [default: f16].", choices=tuple(QUANT_TYPES)))
    max_over_refusal: float = field(default=0.10, metadata=flag(
        "Calibration: share of held-out benign prompts that may be refused.", low=0, high=1))
    min_refusal: float | None = field(default=None, metadata=flag(
        "Calibration: share of held-out should-refuse prompts that must be refused.", low=0, high=1))
    heldout: float = field(default=0.3, metadata=flag(
        "Share of every category/subcategory held out (never trained on) for calibration and report.", low=0,
        high=0.9))
    max_prompt_tokens: int = field(default=512, metadata=flag(
        "A longer prompt (in its chat template) is an error.", low=8))
    max_answer_tokens: int = field(default=48, metadata=flag(
        "Answers are cut here (the decision is the first token).", low=1))
    resume: bool = field(default=False, metadata=flag("Continue from DIR/checkpoint.pt (same data and settings)."))
    stop_after: int | None = field(default=None, metadata=flag(
        "Pause after this step (the schedule stays that of --steps); continue with --resume.", low=1))
    save_every: int = field(default=50, metadata=flag("Checkpoint interval.", low=1))
    bf16: bool = field(default=False, metadata=flag("bf16 autocast (faster on CPUs with bf16 units and on GPUs)."))
    cache_dir: Path | None = field(default=None, metadata=flag(
        "Where the base model's distilled answers are cached [default: the refusal-edge cache].", path="dir"))
    progress: bool = field(default=True, metadata=flag("No progress bars.", names=("-q", "--quiet"), negate=True))
    force: bool = field(default=False, metadata=flag(
        "Write into a non-empty --out that holds no run to resume (its outputs are replaced).", names=("-f", "--force")))
