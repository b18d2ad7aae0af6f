"""PNG plots: refusal rate vs threshold, ROC curves. matplotlib is optional: `pip install 'refusal-edge[plot]'`."""

from __future__ import annotations

from pathlib import Path

from ..files import atomic_path
from ..metadata import short_name


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def write_plots(out_dir: Path, sweep: dict | None, roc: dict) -> list[Path]:
    """Write the plots that the data supports; returns their paths. Imports matplotlib only here."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    written = []
    if sweep and sweep["points"]:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        points = sweep["points"]
        x = [p["threshold"] for p in points]
        for name in points[0]["by_category"]:
            ax.plot(x, [_nan(p["by_category"][name]) for p in points], marker=".", label=f"{short_name(name)} (refused)")
        ax.plot(x, [_nan(p["over_refusal"]) for p in points], "k--", marker=".", label="benign (over-refused)")
        what = "every threshold" if sweep["category"] == "all" else f"threshold of {sweep['category']}"
        ax.set(xlabel=f"{what} ({sweep['rule']} rule)", ylabel="refusal rate", ylim=(-0.02, 1.02),
               title="Refusal rate vs threshold")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        written.append(_save(fig, out_dir / "refusal_vs_threshold.png"))
    if roc:
        fig, ax = plt.subplots(figsize=(5.5, 5))
        for name, curve in roc.items():
            ax.plot(curve["fpr"], curve["tpr"], label=short_name(name), lw=2 if name == "overall" else 1)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.5)
        ax.set(xlabel="over-refusal (false positive rate)", ylabel="refusal rate (true positive rate)",
               title="ROC: should-refuse vs benign prompts")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        written.append(_save(fig, out_dir / "roc.png"))
    return written


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path


def _nan(value):
    return float("nan") if value is None else value
