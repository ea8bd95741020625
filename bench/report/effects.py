"""What the tables cannot show one entry at a time: what ImageNet pretraining bought a backbone
(against its random-weights twin, and against the best from-scratch baseline), and how much the
lesson protocol's early stopping on the test file flatters an accuracy.

Pure numpy and scipy: a paired bootstrap interval and a Wilcoxon signed-rank test, both over the
test images, on each image's correctness averaged over seeds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from bench.config import PROTOCOL_KNOBS
from bench.report.model import HOLDOUT, LESSON, Entry, Table, eval_arrays

CONFIDENCE = 0.95
RESAMPLES = 4_999  # bootstrap resamples: enough for the 2.5 % and 97.5 % percentiles
SEED = 0  # fixed: a report rebuilt from the same rows must say the same thing
TEST = "Wilcoxon signed-rank test over the test images"
RANDOM = "random"  # RunResult.weights of a backbone with random weights
BASELINE = "baseline"  # Entry.kind of a model trained from scratch


@dataclass
class Pretraining:
    """A pretrained backbone against a control on the same images, over seeds."""

    backbone: str
    title: str  # the table's
    treated: Entry  # ImageNet weights (or a weights file)
    control: Entry  # the same backbone with random weights, or the table's best baseline
    difference: float  # treated - control accuracy, mean over seeds
    ci_low: float
    ci_high: float
    p_value: float
    test: str


@dataclass
class Inflation:
    """One backbone under both protocols: how much early stopping on the test file flatters."""

    backbone: str
    lesson: Entry
    holdout: Entry
    lesson_accuracy: float  # validation (= test file) accuracy under lesson, mean over seeds
    holdout_accuracy: float  # test accuracy under holdout, mean over seeds
    inflation: float  # lesson - holdout


def correctness(entry: Entry) -> tuple[np.ndarray, np.ndarray] | None:
    """(labels, each image's correctness averaged over the seeds), or None when some run stored
    no predictions or the runs saw different images."""
    arrays = [eval_arrays(run) for run in entry.runs]
    if not arrays or any(a is None for a in arrays):
        return None
    labels = arrays[0][0]  # type: ignore[index]
    if any(not np.array_equal(a[0], labels) for a in arrays):  # type: ignore[index]
        return None
    right = np.mean([a[1] == a[0] for a in arrays], axis=0)  # type: ignore[index]
    return labels, right


def _mean_difference(treated: np.ndarray, control: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(treated - control, axis=axis)


def paired_difference(
    treated: np.ndarray, control: np.ndarray
) -> tuple[float, float, float, float]:
    """(mean difference, 95 % bootstrap interval low, high, Wilcoxon p) of per-image scores."""
    from scipy import stats as scipy_stats  # costs half a second to import

    difference = treated - control
    mean = float(difference.mean())
    if not np.any(difference):  # the same on every image: nothing to resample or test
        return mean, mean, mean, 1.0
    if np.all(difference == difference[0]):
        low = high = mean  # every resample has the same mean
    else:
        interval = scipy_stats.bootstrap(
            (treated, control),
            _mean_difference,
            paired=True,
            vectorized=True,
            n_resamples=RESAMPLES,
            confidence_level=CONFIDENCE,
            method="percentile",
            rng=np.random.default_rng(SEED),
        ).confidence_interval
        low, high = float(interval.low), float(interval.high)
    # images where the two score alike carry no information on which is better: dropped
    p = scipy_stats.wilcoxon(difference, zero_method="wilcox").pvalue
    return mean, low, high, float(p)


def _compare(backbone: str, title: str, treated: Entry, control: Entry) -> Pretraining | None:
    a, b = correctness(treated), correctness(control)
    if a is None or b is None or not np.array_equal(a[0], b[0]):
        return None  # no paired test without the same images
    difference, low, high, p = paired_difference(a[1], b[1])
    return Pretraining(backbone, title, treated, control, difference, low, high, p, TEST)


def _is_random(entry: Entry) -> bool:
    return entry.first.weights == RANDOM


def _pretraining_in(table: Table) -> list[Pretraining]:
    backbones = [e for e in table.entries if e.kind != BASELINE]
    baseline = next((e for e in table.entries if e.kind == BASELINE), None)  # ranked: the best
    random = {e.first.backbone: e for e in backbones if _is_random(e)}
    found = []
    for entry in backbones:
        if _is_random(entry) or not entry.first.weights:
            continue
        name = str(entry.first.backbone)
        for control in (random.get(name), baseline):
            if control is not None and (effect := _compare(name, table.title, entry, control)):
                found.append(effect)
    return found


def pretraining(tables: Iterable[Table]) -> list[Pretraining]:
    """Per table, each pretrained backbone against its random-weights twin and against the best
    baseline, where both stored predictions on the same images; in table and rank order."""
    return [effect for table in tables for effect in _pretraining_in(table)]


def _experiment(table: Table) -> str:
    """The table's configuration but the protocol's own knobs."""
    rest = {k: v for k, v in table.configuration.items() if k not in PROTOCOL_KNOBS}
    return json.dumps(rest, sort_keys=True, default=str)


def _by_model(entries: Sequence[Entry]) -> dict[tuple[str, str, bool], Entry]:
    """Entries by (kind, backbone, random weights); a model that appears twice is left out."""
    keys = [(e.kind, str(e.first.backbone), _is_random(e)) for e in entries]
    return {k: e for k, e in zip(keys, entries, strict=True) if keys.count(k) == 1}


def inflation(tables: Iterable[Table]) -> list[Inflation]:
    """Each model with entries under a lesson table and a holdout table of the same experiment:
    its lesson validation accuracy minus its holdout test accuracy (means over seeds)."""
    tables = list(tables)
    holdouts = [t for t in tables if t.protocol == HOLDOUT]
    found = []
    for lesson_table in (t for t in tables if t.protocol == LESSON):
        lesson = _by_model(lesson_table.entries)
        for holdout_table in (t for t in holdouts if _experiment(t) == _experiment(lesson_table)):
            for key, holdout in _by_model(holdout_table.entries).items():
                before = lesson[key].mean("test_accuracy") if key in lesson else None
                after = holdout.mean("test_accuracy")
                if before is not None and after is not None:
                    entry = lesson[key]
                    found.append(
                        Inflation(entry.label, entry, holdout, before, after, before - after)
                    )
    return found
