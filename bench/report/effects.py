"""What the tables cannot show one entry at a time, each as a paired difference with its
interval and p-value from the same resampling as the tables (bench.resampling): what ImageNet
pretraining bought a backbone (against its random-weights twin and the best baseline), how much
choosing the epoch on the test file flatters an accuracy (inside one holdout run), and what the
standard probes score on the head's own features.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from bench import resampling
from bench.report.entries import BASELINE, HOLDOUT, Entry, eval_arrays, is_number
from bench.report.ranking import CONFIDENCE, RESAMPLES, SEED, Table


@dataclass
class Pretraining:
    """A pretrained backbone against a control on the same images and seeds."""

    table: Table
    treated: Entry  # ImageNet weights (or a weights file)
    control: Entry  # the same backbone with random weights, or the table's best baseline
    difference: resampling.Difference


@dataclass
class Inflation:
    """One holdout entry: the test accuracy at the epoch a stopper watching the test file would
    keep, against the test accuracy at the epoch the holdout split chose; same run, same seeds."""

    entry: Entry
    chosen_on_test: float  # mean over seeds
    chosen_on_holdout: float
    difference: resampling.Difference  # chosen_on_test - chosen_on_holdout


@dataclass
class Probe:
    """A probe on an entry's frozen features against the head trained on them."""

    entry: Entry
    name: str  # "linear" or "knn"
    accuracy: float
    low: float
    high: float
    difference: resampling.Difference  # probe - head


def _pretraining_in(table: Table) -> list[Pretraining]:
    tested = table.tested
    backbones = [e for e in tested if e.kind != BASELINE]
    baseline = next((e for e in tested if e.kind == BASELINE), None)  # ranked: the best
    twins = {e.first.backbone: e for e in backbones if e.random_weights}
    found = []
    for entry in backbones:
        if entry.random_weights or not entry.first.weights:
            continue
        for control in (twins.get(entry.first.backbone), baseline):
            if control is not None:
                found.append(Pretraining(table, entry, control, table.difference(entry, control)))
    return found


def pretraining(tables: Iterable[Table]) -> list[Pretraining]:
    """Per table, each pretrained backbone against its random-weights twin and the best
    baseline, on the same test images; in table and rank order."""
    return [effect for table in tables for effect in _pretraining_in(table)]


def _matrices(entry: Entry, chosen: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(correctness at the epoch `chosen` names, correctness reported), seeds x images."""
    at, reported = [], []
    for run in entry.runs:
        arrays = eval_arrays(run)
        other = getattr(run, chosen)
        if arrays is None or not other or len(other) != len(arrays[0]):
            return None
        at.append(np.asarray(other) == arrays[0])
        reported.append(arrays[1] == arrays[0])
    return np.array(at, dtype=np.float64), np.array(reported, dtype=np.float64)


def _paired(a: np.ndarray, b: np.ndarray, seeds: Sequence) -> resampling.Resampled:
    labels = [int(s) if is_number(s) else i for i, s in enumerate(seeds)]
    return resampling.resample([a, b], [labels, labels], RESAMPLES, SEED)


def inflation(tables: Iterable[Table]) -> list[Inflation]:
    """Each holdout entry whose runs recorded the test file's accuracy after every epoch: what
    choosing the epoch on the test file (as the lesson protocol does) would have added."""
    found = []
    for table in tables:
        if table.protocol != HOLDOUT:
            continue
        for entry in table.entries:
            if (pair := _matrices(entry, "test_chosen_predictions")) is None:
                continue
            res = _paired(*pair, entry.seeds)
            found.append(Inflation(entry, float(res.estimates[0]), float(res.estimates[1]),
                                   resampling.difference(res, 0, 1, CONFIDENCE)))
    return found


def _probe_matrices(entry: Entry, name: str) -> tuple[np.ndarray, np.ndarray] | None:
    head, probe = [], []
    for run in entry.runs:
        arrays = eval_arrays(run)
        stored = ((run.probes or {}).get(name) or {}).get("predictions")
        if arrays is None or not stored or len(stored) != len(arrays[0]):
            return None
        head.append(arrays[1] == arrays[0])
        probe.append(np.asarray(stored) == arrays[0])
    return np.array(probe, dtype=np.float64), np.array(head, dtype=np.float64)


def probes(tables: Iterable[Table]) -> list[Probe]:
    """Each entry's probes (--probes) against its head, on the same test images and seeds."""
    found = []
    for table in tables:
        for entry in table.entries:
            for name in ("linear", "knn"):
                if (pair := _probe_matrices(entry, name)) is None:
                    continue
                res = _paired(*pair, entry.seeds)
                low, high = resampling.interval(res, 0, CONFIDENCE)
                found.append(Probe(entry, name, float(res.estimates[0]), low, high,
                                   resampling.difference(res, 0, 1, CONFIDENCE)))
    return found
