"""The numbers behind a trustworthy comparison: intervals, paired tests and their correction,
rank intervals, per-class scores.

numpy and scipy only (no TensorFlow, pandas or matplotlib): the runner fills rows with these and
the reporter compares rows with them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ArrayLike = Sequence[int] | Sequence[bool] | np.ndarray


@dataclass(frozen=True)
class SignTest:
    """Exact sign test of two classifiers' per-image scores on the same images."""

    a_better: int  # images where a scores higher
    b_better: int  # images where b scores higher
    n_untied: int  # a_better + b_better: the only images that tell the two apart
    p_value: float  # two-sided


@dataclass(frozen=True)
class Spearman:
    """Rank correlation; rho and p_value are None when it cannot be computed (n < 3, constant)."""

    rho: float | None
    p_value: float | None
    n: int


def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion correct / n (e.g. an accuracy on n images)."""
    if n < 1 or not 0 <= correct <= n:
        raise ValueError(f"need 0 <= correct <= n and n >= 1; received correct={correct}, n={n}")
    from scipy import stats as _scipy_stats  # scipy.stats costs half a second to import

    ci = _scipy_stats.binomtest(int(correct), int(n)).proportion_ci(
        confidence_level=confidence, method="wilson"
    )
    return float(ci.low), float(ci.high)


def _paired(x: ArrayLike, y: ArrayLike, names: str) -> tuple[np.ndarray, np.ndarray]:
    """x and y as arrays, checked to be 1-D and of equal length."""
    xs, ys = np.asarray(x), np.asarray(y)
    if xs.ndim != 1 or xs.shape != ys.shape:
        raise ValueError(
            f"{names} must be 1-D arrays of equal length; received shapes {xs.shape} and {ys.shape}"
        )
    return xs, ys


def sign_test(score_a: ArrayLike, score_b: ArrayLike) -> SignTest:
    """Exact two-sided sign test over images of two classifiers' scores on the same images.

    A score is an image's correctness, or its correctness averaged over seeds (in [0, 1]). The
    images are the unit: under "equally good" each untied image is a fair coin flip between
    "a higher" and "b higher", so the p-value is a binomial test with p = 0.5. On 0/1
    correctness of one seed each this is the exact McNemar test.
    """
    a, b = _paired(score_a, score_b, "score_a and score_b")
    if a.dtype.kind not in "biuf" or b.dtype.kind not in "biuf":
        raise ValueError(f"score_a and score_b must be numbers; received {a.dtype} and {b.dtype}")
    a_better, b_better = int(np.sum(a > b)), int(np.sum(a < b))
    n = a_better + b_better
    if n == 0:
        return SignTest(a_better=0, b_better=0, n_untied=0, p_value=1.0)
    from scipy import stats as _scipy_stats

    p = _scipy_stats.binomtest(min(a_better, b_better), n, 0.5).pvalue
    return SignTest(a_better=a_better, b_better=b_better, n_untied=n, p_value=float(p))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given (family-wise error control).

    The i-th smallest p is multiplied by (m - i + 1), kept monotone and capped at 1; reject
    where the adjusted p is below alpha. Valid under any dependence between the tests.
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1 or np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError(f"need a 1-D sequence of p-values in [0, 1]; received {p_values!r}")
    order = np.argsort(p, kind="stable")
    m = p.size
    stepped = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted.tolist()


def bootstrap_ranks(
    scores: Sequence[np.ndarray | None],
    fixed: Sequence[float],
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> list[tuple[int, int] | None]:
    """Rank intervals by a bootstrap over images and seeds.

    scores[e]: entry e's per-image correctness, shape (seeds, images), the same images for all
    entries; None for an entry without it, which then keeps its accuracy fixed[e] (NaN ranks
    last) in every resample and gets no interval. Each resample draws the images with
    replacement (shared by every entry, as the comparison is paired) and each entry's seeds with
    replacement; an entry's rank is 1 + the entries with a strictly higher accuracy.
    """
    rng = np.random.default_rng(seed)
    sizes = {s.shape[1] for s in scores if s is not None}
    if len(sizes) > 1:
        raise ValueError(f"every entry's scores must cover the same images; received {sizes}")
    n = sizes.pop() if sizes else 1
    # how often each image is drawn in each resample, as weights summing to 1
    weights = rng.multinomial(n, np.full(n, 1 / n), size=resamples) / n
    accuracy = np.empty((resamples, len(scores)))
    for e, score in enumerate(scores):
        if score is None:
            value = fixed[e]
            accuracy[:, e] = -np.inf if value is None or not np.isfinite(value) else value
            continue
        per_seed = weights @ np.asarray(score, dtype=np.float64).T  # (resamples, seeds)
        drawn = rng.integers(0, per_seed.shape[1], size=per_seed.shape)
        accuracy[:, e] = np.take_along_axis(per_seed, drawn, axis=1).mean(axis=1)
    ranks = 1 + (accuracy[:, None, :] > accuracy[:, :, None]).sum(axis=2)  # (resamples, entries)
    tail = (1 - confidence) / 2 * 100
    low = np.percentile(ranks, tail, axis=0, method="lower")
    high = np.percentile(ranks, 100 - tail, axis=0, method="higher")
    return [
        None if score is None else (int(lo), int(hi))
        for score, lo, hi in zip(scores, low, high, strict=True)
    ]


def label_arrays(labels: object, predictions: object) -> tuple[np.ndarray, np.ndarray] | None:
    """(labels, predictions) as int64 arrays of equal length, or None when a row stored none,
    or something that is not class indices."""
    labels, predictions = labels or [], predictions or []
    if not labels or len(labels) != len(predictions):
        return None
    try:
        y, p = np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)
    except (TypeError, ValueError):
        return None
    if y.ndim != 1 or min(y.min(), p.min()) < 0:
        return None
    return y, p


def _checked(labels: ArrayLike, predictions: ArrayLike, n_classes: int) -> tuple[np.ndarray, ...]:
    y, p = _paired(labels, predictions, "labels and predictions")
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1; received {n_classes}")
    for name, values in (("labels", y), ("predictions", p)):
        if values.size and not np.issubdtype(values.dtype, np.integer):
            raise ValueError(f"{name} must be integer class indices; received {values.dtype}")
        if values.size and (values.min() < 0 or values.max() >= n_classes):
            raise ValueError(
                f"{name} must lie in [0, {n_classes}); received values from {values.min()} to "
                f"{values.max()}"
            )
    return y.astype(np.int64), p.astype(np.int64)


def confusion_matrix(labels: ArrayLike, predictions: ArrayLike, n_classes: int) -> np.ndarray:
    """Counts, shape (n_classes, n_classes): rows are the true class, columns the predicted."""
    y, p = _checked(labels, predictions, n_classes)
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (y, p), 1)
    return matrix


def per_class_accuracy(labels: ArrayLike, predictions: ArrayLike, n_classes: int) -> np.ndarray:
    """Recall of each class (correct / images of that class); NaN for a class with no images."""
    matrix = confusion_matrix(labels, predictions, n_classes)
    support = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(matrix) / support, np.nan)


def balanced_accuracy(labels: ArrayLike, predictions: ArrayLike, n_classes: int) -> float:
    """Mean recall over the classes present in labels (NaN when there are no labels)."""
    recall = per_class_accuracy(labels, predictions, n_classes)
    present = recall[~np.isnan(recall)]
    return float(present.mean()) if present.size else math.nan


def macro_f1(labels: ArrayLike, predictions: ArrayLike, n_classes: int) -> float:
    """Mean F1 over classes present in labels or predictions; a class with no hit scores 0."""
    matrix = confusion_matrix(labels, predictions, n_classes)
    tp = np.diag(matrix).astype(np.float64)
    fp = matrix.sum(axis=0) - tp  # predicted as the class, but another
    fn = matrix.sum(axis=1) - tp  # of the class, predicted as another
    present = (matrix.sum(axis=0) + matrix.sum(axis=1)) > 0
    if not present.any():
        return math.nan
    denominator = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(tp > 0, 2 * tp / denominator, 0.0)
    return float(f1[present].mean())


def spearman(x: Sequence[float], y: Sequence[float]) -> Spearman:
    """Spearman rank correlation with its two-sided p-value (scipy.stats.spearmanr)."""
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    if xs.ndim != 1 or xs.shape != ys.shape:
        raise ValueError(
            f"x and y must be 1-D and of equal length; received shapes {xs.shape} and {ys.shape}"
        )
    n = int(xs.size)
    if n < 3:
        return Spearman(rho=None, p_value=None, n=n)
    from scipy import stats as _scipy_stats

    with warnings.catch_warnings():
        # a constant input has no ranks to correlate: scipy warns and returns NaN
        warnings.simplefilter("ignore", _scipy_stats.ConstantInputWarning)
        result = _scipy_stats.spearmanr(xs, ys)
    rho, p = float(result.statistic), float(result.pvalue)
    if not (math.isfinite(rho) and math.isfinite(p)):
        return Spearman(rho=None, p_value=None, n=n)
    return Spearman(rho=rho, p_value=p, n=n)


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1); sd is 0.0 for a single value."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"need a non-empty 1-D sequence of numbers; received shape {array.shape}")
    sd = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return float(array.mean()), sd
