"""bench.stats against hand-computed values: per-class scores, Spearman, label arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import fresh_python

from bench.stats import (
    Spearman,
    balanced_accuracy,
    confusion_matrix,
    macro_f1,
    mean_sd,
    per_class_accuracy,
    spearman,
)

# ---------------------------------------------------------------------------------------------
# Per-class scores, worked by hand
#
# 3 classes, 8 images:          predicted 0  1  2
#   labels      0 0 0 1 1 2 2 2   true 0  [2, 1, 0]
#   predictions 0 0 1 1 2 2 2 0        1  [0, 1, 1]
#                                      2  [1, 0, 2]
# recall:    0: 2/3, 1: 1/2, 2: 2/3            balanced = (2/3 + 1/2 + 2/3) / 3 = 11/18
# precision: 0: 2/3, 1: 1/2, 2: 2/3
# F1 = 2PR/(P+R): 0: 2/3, 1: 1/2, 2: 2/3       macro-F1 = 11/18

LABELS = [0, 0, 0, 1, 1, 2, 2, 2]
PREDICTIONS = [0, 0, 1, 1, 2, 2, 2, 0]


def test_confusion_matrix_rows_true_columns_predicted() -> None:
    matrix = confusion_matrix(LABELS, PREDICTIONS, 3)
    assert matrix.tolist() == [[2, 1, 0], [0, 1, 1], [1, 0, 2]]
    assert matrix.sum() == len(LABELS)
    assert confusion_matrix([0], [2], 3).tolist() == [[0, 0, 1], [0, 0, 0], [0, 0, 0]]


def test_per_class_accuracy_is_recall() -> None:
    assert per_class_accuracy(LABELS, PREDICTIONS, 3) == pytest.approx([2 / 3, 1 / 2, 2 / 3])


def test_balanced_accuracy_and_macro_f1_hand_worked() -> None:
    assert balanced_accuracy(LABELS, PREDICTIONS, 3) == pytest.approx(11 / 18)
    assert macro_f1(LABELS, PREDICTIONS, 3) == pytest.approx(11 / 18)


def test_unbalanced_example_separates_accuracy_from_balanced_accuracy() -> None:
    # 9 of class 0, 1 of class 1; always predicting 0 is 90 % accurate but learns nothing
    labels = [0] * 9 + [1]
    predictions = [0] * 10
    assert balanced_accuracy(labels, predictions, 2) == pytest.approx(0.5)
    # class 0: P = 0.9, R = 1 -> F1 = 18/19; class 1: no true positive -> 0
    assert macro_f1(labels, predictions, 2) == pytest.approx((18 / 19 + 0) / 2)


def test_absent_classes() -> None:
    # class 2 never occurs and is never predicted; class 1 is predicted but never occurs
    labels = [0, 0, 3, 3]
    predictions = [0, 1, 3, 3]
    recall = per_class_accuracy(labels, predictions, 4)
    assert recall[0] == pytest.approx(0.5) and recall[3] == pytest.approx(1.0)
    assert math.isnan(recall[1]) and math.isnan(recall[2])
    assert balanced_accuracy(labels, predictions, 4) == pytest.approx(0.75)  # classes 0 and 3
    # F1 over classes 0, 1, 3 (class 2 appears nowhere): 0: P=1, R=.5 -> 2/3; 1: 0; 3: 1
    assert macro_f1(labels, predictions, 4) == pytest.approx((2 / 3 + 0 + 1) / 3)


def test_perfect_predictions() -> None:
    labels = [0, 1, 2, 1]
    assert balanced_accuracy(labels, labels, 3) == 1.0
    assert macro_f1(labels, labels, 3) == 1.0
    assert confusion_matrix(labels, labels, 3).tolist() == [[1, 0, 0], [0, 2, 0], [0, 0, 1]]


def test_no_labels_give_nan() -> None:
    assert math.isnan(balanced_accuracy([], [], 3))
    assert math.isnan(macro_f1([], [], 3))


@pytest.mark.parametrize(
    ("labels", "predictions", "match"),
    [
        ([0, 1], [0], "equal length"),
        ([0, 3], [0, 1], r"\[0, 3\)"),
        ([0, 1], [0, -1], r"\[0, 3\)"),
        ([0.5, 1.0], [0, 1], "integer"),
    ],
)
def test_per_class_inputs_are_checked(labels: list, predictions: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        confusion_matrix(labels, predictions, 3)


# ---------------------------------------------------------------------------------------------
# Spearman and mean ± sd


def test_spearman_monotone_is_one() -> None:
    result = spearman([70.4, 71.3, 74.9, 76.0, 77.1], [0.1, 0.2, 0.5, 0.55, 0.9])
    assert result.rho == pytest.approx(1.0)
    assert result.n == 5
    assert result.p_value == pytest.approx(0.0, abs=1e-6)
    reverse = spearman([1, 2, 3, 4], [4, 3, 2, 1])
    assert reverse.rho == pytest.approx(-1.0)


def test_spearman_known_value() -> None:
    # ranks x: 1 2 3 4 5, y: 2 1 4 3 5 -> d² = 1+1+1+1+0 = 4; rho = 1 - 6*4/(5*24) = 0.8
    result = spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5])
    assert result.rho == pytest.approx(0.8)
    assert 0.05 < result.p_value < 0.2


def test_spearman_needs_three_points_and_variation() -> None:
    assert spearman([1, 2], [3, 4]) == Spearman(rho=None, p_value=None, n=2)
    assert spearman([], []) == Spearman(rho=None, p_value=None, n=0)
    assert spearman([1, 2, 3], [5, 5, 5]) == Spearman(rho=None, p_value=None, n=3)
    with pytest.raises(ValueError, match="equal length"):
        spearman([1, 2, 3], [1, 2])


def test_mean_sd_uses_the_sample_sd() -> None:
    values = [0.60, 0.62, 0.58, 0.61, 0.59]
    mean, sd = mean_sd(values)
    assert mean == pytest.approx(np.mean(values))
    assert sd == pytest.approx(np.std(values, ddof=1))
    assert sd == pytest.approx(math.sqrt(0.001 / 4))
    assert mean_sd([0.7]) == (0.7, 0.0)
    with pytest.raises(ValueError, match="non-empty"):
        mean_sd([])


def test_stats_imports_no_tensorflow_pandas_or_matplotlib() -> None:
    # the runner fills rows with these functions; the reporter's heavy imports stay out
    watched = ("tensorflow", "keras", "pandas", "matplotlib")
    assert fresh_python("import bench.stats", watch=watched)["heavy"] == []


def test_label_arrays_take_stored_class_indices_only() -> None:
    from bench.stats import label_arrays

    y, p = label_arrays([0, 2, 1], [0, 1, 1])
    assert y.tolist() == [0, 2, 1] and p.dtype == np.int64
    for labels, predictions in (([], []), ([0, 1], [0]), ([0, -1], [0, 0]), (["a"], [0])):
        assert label_arrays(labels, predictions) is None
