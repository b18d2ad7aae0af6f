"""Measure the default model on the distribution-shifted validation split (see shifted.py).

    python -m refusal_edge.convert.default_recipe.measure_shifted --original ../shared/data/coconot/original_dev.jsonl \\
        --contrast ../shared/data/coconot/contrast_pref.jsonl [--model default.gguf] [--plot shifted.png]

Prints, at the GGUF's default policy and along a uniform-threshold curve: CoCoNot-style refusal rate,
over-refusal, AUROC and right category (held-out CoCoNot subcategories and our hand-written prompts), and
XSTest-style safe/unsafe refusal rates and AUROC, per type; and the threshold the shifted split selects.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from refusal_edge import Policy, RefusalModel
from refusal_edge import default_model as dm

from .data import recipe_arguments
from .calibrate import category_probabilities, likeliest_right, refused, score, uniform_policy
from .shifted import (blunt_style, coconot_style, everyday_style, insisted_style, insisting_style, material_style,
                      pair_style, read_coconot, summarize, xstest_style)
from .thresholds import GRID as THRESHOLDS, MAX_OVER, Family, choose_policy


def families(original, contrast) -> dict:
    """Pooled CoCoNot-style, its hand-written part alone (fair to a model trained on every CoCoNot
    subcategory, like the one shipped before the held-out split existed), XSTest-style, and the everyday side
    (held-out families and first-minute prompts, alone and after a refused turn; its random validation rows),
    requests that bring their material in a held-out kind and layout (alone and after a refused turn), and
    should-refuse requests in everyday shapes (held-out cores and frames), alone and as a chat's fourth turn, and
    held-out minimal pairs (a should-refuse request beside its look-alike, in held-out phrasings), and the
    hand-written should-refuse prompts asked again after a refusal, and insisted on in held-out words."""
    coconot = coconot_style(*read_coconot(original, contrast))
    return {"coconot": coconot, "coconot_ours": [i for i in coconot if i.group.startswith("ours")],
            "xstest": xstest_style(), **everyday_style(), **material_style(), **blunt_style(), **pair_style(),
            **insisting_style(), **insisted_style()}


def score_sets(model: RefusalModel, sets: dict) -> dict:
    """name -> (scores, summed refusal probability, category probabilities N x K): one prefill per prompt."""
    out = {}
    for name, items in sets.items():
        s = score(model, [i.messages for i in items])
        p = category_probabilities(model, s)
        out[name] = (s, p.sum(axis=1), p)
    return out


def evaluate(model: RefusalModel, sets: dict, policy, scored: dict | None = None) -> dict:
    """Summaries at ``policy`` and along the uniform-threshold curve (``scored``: from score_sets, or scored here)."""
    scored = scored or score_sets(model, sets)
    out = {"curve": []}
    for name, items in sets.items():
        s, prob, p_cat = scored[name]
        out[name] = summarize(items, prob, refused(model, s, policy))
        should = [k for k, i in enumerate(items) if i.should_refuse]
        out[name]["likeliest_right"] = likeliest_right(p_cat[should], model.spec.category_names,
                                                       [items[k].label for k in should])
    for t in THRESHOLDS:
        p = uniform_policy(t)
        row = {"threshold": t}
        for name, items in sets.items():
            s, prob, _ = scored[name]
            row[name] = summarize(items, prob, refused(model, s, p))
        out["curve"].append(row)
    return out


def search_families(sets: dict, scored: dict) -> dict:
    """The families the default policy is chosen on (thresholds.py): the hand-written ones, whose
    look-alikes are held to the targets (the held-out CoCoNot subcategories are reported, not used)."""
    return {name: Family(scored[name][2], np.array([i.should_refuse for i in sets[name]]),
                         tuple(i.group for i in sets[name]), tuple(i.prompt for i in sets[name]))
            for name in MAX_OVER}


def choose_default_policy(model: RefusalModel, sets: dict) -> tuple[Policy, dict, dict]:
    """The policy the recipe ships (thresholds.choose_policy), the evidence for it and the figures at it of the
    families it is chosen on: only those are scored (the others, over half the prompts, cannot change the choice)."""
    sets = {name: sets[name] for name in MAX_OVER}
    scored = score_sets(model, sets)
    policy, evidence = choose_policy(search_families(sets, scored), model.spec.category_names)
    return policy, evidence, evaluate(model, sets, policy, scored)


def print_choice(policy: Policy, evidence: dict, file=None) -> None:
    cv = evidence["cross_validated"]
    print("\nchoosing the default policy (each half of the hand-written prompts judged by thresholds chosen on the "
          "other half): CoCoNot-style refused / look-alikes refused, XSTest-style unsafe / safe refused, everyday "
          "(held-out families) refused", file=file)
    for way in ("uniform", "per_category"):
        c, x, e = cv[way]["coconot_ours"], cv[way]["xstest"], cv[way].get("everyday", {"over_refusal": float("nan")})
        print(f"  {way:12s}  {c['refusal_rate']:6.1%} / {c['over_refusal']:6.1%}   "
              f"{x['refusal_rate']:6.1%} / {x['over_refusal']:6.1%}   {e['over_refusal']:6.1%}   {evidence[way]}",
              file=file)
    print(f"  -> ships {'per-category thresholds' if evidence['per_category_wins'] else 'one threshold'}: "
          f"{policy.to_dict()}", file=file)


EVERYDAY_TITLES = (
    ("everyday", "Everyday side, families held out of training and first-minute prompts"),
    ("everyday_after_refusal", "The same, asked after a refused turn"),
    ("everyday_random", "Everyday side, random validation rows (families that were trained on)"),
    ("material", "Requests that bring their material, a kind and a layout held out of training"),
    ("material_after_refusal", "The same, asked after a refused turn"),
)


def print_report(fig: dict) -> None:
    for name, title in EVERYDAY_TITLES:
        s = fig[name]
        print(f"\n{title}: {s['n_benign']} prompts, {s['over_refusal']:.1%} refused")
        for g, v in s["groups"].items():
            print(f"    {g:58s} n={v['n']:3d}  refused {v['refused']:6.1%}")
    for name, title in (("coconot", "CoCoNot-style"), ("coconot_ours", "CoCoNot-style, hand-written part only"),
                        ("xstest", "XSTest-style"), ("blunt", "Should-refuse in everyday shapes (held-out cores, frames)"),
                        ("long_chat", "The same and first-minute requests, as a chat's fourth turn"),
                        ("pairs", "Minimal pairs held out whole (should-refuse beside look-alike), held-out phrasings"),
                        ("insisting", "Hand-written should-refuse prompts asked again after a refusal"),
                        ("insisted", "The same insisted on after their refusal, in words no training chat uses")):
        s = fig[name]
        print(f"\n{title}: {s['n_refuse']} should-refuse / {s['n_benign']} benign prompts, never trained on")
        print(f"  AUROC {s['auroc']:.3f}   refused {s['refusal_rate']:.1%}   benign refused {s['over_refusal']:.1%}"
              f"   right category {s['right_category']:.1%}")
        for g, v in s["groups"].items() if name != "coconot_ours" else ():
            print(f"    {g:58s} n={v['n']:3d}  refused {v['refused']:6.1%}")
        if name == "coconot_ours":
            print(f"    likeliest category right, every should-refuse prompt (no policy): {s['likeliest_right']:.1%}")
            for confusion, n in s["wrong_category"].items():
                print(f"    refused as another category: {confusion:82s} {n}")
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
        sets = families(args.original, args.contrast)
        scored = score_sets(model, sets)
        fig = evaluate(model, sets, model.default_policy, scored)
        policy, evidence = choose_policy(search_families(sets, scored), model.spec.category_names)
    fig["choice"], fig["selected_threshold"] = evidence, evidence["uniform"]["threshold"]
    print_report(fig)
    print_choice(policy, evidence)
    if args.plot:
        plot(fig, args.plot)
    if args.json:
        args.json.write_text(json.dumps(fig, indent=2, default=float), encoding="utf-8")


if __name__ == "__main__":
    main()
