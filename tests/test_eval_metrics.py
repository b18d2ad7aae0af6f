"""Metrics against values computed by hand on small fixed sets."""

import numpy as np
import pytest

from refusal_edge.evaluate import metrics

# Ranked by score: + - + + - -
SCORES = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
LABELS = [1, 0, 1, 1, 0, 0]


def test_auroc_counts_correctly_ordered_pairs():
    # Positive 0.9 beats all 3 negatives, 0.7 and 0.6 beat 2 each: 7 of 9 pairs.
    assert metrics.auroc(SCORES, LABELS) == pytest.approx(7 / 9)


def test_auroc_gives_ties_half_credit():
    assert metrics.auroc([0.5, 0.5], [1, 0]) == pytest.approx(0.5)
    # 1 positive above both negatives, one tied with a negative: (1 + 1 + 0.5 + 1) / 4
    assert metrics.auroc([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0]) == pytest.approx(3.5 / 4)


def test_auroc_is_none_without_both_classes():
    assert metrics.auroc([0.1, 0.2], [1, 1]) is None
    assert metrics.auroc([0.1, 0.2], [0, 0]) is None


def test_average_precision_by_hand():
    # Recall steps of 1/3 at ranks 1, 3, 4 with precision 1, 2/3, 3/4.
    assert metrics.average_precision(SCORES, LABELS) == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)


def test_average_precision_treats_a_tie_as_one_threshold():
    # Both at 0.5: one step to recall 1 at precision 1/2.
    assert metrics.average_precision([0.5, 0.5], [1, 0]) == pytest.approx(0.5)
    assert metrics.average_precision([0.5, 0.5], [0, 0]) is None


def test_roc_curve_points():
    fpr, tpr, thresholds = metrics.roc_curve(SCORES, LABELS)
    assert thresholds[0] == np.inf
    np.testing.assert_allclose(tpr, [0, 1 / 3, 1 / 3, 2 / 3, 1, 1, 1])
    np.testing.assert_allclose(fpr, [0, 0, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 1])


def test_binary_metrics_by_hand():
    predicted = [1, 1, 0, 1, 0, 0]
    m = metrics.binary_metrics(predicted, LABELS)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 1, 2)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["over_refusal"] == pytest.approx(1 / 3)
    assert m["accuracy"] == pytest.approx(4 / 6)


def test_binary_metrics_undefined_values_are_none():
    m = metrics.binary_metrics([0, 0], [1, 1])
    assert m["precision"] is None and m["f1"] is None and m["over_refusal"] is None
    assert m["recall"] == 0


def test_confusion_counts():
    counts = metrics.confusion(["a", "a", "b", "r"], ["a", "r", "a", "r"], rows=["a", "b", "r"], cols=["r", "a"])
    assert counts.tolist() == [[1, 1], [0, 1], [1, 0]]


def test_mismatched_lengths_are_an_error():
    with pytest.raises(ValueError, match="3 scores but 2 labels"):
        metrics.auroc([0.1, 0.2, 0.3], [1, 0])
