"""The two protocols as data splits: lesson (watch the test file) and holdout."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.config import RunConfig
from bench.data import Dataset


def holdout_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded (train, holdout) indices: `fraction` of each class, at least one."""
    rng = np.random.default_rng(seed)
    train, held = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = min(max(1, round(fraction * len(idx))), len(idx) - 1)
        held.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held))


@dataclass(frozen=True)
class Splits:
    """What trains, what early stopping watches, and what the reported predictions are on."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_watch: np.ndarray
    y_watch: np.ndarray
    x_test: np.ndarray  # the test file, in both protocols
    y_test: np.ndarray


def make_splits(x_train_all: np.ndarray, x_test: np.ndarray, data: Dataset,
                config: RunConfig) -> Splits:
    """lesson: train on all of train, watch the test file. holdout: watch a stratified part of
    train; the test file is only predicted once at the end (its labels never reach training)."""
    if config.protocol == "holdout":
        tr, va = holdout_split(data.train_labels, config.val_fraction,
                               config.effective_backbone_seed)
        return Splits(x_train_all[tr], data.train_labels[tr], x_train_all[va],
                      data.train_labels[va], x_test, data.test_labels)
    return Splits(x_train_all, data.train_labels, x_test, data.test_labels, x_test,
                  data.test_labels)
