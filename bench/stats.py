"""Per-run scores (confusion matrix, per-class recall, balanced accuracy, macro-F1) and the
rank correlation of the transfer analysis. Every interval, comparison and rank interval of the
report comes from bench.resampling.

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
class Spearman:
    """Rank correlation; rho and p_value are None when it cannot be computed (n < 3, constant)."""

    rho: float | None
    p_value: float | None
    n: int


def _paired(x: ArrayLike, y: ArrayLike, names: str) -> tuple[np.ndarray, np.ndarray]:
    """x and y as arrays, checked to be 1-D and of equal length."""
    xs, ys = np.asarray(x), np.asarray(y)
    if xs.ndim != 1 or xs.shape != ys.shape:
        raise ValueError(
            f"{names} must be 1-D arrays of equal length; received shapes {xs.shape} and {ys.shape}"
        )
    return xs, ys


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
