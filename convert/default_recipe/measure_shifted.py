"""Measure the default model on the distribution-shifted validation split (see default_shifted.py).

    python -m refusal_edge.convert.default_recipe.measure_shifted --original ../shared/data/coconot/original_dev.jsonl \\
        --contrast ../shared/data/coconot/contrast_pref.jsonl [--model default.gguf] [--plot shifted.png]

Prints, at the GGUF's default policy and along a uniform-threshold curve: CoCoNot-style refusal rate,
over-refusal, AUROC and right category (held-out CoCoNot subcategories and our hand-written prompts), and
XSTest-style safe/unsafe refusal rates and AUROC, per type; and the threshold the shifted split selects.
"""

from __future__ import annotations

import json
from pathlib import Path


from refusal_edge import RefusalModel
from refusal_edge import default_model as dm

from .default_data import recipe_arguments
from .default_calibrate import refusal_probability, refused, score, uniform_policy
from .default_shifted import coconot_style, pick_threshold, read_coconot, summarize, xstest_style

THRESHOLDS = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.35, 0.3, 0.25, 0.2, 0.15, 0.1, 0.05)


def families(original, contrast) -> dict:
    """Pooled CoCoNot-style, its hand-written part alone (fair to a model trained on every CoCoNot
    subcategory, like the one shipped before the held-out split existed), and XSTest-style."""
    coconot = coconot_style(*read_coconot(original, contrast))
    return {"coconot": coconot, "coconot_ours": [i for i in coconot if i.group.startswith("ours")],
            "xstest": xstest_style()}


def evaluate(model: RefusalModel, sets: dict, policy) -> dict:
    """Summaries at ``policy`` and along the uniform-threshold curve, from one prefill per prompt."""
    out = {"curve": []}
    scored = {}
    for name, items in sets.items():
        s = score(model, [i.prompt for i in items])
        scored[name] = (s, refusal_probability(model, s))
        out[name] = summarize(items, scored[name][1], refused(model, s, policy))
    for t in THRESHOLDS:
        p = uniform_policy(t)
        row = {"threshold": t}
        for name, items in sets.items():
            s, prob = scored[name]
            row[name] = summarize(items, prob, refused(model, s, p))
        out["curve"].append(row)
    out["selected_threshold"] = pick_threshold(out["curve"])
    return out


def print_report(fig: dict) -> None:
    for name, title in (("coconot", "CoCoNot-style"), ("coconot_ours", "CoCoNot-style, hand-written part only"),
                        ("xstest", "XSTest-style")):
        s = fig[name]
        print(f"\n{title}: {s['n_refuse']} should-refuse / {s['n_benign']} benign prompts, never trained on")
        print(f"  AUROC {s['auroc']:.3f}   refused {s['refusal_rate']:.1%}   benign refused {s['over_refusal']:.1%}"
              f"   right category {s['right_category']:.1%}")
        for g, v in s["groups"].items() if name != "coconot_ours" else ():
            print(f"    {g:58s} n={v['n']:3d}  refused {v['refused']:6.1%}")
    print("\nuniform threshold curve: threshold | CoCoNot-style refused / over-refused (hand-written part) | "
          "XSTest-style unsafe / safe refused")
    for r in fig["curve"]:
        c, o, x = r["coconot"], r["coconot_ours"], r["xstest"]
        mark = "  <- selected" if r["threshold"] == fig["selected_threshold"] else ""
        print(f"  {r['threshold']:5.2f}  {c['refusal_rate']:6.1%} / {c['over_refusal']:6.1%} ({o['refusal_rate']:.0%} / "
              f"{o['over_refusal']:.0%})   {x['refusal_rate']:6.1%} / {x['over_refusal']:6.1%}{mark}")


def plot(fig: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts = [r["threshold"] for r in fig["curve"]]
    f, ax = plt.subplots(figsize=(6, 3.4))
    for name, style, label in (("coconot", "-", "CoCoNot-style"), ("xstest", "--", "XSTest-style")):
        ax.plot(ts, [100 * r[name]["refusal_rate"] for r in fig["curve"]], "C0" + style, label=f"{label} should-refuse")
        ax.plot(ts, [100 * r[name]["over_refusal"] for r in fig["curve"]], "C3" + style, label=f"{label} benign")
    ax.axvline(fig["selected_threshold"], color="grey", lw=0.8, ls=":")
    ax.set_xlabel("uniform threshold")
    ax.set_ylabel("% refused (shifted split)")
    ax.invert_xaxis()
    ax.legend(fontsize=7)
    f.tight_layout()
    f.savefig(path, dpi=90)


def main(argv=None) -> None:
    p = recipe_arguments(__doc__)
    p.add_argument("--model", type=Path, default=None, help="assembled GGUF (default: build/reuse the default model)")
    p.add_argument("--plot", type=Path, default=None, help="write the curve as a PNG")
    p.add_argument("--json", type=Path, default=None, help="write every figure as JSON")
    args = p.parse_args(argv)

    model_path = args.model or dm.ensure_default_model()
    with RefusalModel.load(model_path, n_ctx=1024, n_threads=args.threads) as model:
        print(f"model {model_path}\ndefault policy {model.default_policy.to_dict()}")
        fig = evaluate(model, families(args.original, args.contrast), model.default_policy)
    print_report(fig)
    if args.plot:
        plot(fig, args.plot)
    if args.json:
        args.json.write_text(json.dumps(fig, indent=2, default=float), encoding="utf-8")


if __name__ == "__main__":
    main()
