"""Training tokens/s of `refusal-edge train`'s loop against a plain transformers + peft loop, same data, one run.

The plain loop is what one writes first: batches in data order, ``model(input_ids, labels=...)`` (the output
matrix over every position, loss masked to the answer), LoRA plus peft's ``trainable_token_indices`` for the new
token rows. The verb's loop groups similar lengths (less padding) and runs the output matrix on the answer
positions only, and runs the batch's shared prefix (the chat template's opening: SmolLM2's is a 24-token system
prompt) once. A third arm is the verb's loop without that prefix sharing. All start from the same base and the same
encoded examples; tokens counted are non-padding.

    python benchmarks/train_throughput.py HF_DIR original.jsonl contrast.jsonl --steps 10 --threads 2
"""

from __future__ import annotations

import argparse
import time


def encoded(base, original, contrast, n: int):
    from refusal_edge.convert.train.data import RESPOND, decision_tokens, read_training_rows
    from refusal_edge.convert.train.model import Encoder, load_base, trainable
    from refusal_edge.metadata import CATEGORIES

    model, tok = load_base(base)
    encoder = Encoder(tok, 512, 48)
    rows = read_training_rows(original, "original")[: n // 2] + read_training_rows(contrast, "contrast")[: n // 2]
    peft_model, new_rows, ids = trainable(model, tok, decision_tokens("categories"), rank=8, seed=0)
    by_name = dict(zip([RESPOND, *CATEGORIES], ids))
    data = [encoder.example(r.prompt, by_name[r.category if r.should_refuse else RESPOND],
                            r.response or "I'm sorry, I can't help with that.") for r in rows]
    return peft_model, new_rows, ids, data


def ours(args, share_prefix: bool = True):
    import torch

    from refusal_edge.convert.train import loop
    from refusal_edge.convert.train.loop import LoopConfig, train

    if not share_prefix:
        loop.shared_prefix, kept = (lambda batch: 0), loop.shared_prefix

    peft_model, new_rows, _, data = encoded(args.base, args.original, args.contrast, args.examples)
    cfg = LoopConfig(steps=args.steps, batch_size=args.batch_size, bf16=args.bf16)
    figures = train(peft_model, new_rows, data, cfg, checkpoint=args.tmp / "bench.pt", resume=False, key="bench",
                    device=torch.device("cpu"), progress=False, log=lambda m: None)
    if not share_prefix:
        loop.shared_prefix = kept
    return figures["tokens_per_second"]


def plain(args):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from refusal_edge.convert.train.model import add_decision_tokens  # noqa: F401  (same tokens, same data)

    _, _, ids, data = encoded(args.base, args.original, args.contrast, args.examples)
    model = AutoModelForCausalLM.from_pretrained(str(args.base), dtype=torch.float32)
    model.resize_token_embeddings(max(ids) + 1, mean_resizing=False)
    config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear",
                        trainable_token_indices=list(ids))
    model = get_peft_model(model, config)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    tokens, t0 = 0, time.perf_counter()
    for step in range(args.steps):
        batch = [data[(step * args.batch_size + k) % len(data)] for k in range(args.batch_size)]
        width = max(len(e.ids) for e in batch)
        ids_t = torch.tensor([e.ids + [0] * (width - len(e.ids)) for e in batch])
        mask = torch.tensor([[1] * len(e.ids) + [0] * (width - len(e.ids)) for e in batch])
        labels = torch.full((len(batch), width + 1), -100)
        for r, e in enumerate(batch):
            labels[r, e.first_target + 1: e.first_target + 1 + len(e.targets)] = torch.tensor(e.targets)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            loss = model(input_ids=ids_t, attention_mask=mask, labels=labels[:, :width]).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += sum(len(e.ids) for e in batch)
    return tokens / (time.perf_counter() - t0)


def main() -> None:
    import tempfile
    from pathlib import Path

    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("base", type=Path)
    p.add_argument("original", type=Path)
    p.add_argument("contrast", type=Path)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--examples", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bf16", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        args.tmp = Path(tmp)
        base_tps = plain(args)
        unshared_tps = ours(args, share_prefix=False)
        our_tps = ours(args)
    print(f"plain transformers+peft loop:             {base_tps:.0f} tokens/s")
    print(f"refusal-edge train loop, no shared prefix: {unshared_tps:.0f} tokens/s")
    print(f"refusal-edge train loop:                  {our_tps:.0f} tokens/s")
    print(f"ratio (train / plain):        {our_tps / base_tps:.2f}x, shared prefix alone {our_tps / unshared_tps:.2f}x  "
          f"({args.steps} steps of {args.batch_size}, {args.threads} threads{', bf16' if args.bf16 else ''})")


if __name__ == "__main__":
    main()
