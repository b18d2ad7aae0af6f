"""Classification metrics in plain numpy: ROC, AUROC, average precision, precision/recall/F1, confusion.

Positives are prompts that should be refused; a higher score means "more likely refused". Tied scores
are one threshold: they enter the ROC together (a diagonal step) and count as half-correct in the AUROC.
Undefined values (no positives, nothing predicted) are None rather than a made-up 0.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def roc_curve(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) for thresholds from +inf (nothing refused) down to the lowest score."""
    tp, fp, thresholds = _cumulative(scores, labels)
    pos, neg = tp[-1], fp[-1]
    tpr = tp / pos if pos else np.full_like(tp, np.nan, dtype=float)
    fpr = fp / neg if neg else np.full_like(fp, np.nan, dtype=float)
    return fpr, tpr, thresholds


def auroc(scores, labels) -> float | None:
    """Area under the ROC: the probability that a random positive outscores a random negative (ties: 1/2)."""
    tp, fp, _ = _cumulative(scores, labels)
    if tp[-1] == 0 or fp[-1] == 0:
        return None
    area = np.sum(np.diff(fp) * (tp[1:] + tp[:-1]) / 2)  # trapezoids: numpy renamed trapz across versions
    return float(area / (tp[-1] * fp[-1]))


def average_precision(scores, labels) -> float | None:
    """Sum over distinct thresholds of (recall step) x (precision there), as scikit-learn defines it."""
    tp, fp, _ = _cumulative(scores, labels)
    if tp[-1] == 0:
        return None
    recall_steps = np.diff(tp) / tp[-1]
    precision = tp[1:] / (tp[1:] + fp[1:])
    return float(np.sum(recall_steps * precision))


def binary_metrics(predicted, labels) -> dict:
    """Counts and rates of a refuse/respond prediction against should-refuse labels."""
    predicted = np.asarray(predicted, dtype=bool)
    labels = np.asarray(labels, dtype=bool)
    tp = int(np.sum(predicted & labels))
    fp = int(np.sum(predicted & ~labels))
    fn = int(np.sum(~predicted & labels))
    tn = int(np.sum(~predicted & ~labels))
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    f1 = None if precision is None or recall is None or precision + recall == 0 else 2 * precision * recall / (
        precision + recall)
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "precision": precision, "recall": recall, "f1": f1,
            "over_refusal": _ratio(fp, fp + tn), "accuracy": _ratio(tp + tn, len(labels))}


def rate(mask) -> float | None:
    mask = np.asarray(mask, dtype=bool)
    return _ratio(int(mask.sum()), mask.size)


def confusion(gold: Sequence[str], predicted: Sequence[str], rows: Sequence[str], cols: Sequence[str]) -> np.ndarray:
    """Counts[i, j] of items whose gold label is rows[i] and prediction cols[j]."""
    row_index = {name: i for i, name in enumerate(rows)}
    col_index = {name: j for j, name in enumerate(cols)}
    counts = np.zeros((len(rows), len(cols)), dtype=np.int64)
    for g, p in zip(gold, predicted):
        counts[row_index[g], col_index[p]] += 1
    return counts


def _cumulative(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True/false positive counts at each distinct threshold, descending, starting from (0, 0) at +inf."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.size} scores but {labels.size} labels")
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1] if scores.size else np.array([], int)
    tp = np.r_[0, np.cumsum(labels)[last_of_tie]]
    fp = np.r_[0, np.cumsum(~labels)[last_of_tie]]
    return tp, fp, np.r_[np.inf, scores[last_of_tie]]


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None
