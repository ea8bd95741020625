"""bench.stats against hand-computed values: intervals, the sign test, Holm, rank intervals,
per-class scores, Spearman."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from conftest import fresh_python

from bench.stats import (
    SignTest,
    Spearman,
    balanced_accuracy,
    bootstrap_ranks,
    confusion_matrix,
    holm,
    macro_f1,
    mean_sd,
    per_class_accuracy,
    sign_test,
    spearman,
    wilson_interval,
)

REPO = Path(__file__).resolve().parents[1]


def wilson_closed_form(correct: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson interval written out: (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)."""
    p = correct / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    scale = 1 + z * z / n
    return (centre - half) / scale, (centre + half) / scale


# ---------------------------------------------------------------------------------------------
# Wilson


@pytest.mark.parametrize(("correct", "n"), [(0, 10), (5, 10), (10, 10), (81, 263), (240, 300)])
def test_wilson_matches_the_closed_form(correct: int, n: int) -> None:
    low, high = wilson_interval(correct, n)
    expected_low, expected_high = wilson_closed_form(correct, n)
    assert low == pytest.approx(expected_low, abs=1e-9)
    assert high == pytest.approx(expected_high, abs=1e-9)
    assert 0.0 <= low <= correct / n <= high <= 1.0


def test_wilson_known_values() -> None:
    # 0 of 10: the interval still reaches 27.8 %, unlike the Wald interval's [0, 0]
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27753279986288), abs=1e-9)
    # 0 of n: the upper end is z² / (n + z²)
    z2 = 1.959963984540054**2
    assert wilson_interval(0, 10)[1] == pytest.approx(z2 / (10 + z2), abs=1e-12)
    # 5 of 10: the textbook [0.2366, 0.7634], symmetric about one half
    assert wilson_interval(5, 10) == pytest.approx((0.2365931, 0.7634069), abs=1e-6)


def test_wilson_is_about_plus_minus_5_5_points_at_n_300() -> None:
    low, high = wilson_interval(180, 300)  # the claim: ~300 images, ±5.5 points
    assert (high - low) / 2 == pytest.approx(0.055, abs=0.001)


def test_wilson_narrows_at_lower_confidence() -> None:
    low95, high95 = wilson_interval(60, 100)
    low80, high80 = wilson_interval(60, 100, confidence=0.80)
    assert low95 < low80 < 0.6 < high80 < high95
    assert (low80, high80) == pytest.approx(wilson_closed_form(60, 100, z=1.2815515655446004))


@pytest.mark.parametrize(("correct", "n"), [(0, 0), (11, 10), (-1, 10)])
def test_wilson_rejects_impossible_counts(correct: int, n: int) -> None:
    with pytest.raises(ValueError, match="correct"):
        wilson_interval(correct, n)


# ---------------------------------------------------------------------------------------------
# The sign test (McNemar on one seed's correctness)


def pairs(both: int, only_a: int, only_b: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-image correctness of two classifiers with the given 2×2 table."""
    a = [True] * both + [True] * only_a + [False] * only_b + [False] * neither
    b = [True] * both + [False] * only_a + [True] * only_b + [False] * neither
    return np.array(a), np.array(b)


def test_sign_test_is_mcnemar_on_a_hand_computed_2x2() -> None:
    # b = 8, c = 2: p = 2 * sum_{k<=2} C(10, k) / 2^10 = 2 * (1 + 10 + 45) / 1024 = 0.109375
    result = sign_test(*pairs(both=70, only_a=8, only_b=2, neither=20))
    assert result == SignTest(a_better=8, b_better=2, n_untied=10, p_value=pytest.approx(0.109375))
    assert result.p_value == pytest.approx(2 * (1 + 10 + 45) / 1024, abs=1e-12)


def test_sign_test_is_symmetric_and_ignores_agreement() -> None:
    a, b = pairs(both=70, only_a=8, only_b=2, neither=20)
    swapped = sign_test(b, a)
    assert (swapped.a_better, swapped.b_better) == (2, 8)
    assert swapped.p_value == pytest.approx(0.109375)
    # concordant images (both right, both wrong) do not change the test
    more = sign_test(*pairs(both=700, only_a=8, only_b=2, neither=200))
    assert more.p_value == pytest.approx(0.109375)


def test_sign_test_significant_case() -> None:
    # 10 images for a, none for b: p = 2 / 2^10
    result = sign_test(*pairs(both=50, only_a=10, only_b=0, neither=5))
    assert result.p_value == pytest.approx(2 / 1024, abs=1e-12)


def test_sign_test_on_scores_averaged_over_seeds() -> None:
    # per-image correctness averaged over 3 seeds: only the sign of each difference counts
    a = np.array([1.0, 2 / 3, 1 / 3, 1.0, 0.0, 1.0])
    b = np.array([2 / 3, 2 / 3, 0.0, 0.0, 1 / 3, 1.0])
    result = sign_test(a, b)
    assert (result.a_better, result.b_better, result.n_untied) == (3, 1, 4)
    assert result.p_value == pytest.approx(2 * (1 + 4) / 16)


def test_sign_test_balanced_or_no_difference_is_p_one() -> None:
    assert sign_test(*pairs(both=5, only_a=3, only_b=3, neither=1)).p_value == pytest.approx(1)
    a = np.array([True, False, True, True])
    assert sign_test(a, a.copy()) == SignTest(a_better=0, b_better=0, n_untied=0, p_value=1.0)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([True, False], [True]),  # lengths differ
        (["x", "y"], ["y", "x"]),  # not numbers
        ([[True]], [[True]]),  # not 1-D
    ],
)
def test_sign_test_rejects_bad_inputs(a: list, b: list) -> None:
    with pytest.raises(ValueError, match="score_a and score_b"):
        sign_test(a, b)


# ---------------------------------------------------------------------------------------------
# Holm


def test_holm_textbook_example() -> None:
    # Holm (1979) as in Wikipedia's worked example: p = 0.01, 0.04, 0.03, 0.005 (m = 4):
    # sorted 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> monotone 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_and_keeps_a_single_p() -> None:
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert holm([0.2]) == pytest.approx([0.2])
    assert holm([]) == []
    with pytest.raises(ValueError, match="p-values"):
        holm([0.1, 1.5])


# ---------------------------------------------------------------------------------------------
# Rank intervals


def correctness(accuracy: float, seeds: int, n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.random((seeds, n)) < accuracy


def right_on(low: int, high: int, seeds: int = 3, n: int = 400) -> np.ndarray:
    """Every seed right on images low..high-1 only."""
    return np.tile((np.arange(n) >= low) & (np.arange(n) < high), (seeds, 1))


def test_bootstrap_ranks_narrow_when_one_model_dominates() -> None:
    # 380 and 80 of 400 right; the middle two differ on 16 images only (10 vs 6)
    scores = [right_on(0, 380), right_on(0, 240), right_on(10, 246), right_on(0, 80)]
    intervals = bootstrap_ranks(scores, fixed=[math.nan] * 4)
    assert intervals[0] == (1, 1) and intervals[3] == (4, 4)
    # two close entries: each interval holds the observed rank and spans both places
    assert intervals[1] == (2, 3) and intervals[2] == (2, 3)


def test_bootstrap_ranks_contain_the_observed_rank_and_are_reproducible() -> None:
    rng = np.random.default_rng(2)
    accuracies = (0.70, 0.69, 0.66, 0.50)
    scores = [correctness(a, 2, 150, rng) for a in accuracies]
    intervals = bootstrap_ranks(scores, fixed=[math.nan] * 4, resamples=500)
    observed = np.argsort(np.argsort([-s.mean() for s in scores])) + 1
    for (low, high), rank in zip(intervals, observed, strict=True):
        assert low <= rank <= high
    assert bootstrap_ranks(scores, fixed=[math.nan] * 4, resamples=500) == intervals


def test_bootstrap_ranks_keep_entries_without_scores_fixed() -> None:
    rng = np.random.default_rng(3)
    scores = [correctness(0.9, 2, 300, rng), None, correctness(0.3, 2, 300, rng)]
    # the entry without predictions sits at 0.6 in every resample and gets no interval
    assert bootstrap_ranks(scores, fixed=[0.9, 0.6, 0.3]) == [(1, 1), None, (3, 3)]
    with pytest.raises(ValueError, match="same images"):
        bootstrap_ranks([np.ones((1, 3)), np.ones((1, 4))], fixed=[1.0, 1.0])


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
