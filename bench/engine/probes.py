"""Linear and k-nearest-neighbour probes on the frozen features (--probes linear,knn).

The standard readouts of a representation (Kornblith et al. 2019, "Do better ImageNet models
transfer better?"), from scikit-learn rather than a hand-written optimiser. Each probe's
hyperparameter is chosen by stratified cross-validation on the split the head trains on; the
probe is then fitted on that whole split and scored once on the test file, the images the
head's predictions are on, whose labels never reach the choice.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bench.engine.splits import Splits

FOLDS = 5
C_GRID = tuple(float(c) for c in np.logspace(-4, 2, 7))  # inverse L2 strength, 1e-4 .. 100
K_GRID = (1, 3, 5, 9, 15, 25, 49)
MAX_ITER = 1000  # L-BFGS iterations; the linear probe says whether its chosen C converged


@dataclass(frozen=True)
class ProbeResult:
    """One probe fitted on the training split and scored on the evaluation images."""

    accuracy: float
    seconds: float  # the choice by cross-validation, the final fit and the prediction
    chosen: dict[str, Any]  # the hyperparameter picked ("C" or "k"), its CV accuracy, folds
    predictions: np.ndarray  # on the evaluation images


def linear(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
           seed: int = 0) -> ProbeResult:
    """Multinomial logistic regression (L-BFGS) on standardised features; C by CV."""
    # lbfgs fits one multinomial (softmax) model for three or more classes
    model = make_pipeline(StandardScaler(),
                          LogisticRegression(solver="lbfgs", max_iter=MAX_ITER))
    fit = _choose(model, "logisticregression__C", C_GRID, x_train, y_train, x_test, seed)
    converged = bool(np.all(fit.search.best_estimator_[-1].n_iter_ < MAX_ITER))
    return fit.result(y_test, C=float(fit.value), converged=converged)


def knn(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
        seed: int = 0) -> ProbeResult:
    """k nearest neighbours by cosine distance on the raw features; k by CV."""
    model = KNeighborsClassifier(metric="cosine", algorithm="brute")
    # a fold trains on (folds - 1) / folds of the split: k cannot exceed that
    folds = _folds(y_train)
    ks = tuple(k for k in K_GRID if k <= len(y_train) * (folds - 1) // folds) or (1,)
    fit = _choose(model, "n_neighbors", ks, x_train, y_train, x_test, seed)
    return fit.result(y_test, k=int(fit.value))


PROBES: dict[str, Callable[..., ProbeResult]] = {"linear": linear, "knn": knn}


def run(names: Iterable[str], splits: Splits, seed: int) -> dict[str, Any]:
    """The RunResult fields of the named probes on `splits` (train split -> test file).

    A probe that fails leaves its accuracy empty and its error in `probes`: the head's row
    is kept whatever a probe does.
    """
    fields: dict[str, Any] = {}
    details: dict[str, Any] = {}
    for name in names:
        try:
            result = PROBES[name](splits.x_train, splits.y_train, splits.x_test, splits.y_test,
                                  seed)
        except Exception as err:  # an optional column never costs the row
            details[name] = {"error": " ".join(str(err).split()) or type(err).__name__}
            continue
        fields[f"probe_{name}_accuracy"] = result.accuracy
        fields[f"probe_{name}_s"] = result.seconds
        details[name] = {**result.chosen, "predictions": result.predictions.tolist()}
    if details:
        fields["probes"] = details
    return fields


def not_run_note(path: str) -> str:
    """The row's note when probes were asked for on a path without frozen features."""
    return (f"--probes: not run on the {path} path; the probes use the cached path's frozen "
            "features")


def _folds(labels: np.ndarray) -> int:
    """FOLDS, or fewer when the smallest class has fewer images (at least 2)."""
    smallest = int(np.unique(labels, return_counts=True)[1].min())
    return max(2, min(FOLDS, smallest))


@dataclass(frozen=True)
class _Fit:
    search: GridSearchCV  # refitted on the whole training split with the chosen value
    value: Any  # the chosen hyperparameter
    folds: int
    predictions: np.ndarray  # on the evaluation images
    seconds: float

    def result(self, y_test: np.ndarray, **chosen: Any) -> ProbeResult:
        return ProbeResult(float(np.mean(self.predictions == y_test)), self.seconds,
                           {**chosen, "cv_accuracy": float(self.search.best_score_),
                            "folds": self.folds}, self.predictions)


def _choose(model: BaseEstimator, param: str, grid: tuple, x_train: np.ndarray,
            y_train: np.ndarray, x_test: np.ndarray, seed: int) -> _Fit:
    """Grid search by stratified, seeded CV on the training split, refit on all of it, one
    prediction on the evaluation images (their labels are not an argument)."""
    start = time.perf_counter()
    folds = _folds(y_train)
    search = GridSearchCV(model, {param: list(grid)}, scoring="accuracy",
                          cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    with warnings.catch_warnings():
        # a grid point stopped at MAX_ITER is still scored; the linear probe reports whether
        # the chosen one converged. A class smaller than the folds is warned about per fit:
        # _folds already allowed for it.
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        search.fit(x_train, y_train)
        predictions = np.asarray(search.predict(x_test))
    return _Fit(search, search.best_params_[param], folds, predictions,
                time.perf_counter() - start)
