"""A 21-point threshold sweep costs (almost) what one evaluation costs: the sweep reads stored scores.

Measured in one run, on the same prompts and model:
  single point = score N prompts (one prefill each, fresh store) + every metric at one policy
  sweep        = the same + a 21-point threshold sweep (0:1:0.05) over the stored scores
and the ratio sweep / single point (goal: <= 1.1x). For scale it also prints what re-prefilling per threshold
would cost (21 x the scoring time), which is what a sweep costs when the decision is re-run per threshold.

    python benchmarks/eval_sweep.py                 # the embedded default model, else a SmolLM2 stand-in
    python benchmarks/eval_sweep.py --model m.gguf --prompts 64 --points 21
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from eval_throughput import benchmark_model, prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--data", default=None, help="take the prompts from this data file (e.g. CoCoNot JSONL)")
    parser.add_argument("--points", type=int, default=21)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from refusal_edge import Policy, RefusalModel
    from refusal_edge.evaluate.analysis import evaluate
    from refusal_edge.evaluate.data import Example
    from refusal_edge.evaluate.runner import score_examples, score_matrix
    from refusal_edge.evaluate.store import ScoreStore
    from refusal_edge.evaluate.sweep import sweep

    grid = np.linspace(0, 1, args.points)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path, what = benchmark_model(args.model, tmp)
        model = RefusalModel.load(path, n_ctx=2048, n_threads=args.threads)
        cats = model.spec.category_names
        examples = [Example(t, i % 3 != 0, cats[i % len(cats)] if i % 3 else None, None, "bench", i)
                    for i, t in enumerate(prompts(args.prompts, args.data))]
        policy = Policy(rule="per-category", threshold=0.5)

        def run(with_sweep: bool) -> tuple[float, float]:
            """(total seconds, seconds after scoring) of one complete evaluation from an empty store."""
            store_path = tmp / "scores.jsonl"
            store_path.unlink(missing_ok=True)
            model.engine.reset()
            t0 = time.perf_counter()
            with ScoreStore(store_path, "bench") as store:
                run_ = score_examples(examples, store, lambda: model, system=None, progress=False)
                t1 = time.perf_counter()
                matrix = score_matrix(store, run_.keys, model.spec)
                evaluate(run_.examples, matrix, model.spec, policy)
                if with_sweep:
                    sweep(run_.examples, matrix, model.spec, policy, grid)
            t2 = time.perf_counter()
            return t2 - t0, t2 - t1

        run(False)  # warm-up
        single, swept, single_tail, sweep_tail = [], [], [], []
        for _ in range(args.rounds):  # alternate, so other load on the machine hits both alike
            total, tail = run(False)
            single.append(total)
            single_tail.append(tail)
            total, tail = run(True)
            swept.append(total)
            sweep_tail.append(tail)
        model.close()

    s, w = statistics.median(single), statistics.median(swept)
    scoring = s - statistics.median(single_tail)
    print(f"model: {what}\n       {path.name}; {len(examples)} prompts ({args.data or 'synthetic'}); "
          f"{args.threads} thread(s); "
          f"median of {args.rounds} alternating rounds")
    tail, tail_sweep = statistics.median(single_tail) * 1e3, statistics.median(sweep_tail) * 1e3
    print(f"single-point evaluation          {s:8.3f} s  (metrics after scoring: {tail:.1f} ms)")
    print(f"evaluation + {args.points}-point sweep      {w:8.3f} s  (metrics + sweep: {tail_sweep:.1f} ms)")
    print(f"ratio sweep / single point: {w / s:.3f}x   (goal <= 1.1x)")
    added = statistics.median(sweep_tail) - statistics.median(single_tail)
    print(f"the sweep itself adds {added * 1e3:.1f} ms = {added / s * 100:.2f}% of a single-point evaluation "
          "(the ratio above also carries timing noise)")
    print(f"re-prefilling per threshold instead: ~{args.points * scoring:.1f} s ({args.points}x the scoring)")


if __name__ == "__main__":
    sys.exit(main())
