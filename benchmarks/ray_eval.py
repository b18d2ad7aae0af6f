"""`eval --ray`: prompts/s of the scoring step as a Ray Data job with 1 vs 2 model actors, against in-process.

Same GGUF, same prompts, a fresh score store per run, one local Ray cluster (``ray.init(num_cpus=CPUS)``) for every
Ray run. Each actor runs llama.cpp with --threads threads. Times include Ray Data's start of the actors (each loads
the model) and exclude ray.init. Ratios only: absolute times on a shared machine mean little.

    python benchmarks/ray_eval.py                         # the embedded default model, 96 prompts
    python benchmarks/ray_eval.py --model m.gguf --prompts 200 --data original_dev.jsonl
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from eval_throughput import benchmark_model, prompts  # noqa: E402


def score(path: Path, texts: list[str], store_path: Path, ray_settings=None, threads: int = 1) -> float:
    """Seconds for `eval`'s scoring step (score_examples) over ``texts`` into a fresh store."""
    from refusal_edge.evaluate.data import Example
    from refusal_edge.arguments import ModelOptions
    from refusal_edge.evaluate.pipeline import LazyModel
    from refusal_edge.evaluate.runner import score_examples
    from refusal_edge.evaluate.store import ScoreStore

    examples = [Example(t, i % 2 == 0, None, None, "bench", i) for i, t in enumerate(texts)]
    lazy = LazyModel(ModelOptions(str(path), threads=threads, n_ctx=1024), ray_settings)
    t0 = time.perf_counter()
    with ScoreStore(store_path, "bench") as store:
        run = score_examples(examples, store, lazy, system=None, progress=False)
    seconds = time.perf_counter() - t0
    lazy.close()
    assert run.scored == len(texts), run
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model")
    p.add_argument("--prompts", type=int, default=96)
    p.add_argument("--data", help="prompts from a data file (any format eval reads) instead of synthetic ones")
    p.add_argument("--threads", type=int, default=1, help="llama.cpp threads per actor (and in-process)")
    p.add_argument("--cpus", type=int, default=2, help="the local Ray cluster's CPUs")
    p.add_argument("--batch-size", type=int, default=8)
    args = p.parse_args()

    import ray

    from refusal_edge.evaluate.distributed import RaySettings

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        path, what = benchmark_model(args.model, work)
        texts = prompts(args.prompts, args.data)
        print(f"model: {path.name} ({what}); {len(texts)} prompts; {args.threads} thread(s) per model")
        rows = [("in-process, 1 model", score(path, texts, work / "local.jsonl", None, args.threads))]
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            for workers in (1, 2):
                settings = RaySettings(workers=workers, batch_size=args.batch_size)
                rows.append((f"Ray Data, {workers} actor(s)",
                             score(path, texts, work / f"ray{workers}.jsonl", settings, args.threads)))
        finally:
            ray.shutdown()
    base = rows[1][1]
    print(f"{'scoring':<24}{'seconds':>9}{'prompts/s':>11}{'vs 1 actor':>12}")
    for name, seconds in rows:
        print(f"{name:<24}{seconds:>9.2f}{len(texts) / seconds:>11.2f}{base / seconds:>11.2f}x")


if __name__ == "__main__":
    main()
