"""PNG plots of a Report: refusal rate vs threshold, ROC curves, and the XSTest view (safe vs unsafe refusal per
prompt type). matplotlib is optional: `pip install 'refusal-edge[plot]'`.

Every plot gives a category the same colour (``colours``), overall is black and benign prompts grey. Curves that
coincide (four categories with AUROC 1.0 draw one line) stay visible: each is drawn thinner than the one before it,
with its own line style and markers, so a stack of equal curves shows as nested stripes. The policy's operating
point is marked on both curve plots.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..files import atomic_path
from ..metadata import short_name

STYLES = ["-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1))]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
OVERALL = "overall"
ROC_SHIFT = 0.008  # per category curve, so that coinciding curves are drawn side by side


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def colours(names) -> dict:
    """One colour per category name, the same in every plot of a report."""
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
    out = {OVERALL: "black"}
    for i, name in enumerate(n for n in dict.fromkeys(names) if n != OVERALL):
        out[name] = palette[i % len(palette)]
    return out


def write_plots(out_dir: Path, report, prefix: str = "") -> list[Path]:
    """Write the plots the report's data supports; returns their paths. Imports matplotlib only here."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    from .analysis import roc_points

    spec = report.spec
    others = {e.category or "(none)" for e in report.examples if e.should_refuse} - set(spec.category_names)
    palette = colours([*spec.category_names, *sorted(others)])
    written = [_save(_sweep_plot(report, palette), out_dir / f"{prefix}refusal_vs_threshold.png")]
    roc = roc_points(report.examples, report.probs, spec)
    if roc and (~np.array([e.should_refuse for e in report.examples])).any():
        written.append(_save(_roc_plot(report, roc, palette), out_dir / f"{prefix}roc.png"))
    xstest = _xstest_rows(report)
    if xstest.any():
        written.append(_save(_xstest_plot(report, xstest), out_dir / f"{prefix}xstest.png"))
    return written


def _sweep_plot(report, palette):
    import matplotlib.pyplot as plt

    from .sweep import DEFAULT_RANGE, parse_range, sweep

    data = report.data.get("sweep") or sweep(report.examples, report.matrix, report.spec, report.policy,
                                              parse_range(DEFAULT_RANGE))
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    points = data["points"]
    x = np.array([p["threshold"] for p in points])
    for i, name in enumerate(points[0]["by_category"] if points else []):
        y = [_nan(p["by_category"][name]) for p in points]
        ax.plot(x, y, color=palette.get(name, "tab:gray"), ls=STYLES[i % len(STYLES)], marker=MARKERS[i % len(MARKERS)],
                markevery=(i, len(STYLES)), ms=5, lw=max(1.0, 3.5 - 0.6 * i), label=f"{short_name(name)} (refused)")
    ax.plot(x, [_nan(p["over_refusal"]) for p in points], color="grey", ls="--", lw=2, label="benign (over-refused)")
    threshold = report.policy.threshold
    if data["category"] == "all" and report.policy.rule in ("per-category", "binary"):
        ax.axvline(threshold, color="black", lw=0.8, ls=":", label=f"policy threshold {threshold:g}")
        for name, t in report.policy.thresholds.items():
            ax.plot([t], [_at(points, x, t, name)], marker="o", mfc="none", mec=palette.get(name, "black"), ms=10,
                    mew=2)
    what = "every threshold" if data["category"] == "all" else f"threshold of {short_name(data['category'])}"
    ax.set(xlabel=f"{what} ({data['rule']} rule)", ylabel="refusal rate", ylim=(-0.03, 1.03),
           title="Refusal rate vs threshold")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return fig


def _roc_plot(report, roc, palette):
    import matplotlib.pyplot as plt

    ranking = report.data["evaluation"]["ranking"]
    fig, ax = plt.subplots(figsize=(6.2, 5.8))
    ordered = [n for n in roc if n != OVERALL] + [OVERALL]
    shifts = {}
    for i, name in enumerate(ordered):
        curve, auc = roc[name], (ranking.get(name) or {}).get("auroc")
        label = f"{short_name(name)} (AUC {auc:.3f})" if auc is not None else short_name(name)
        shift = shifts[name] = 0.0 if name == OVERALL else ROC_SHIFT * i
        x, y = np.asarray(curve["fpr"]) + shift, np.asarray(curve["tpr"]) - shift
        lw = 2.0 if name == OVERALL else max(1.0, 4.0 - 0.6 * i)
        ax.step(x, y, where="post", color=palette.get(name, "tab:gray"), lw=lw,
                ls="-" if name == OVERALL else STYLES[i % len(STYLES)], label=label, alpha=0.9)
        every = max(1, len(x) // 8)
        ax.plot(x[::every], y[::every], ls="none", marker=MARKERS[i % len(MARKERS)], ms=4,
                color=palette.get(name, "tab:gray"))
    _mark_operating_points(ax, report, palette, shifts)
    if len(ordered) > 2:
        ax.text(0.98, 0.30, f"category curves shifted by {ROC_SHIFT:g} each\n(right, down) so equal curves stay "
                "visible", transform=ax.transAxes, ha="right", fontsize=7, color="dimgray")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.5)
    ax.set(xlabel="over-refusal (false positive rate)", ylabel="refusal rate (true positive rate)",
           xlim=(-0.03, 1.06), ylim=(-0.06, 1.03), title="ROC: should-refuse vs benign prompts")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def _mark_operating_points(ax, report, palette, shifts) -> None:
    """The policy's decisions: overall (star: over-refusal, refusal rate) and, for a per-category threshold, each
    category's point on its own curve (its threshold on p(category token))."""
    y = np.array([e.should_refuse for e in report.examples])
    refused = report.choices > 0
    if y.any() and (~y).any():
        ax.plot([refused[~y].mean()], [refused[y].mean()], marker="*", ms=16, color="black", mfc="gold",
                ls="none", label="policy (overall)", zorder=5)
    if report.policy.rule != "per-category":
        return
    ax.plot([], [], marker="o", ms=9, mfc="white", mec="dimgray", mew=2, ls="none", label="each category's threshold")
    gold = np.array([e.category for e in report.examples], dtype=object)
    for k, name in enumerate(report.spec.category_names):
        rows = y & (gold == name)
        if rows.any() and (~y).any():
            t, shift = report.policy.threshold_for(name), shifts.get(name, 0.0)
            p = report.probs.categories[:, k]
            ax.plot([np.mean(p[~y] >= t) + shift], [np.mean(p[rows] >= t) - shift], marker="o", ms=9, mfc="white",
                    mec=palette.get(name, "black"), mew=2, ls="none", zorder=4)


def _xstest_rows(report) -> np.ndarray:
    sources = {d["path"] for d in report.data["data"] if d.get("format") == "xstest" or d.get("task") == "xstest"}
    return np.array([t == "xstest" or e.source in sources for e, t in zip(report.examples, report.tasks)], bool)


def _xstest_plot(report, rows):
    """Per XSTest prompt type: how often its safe prompts are refused (should be low) next to how often the unsafe
    contrasts of the same type are (should be high), with exact 95 % intervals."""
    import matplotlib.pyplot as plt

    from .summary import rate

    examples = [e for e, r in zip(report.examples, rows) if r]
    refused = (report.choices > 0)[rows]
    kinds = {}
    for e, r in zip(examples, refused):
        base = (e.subcategory or "(none)").removeprefix("contrast_")
        kinds.setdefault(base, {True: [], False: []})[e.should_refuse].append(r)
    names = sorted(kinds)
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.8))
    ypos = np.arange(len(names))
    for offset, unsafe, colour, label in ((-0.2, False, "#ff7f0e", "safe prompts refused (over-refusal: low is good)"),
                                          (0.2, True, "#1f77b4", "unsafe prompts refused (high is good)")):
        stats = [rate(np.array(kinds[n][unsafe], bool)) for n in names]
        values = [s["value"] if s else np.nan for s in stats]
        err = np.array([[s["value"] - s["ci95"][0], s["ci95"][1] - s["value"]] if s else [0, 0] for s in stats]).T
        ax.barh(ypos + offset, values, height=0.38, color=colour, xerr=err, capsize=2, label=label,
                error_kw={"lw": 0.8})
        for yy, s in zip(ypos + offset, stats):
            if s:
                ax.text(1.01, yy, f"{s['k']}/{s['n']}", va="center", fontsize=6, transform=ax.get_yaxis_transform())
    ax.set_yticks(ypos, [n.replace("_", " ") for n in names], fontsize=8)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="refusal rate (first token), 95 % exact intervals; k/n at the right")
    ax.set_title("XSTest by prompt type: safe prompts vs their unsafe contrasts", pad=24)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    return fig


def _at(points, x, t, name) -> float:
    """A category's swept refusal rate at threshold ``t`` (interpolated between sweep points)."""
    y = np.array([_nan(p["by_category"].get(name)) for p in points], dtype=float)
    return float(np.interp(t, x, y)) if len(x) else float("nan")


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path


def _nan(value):
    return float("nan") if value is None else value
