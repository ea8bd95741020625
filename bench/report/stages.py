"""A fine-tuned table against its frozen stage: what fine-tuning added to each entry, and
whether the frozen ranking predicted the fine-tuned one.

A fine-tuned run stores its frozen stage's predictions on the same test images with the same
seed, so both come from one resampling (bench.resampling) of the test images and seeds, drawn
over every fine-tuned entry and its frozen stage at once: a gain is paired image by image and
seed by seed, and each replicate recomputes both stages' accuracies of every entry together.

The rank correlation's interval spans the basic interval and the replicates' own percentile
range. A replicate adds noise to estimates that already carry it, so its ranks agree less than
the estimates' do. The basic interval reflects that pull past the estimate, and where entries
are tied it turns noise into confidence: in tests/test_stages.py it called five tied entries
correlated in 66-78 % of tables. The percentile range errs toward 0: it covered a true rho of 1
among ten entries 2 points apart in 0-34 % of tables. Their span covered the true rho in 95-100 %
of tables wherever entries were 2 points apart or more (3 and 5 seeds, 293 images), and called
its sign wrongly in none, tied entries included. Where entries are a point apart their order is
not in the data: the span then errs toward 0 (covering a true -1 in 47-88 % of tables) but does
not call the wrong sign.

The gain's interval is conservative (it covered the true gain in 99-100 % of tables): the two
stages' seed parts are drawn as if independent, as for any two entries, though a fine-tuned run
continues its frozen one.

numpy and scipy only; every number is read off bench.resampling's replicates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bench import resampling, stats
from bench.report.entries import Entry
from bench.result import FINE_TUNED

MIN_BACKBONES = 3  # a rank correlation of fewer entries says nothing
# A fine-tuned run continues its frozen run with the same seed, so that seed's luck on these
# test images is in both stages and reads as agreement; only seeds drawn afresh in each
# replicate undo it (with one seed, the interval called tied entries correlated in 16 % of
# tables; with 2 or more, in none).
MIN_SEEDS = 2


@dataclass(frozen=True)
class Agreement:
    """Spearman's rho between the frozen and the fine-tuned accuracies of a table's entries."""

    backbones: int  # entries correlated
    rho: float | None  # None: undefined, one stage's accuracies all equal
    low: float | None  # its interval, clipped to [-1, 1]
    high: float | None


@dataclass(frozen=True, eq=False)
class Stages:
    """A fine-tuned table's entries against their frozen stage."""

    entries: list[Entry]  # fine-tuned, with their frozen stage's predictions on the images
    resampled: resampling.Resampled  # columns: the entries fine-tuned, then their frozen stage
    gains: list[resampling.Difference]  # fine-tuned minus frozen, per entry
    agreement: Agreement | None  # None: fewer than MIN_BACKBONES entries or MIN_SEEDS seeds


def is_fine_tuned(entry: Entry) -> bool:
    return entry.first.stage == FINE_TUNED


def frozen_correctness(entry: Entry, labels: np.ndarray) -> np.ndarray | None:
    """(seeds, images) 0/1 correctness of the entry's frozen stage on exactly these labels,
    None when some run stored no frozen predictions for them."""
    rows = []
    for run in entry.runs:
        arrays = stats.label_arrays(run.labels, run.frozen_predictions)
        if arrays is None or not np.array_equal(arrays[0], labels):
            return None
        rows.append(arrays[1] == arrays[0])
    return np.array(rows, dtype=np.float64)


def rank_correlations(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row of first with the same row of second (average ranks for
    ties, as scipy.stats.spearmanr); 0 where a row is constant and rho undefined."""
    from scipy import stats as scipy_stats

    a = scipy_stats.rankdata(first, axis=1)
    b = scipy_stats.rankdata(second, axis=1)
    a -= a.mean(axis=1, keepdims=True)
    b -= b.mean(axis=1, keepdims=True)
    scale = np.sqrt(np.sum(a * a, axis=1) * np.sum(b * b, axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(scale > 0, np.sum(a * b, axis=1) / scale, 0.0)


def agreement(res: resampling.Resampled, confidence: float) -> Agreement:
    """Spearman's rho between the frozen columns (second half) and the fine-tuned ones (first
    half) of a stages resampling, with its interval (see the module doc)."""
    e = res.estimates.size // 2
    rho = stats.spearman(res.estimates[e:], res.estimates[:e]).rho
    if rho is None:
        return Agreement(e, None, None, None)
    accuracy = res.estimates + res.replicates
    deviations = rank_correlations(accuracy[:, e:], accuracy[:, :e]) - rho
    basic = resampling.basic_interval(rho, deviations, confidence)
    percentile = resampling.basic_interval(rho, -deviations, confidence)
    return Agreement(e, rho, max(-1.0, min(basic[0], percentile[0])),
                     min(1.0, max(basic[1], percentile[1])))


def resample_stages(tuned: Sequence[np.ndarray], frozen: Sequence[np.ndarray],
                    seeds: Sequence[Sequence[int]], n_resamples: int,
                    seed: int) -> resampling.Resampled:
    """One resampling of every entry fine-tuned (columns 0..E-1) and its frozen stage (E..2E-1),
    each a (seeds, images) correctness matrix on the same images."""
    return resampling.resample([*tuned, *frozen], [*seeds, *seeds], n_resamples, seed)


def gains(res: resampling.Resampled, confidence: float) -> list[resampling.Difference]:
    """Each entry's fine-tuned minus frozen accuracy from a stages resampling."""
    e = res.estimates.size // 2
    return [resampling.difference(res, i, e + i, confidence) for i in range(e)]


def compare(ranked: Sequence[Entry], labels: np.ndarray, n_resamples: int, seed: int,
            confidence: float) -> Stages | None:
    """The fine-tuned entries with their frozen stage stored on these test labels, each one's
    gain and, with MIN_BACKBONES of them of MIN_SEEDS seeds each, their rank agreement; None
    when there are none."""
    found, tuned, frozen = [], [], []
    for entry in ranked:
        if not is_fine_tuned(entry) or (after := entry.correctness(labels)) is None:
            continue
        if (before := frozen_correctness(entry, labels)) is not None:
            found.append(entry)
            tuned.append(after)
            frozen.append(before)
    if not found:
        return None
    res = resample_stages(tuned, frozen, [e.seed_labels for e in found], n_resamples, seed)
    enough = len(found) >= MIN_BACKBONES and min(res.n_seeds) >= MIN_SEEDS
    together = agreement(res, confidence) if enough else None
    return Stages(found, res, gains(res, confidence), together)
