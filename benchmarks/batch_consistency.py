"""How far batched scoring's probabilities are from one-at-a-time scoring, next to how far one-at-a-time scoring is
from itself.

llama.cpp's CPU kernels round differently for different batch shapes (a single-row product runs another kernel
than a many-row one), so the same prompt evaluated in a different split gives slightly different logits, and a
sensitive prompt can turn that into a visible probability change. The yardstick is therefore the one-at-a-time
path against itself: scoring the same prompt twice in a row (the second time only its last token is evaluated
again, from the cache), which every user of ``decide`` already gets.

Evaluation's default path (``score_aligned``: each prompt prefilled alone in fixed blocks) is checked for what it
promises, the same bytes whether the prompts are scored together, in reverse order or one per fresh model, and timed
against the batched and the one-at-a-time paths it replaced.

    python benchmarks/batch_consistency.py MODEL.gguf --prompts 48 --data original_dev.jsonl
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from eval_throughput import prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--data", default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--block", type=int, default=None, help="score_block for the aligned path [default: 32]")
    args = parser.parse_args()

    from refusal_edge import RefusalModel
    from refusal_edge.decision import decide, probabilities
    from refusal_edge.engine import Engine
    from refusal_edge.policy import Policy

    block = {} if args.block is None else {"score_block": args.block}
    with RefusalModel.load(args.model, n_ctx=2048, n_threads=args.threads, **block) as model:
        engine, spec, policy = model.engine, model.spec, model.default_policy
        tokens = sorted(model.prompt_tokens(t) for t in prompts(args.prompts, args.data))
        seconds = {}
        t0 = time.perf_counter()
        one = [s for s, _ in Engine.score_many(engine, tokens, spec)]
        seconds["one at a time, reusing the previous prefix"] = time.perf_counter() - t0
        again = []
        for t in tokens:
            engine.score(t, spec)
            again.append(engine.score(t, spec)[0])  # the cache holds the prompt: only its last token is evaluated
        engine.reset()
        t0 = time.perf_counter()
        aligned = [s for s, _ in engine.score_many(tokens, spec)]
        seconds[f"aligned (eval's default, blocks of {engine.score_block})"] = time.perf_counter() - t0
        backwards = [s for s, _ in engine.score_many(tokens[::-1], spec)][::-1]
        block_size, engine.score_block = engine.score_block, 0
        engine.reset()
        t0 = time.perf_counter()
        batched = [s for s, _ in engine.score_many(tokens, spec)]
        seconds["batched (16 sequences per decode)"] = time.perf_counter() - t0
        engine.score_block = block_size
    with RefusalModel.load(args.model, n_ctx=2048, n_threads=args.threads, **block) as fresh:
        alone = [fresh.engine.score_aligned(t, spec)[0] for t in tokens[::3]]

    def stored(s):  # the bytes the score store writes
        return json.dumps(s.to_dict(), sort_keys=True)

    same = sum(stored(a) == stored(b) for a, b in zip(aligned, backwards))
    same_alone = sum(stored(a) == stored(b) for a, b in zip(aligned[::3], alone))
    print(f"aligned: same bytes in reverse order {same}/{len(aligned)}, scored alone on a fresh model "
          f"{same_alone}/{len(alone)}")
    for name, s in seconds.items():
        print(f"  {name:<46} {len(tokens) / s:6.1f} prompts/s")

    def p(s):
        respond, categories = probabilities(s, spec, Policy())
        return np.r_[respond, categories]

    print(f"{args.model}: {len(tokens)} prompts, |p - p(one at a time)| at the decision tokens")
    for name, other in (("same prompt scored again", again), ("batched", batched), ("aligned", aligned)):
        d = np.array([np.abs(p(a) - p(b)).max() for a, b in zip(one, other)])
        same = sum(decide(a, spec, policy).token_id == decide(b, spec, policy).token_id for a, b in zip(one, other))
        print(f"  {name:<26} max {d.max():.2e}  median {np.median(d):.2e}  same decision {same}/{len(d)}")


if __name__ == "__main__":
    main()
