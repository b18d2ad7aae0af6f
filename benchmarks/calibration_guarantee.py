"""Does `calibrate` keep its over-refusal promise on prompts it has not seen? Empirical vs guaranteed mode.

Over many random stratified calibration / hold-out splits of scored data, both modes calibrate on one part
and are measured on the other: how often the hold-out's over-refusal breaks the target, and the refusal rate
each keeps. Everything comes from the score store: score the data once first with

    refusal-edge eval original_dev.jsonl --contrast contrast_pref.jsonl --threads 2

then

    python benchmarks/calibration_guarantee.py --original original_dev.jsonl --contrast contrast_pref.jsonl \\
        --splits 100 --max-over-refusal 0.15 --confidence 0.9

The embedded default model was fine-tuned on part of CoCoNot. ``--rows untrained`` (the default) keeps only the
CoCoNot rows it never trained on (the recipe's random validation split and its held-out subcategories; the
recipe's split is recomputed from the same files), ``--rows all`` every row. Either way this measures whether
the *calibration* holds on new prompts of the same pool, not how the model generalises.

A hold-out estimate is itself noisy: a policy whose true over-refusal is exactly the target breaks it on about
half of all hold-outs. So a guarantee at confidence 0.9 shows up as a hold-out breach rate below one half,
not necessarily below 10 %; the mean and spread of the hold-out over-refusal say more.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def untrained_prompts(original: str, contrast: str) -> set[tuple[str, bool]]:
    """(prompt, should refuse) of the rows the default model's recipe never trained on."""
    from refusal_edge.convert.default_recipe.data import load_jsonl, load_splits
    from refusal_edge.convert.default_recipe.shifted import is_heldout

    splits = load_splits(original, contrast)
    keep = {(r["prompt"], True) for r in splits.refusal_val} | {(r["prompt"], False) for r in splits.contrast_val}
    keep |= {(r["prompt"], True) for r in load_jsonl(original, ("category", "prompt")) if is_heldout(r, "original")}
    keep |= {(r["prompt"], False) for r in load_jsonl(contrast, ("category", "prompt")) if is_heldout(r, "contrast")}
    return keep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--original", required=True, help="should-refuse prompts (CoCoNot original_dev.jsonl)")
    parser.add_argument("--contrast", required=True, help="benign look-alikes (CoCoNot contrast_pref.jsonl)")
    parser.add_argument("--model", default=None, help="GGUF [default: the embedded default model]")
    parser.add_argument("--store", default=None, help="score store [default: the model's, as eval uses]")
    parser.add_argument("--rows", choices=["untrained", "all"], default="untrained")
    parser.add_argument("--splits", type=int, default=100)
    parser.add_argument("--holdout", type=float, default=0.5)
    parser.add_argument("--max-over-refusal", type=float, default=0.15)
    parser.add_argument("--confidence", type=float, default=0.9)
    parser.add_argument("--threads", type=int, default=2, help="only used if some prompt is not scored yet")
    args = parser.parse_args()

    from refusal_edge.evaluate.analysis import labels
    from refusal_edge.evaluate.batch import choose
    from refusal_edge.evaluate.calibrate import CalibrationError, calibrate, stratified_split
    from refusal_edge.evaluate.data import Fields
    from refusal_edge.evaluate.guarantee import guarantee
    from refusal_edge.evaluate.operating_point import policy_from_thresholds
    from refusal_edge.arguments import ModelOptions
    from refusal_edge.evaluate.library import gather
    from refusal_edge.evaluate.pipeline import open_session

    datasets = gather(None, [args.contrast], [args.original], (), Fields(None, None, None), False, None)
    with open_session(ModelOptions(args.model, threads=args.threads, n_ctx=4096), datasets, store_path=args.store,
                      system=None, skip_bad=False) as s:
        examples, spec = s.run.examples, s.spec
        probs = s.matrix.probabilities(spec, s.policy)
        y_all = labels(examples)
        gold_all = np.array([e.category or "(none)" for e in examples], dtype=object)
        shipped = choose(probs, spec, s.policy) > 0  # the model's default policy, for reference
        if args.rows == "untrained":
            keep = untrained_prompts(args.original, args.contrast)
            rows = np.array([(e.prompt, bool(e.should_refuse)) in keep for e in examples])
        else:
            rows = np.ones(len(examples), dtype=bool)
        p, y, gold, shipped = probs.categories[rows], y_all[rows], gold_all[rows], shipped[rows]
        names = spec.category_names

        def refusals(thresholds):
            return choose(_take(probs, rows), spec, policy_from_thresholds(s.policy, spec, thresholds)) > 0

        print(f"model {s.model_path.name}; rows: {args.rows}: {int(y.sum())} should refuse, {int((~y).sum())} benign; "
              f"{args.splits} splits, hold-out {args.holdout:g}; target over-refusal <= {args.max_over_refusal:g}, "
              f"confidence {args.confidence:g}")
        results = {"empirical": [], "guaranteed": [], "shipped default policy": []}
        failures = {k: 0 for k in results}
        for seed in range(args.splits):
            cal, held = stratified_split(y, gold, args.holdout, seed)
            for mode in ("empirical", "guaranteed"):
                try:
                    if mode == "empirical":
                        found = calibrate(p[cal], y[cal], gold[cal], names, [], args.max_over_refusal)
                    else:
                        found = guarantee(p[cal], y[cal], gold[cal], [], args.max_over_refusal, args.confidence)
                except CalibrationError as exc:
                    failures[mode] += 1
                    print(f"split {seed}: {mode}: {exc}")
                    continue
                refused = refusals(found.thresholds)
                results[mode].append(_rates(refused, y, held, cal))
            results["shipped default policy"].append(_rates(shipped, y, held, cal))

        header = ("mode", "hold-out over-refusal > target", "over-refusal: calibration / hold-out mean (p90)",
                  "hold-out refusal rate mean (min)")
        print("\n| " + " | ".join(header) + " |\n|" + " --- |" * len(header))
        for mode, runs in results.items():
            if not runs:
                print(f"| {mode} | no split calibrated ({failures[mode]} errors) | | |")
                continue
            cal_over, held_over, held_tpr = (np.array(col) for col in zip(*runs))
            breaks = int((held_over > args.max_over_refusal + 1e-12).sum())
            print(f"| {mode} | {breaks}/{len(runs)} ({breaks / len(runs):.0%}) | {cal_over.mean():.3f} / "
                  f"{held_over.mean():.3f} ({np.percentile(held_over, 90):.3f}) | {held_tpr.mean():.3f} "
                  f"({held_tpr.min():.3f}) |" + (f" ({failures[mode]} splits failed)" if failures[mode] else ""))


def _take(probs, rows):
    from dataclasses import replace

    return replace(probs, respond=probs.respond[rows], categories=probs.categories[rows], natural=probs.natural[rows])


def _rates(refused, y, held, cal):
    """(calibration over-refusal, hold-out over-refusal, hold-out refusal rate of should-refuse prompts)."""
    return (float(refused[cal][~y[cal]].mean()), float(refused[held][~y[held]].mean()),
            float(refused[held][y[held]].mean()))


if __name__ == "__main__":
    main()
