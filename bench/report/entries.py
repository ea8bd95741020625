"""Runs read into entries: a backbone's ok runs over seeds in one configuration, what each run
says (its numbers, its weights, its test images' correctness) and how entries are named.

Pure numpy: no statistics here (bench.report.ranking) and no words (bench.report.words).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from bench import stats
from bench.result import RunResult
from bench.runlog import group_key

LESSON = "lesson"  # early stopping watches the test file, which is also what is reported
HOLDOUT = "holdout"  # early stopping on a split of the training set; the test file once at the end
RANDOM = "random"  # RunResult.weights of a backbone with random weights
BASELINE = "baseline"  # RunResult.kind of a model trained from scratch

_NOT_EXTRACTED = ("from-scratch", "end-to-end")  # routes that compute no features to cache

# What tells two entries of one backbone apart within a table (whose configuration they share)
# besides their runner group: the weights (ImageNet, random, a file).
_ENTRY_KNOBS = ("weights",)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def seed_order(seed: Any) -> tuple:
    return (not is_number(seed), seed if is_number(seed) else 0, str(seed))


def eval_arrays(run: RunResult) -> tuple[np.ndarray, np.ndarray] | None:
    """(labels, predictions) of the test images, or None when not stored (or unusable)."""
    return stats.label_arrays(run.labels, run.predictions)


def n_classes(run: RunResult, arrays: tuple[np.ndarray, np.ndarray]) -> int:
    declared = run.n_classes if is_number(run.n_classes) else 0
    return max(int(declared), len(run.class_names or []), int(max(a.max() for a in arrays)) + 1)


def metric(run: RunResult, name: str) -> float | None:
    """A number of the run, None when it has none."""
    value = run_value(run, name)
    return float(value) if is_number(value) else None


def weights_name(run: RunResult) -> str | None:
    """"imagenet", "random" or the weights file's name: never the path of the machine that ran."""
    value = run.weights
    if not isinstance(value, str) or not any(sep in value for sep in "/\\"):
        return value
    return PurePosixPath(value.replace("\\", "/")).name


def weights_file_text(run: RunResult) -> str | None:
    """The weights file's name, and Keras' own name for the run's size when it stood in."""
    name = run.weights_file or weights_name(run)
    if run.weights_substituted_for:
        return f"{name} (for {run.weights_substituted_for})"
    return name


def run_value(run: RunResult, name: str) -> Any:
    """A field of the run as reported: the weights as a name; no extraction time where nothing
    was extracted (rows record 0: a baseline has no backbone, end to end it runs in fit)."""
    if name == "weights":
        return weights_name(run)
    if name == "extract_s" and run.route in _NOT_EXTRACTED:
        return None
    return getattr(run, name)


def n_eval(run: RunResult) -> int | None:
    """Test images the run's accuracy was measured on."""
    if arrays := eval_arrays(run):
        return len(arrays[0])
    return int(run.n_test) if is_number(run.n_test) and run.n_test > 0 else None


@dataclass
class Entry:
    """One leaderboard line: a backbone's ok runs in one configuration, lowest seed first; the
    ranking fills in its place among the table's entries."""

    runs: list[RunResult]
    label: str = ""  # backbone, plus the knobs that tell it from a same-named entry
    rank: int | None = None
    # 95 % interval of the rank, from the table's resampling (None: nothing else compared)
    rank_low: int | None = None
    rank_high: int | None = None
    accuracy: float | None = None  # mean over seeds and test images
    ci_low: float | None = None  # 95 % interval of the accuracy (images and seeds resampled)
    ci_high: float | None = None
    # "best" (the top), "could be best", "worse" (shown worse than the best), or "n/a" (no
    # stored predictions on the table's test images: not compared)
    verdict: str = "n/a"
    behind_at_least: float | None = None  # simultaneous lower bound of best - this, >= 0
    behind_at_most: float | None = None  # simultaneous upper bound of best - this (U)
    # fine-tuned entries: fine-tuned minus frozen-stage accuracy, paired per image and seed,
    # its 95 % interval and p-value (bench.report.stages)
    gain: float | None = None
    gain_low: float | None = None
    gain_high: float | None = None
    gain_p: float | None = None
    numbers: dict[str, Any] = field(default_factory=dict)  # by leaderboard() column

    @property
    def first(self) -> RunResult:
        return self.runs[0]

    @property
    def protocol(self) -> str:
        return str(self.first.protocol)

    @property
    def kind(self) -> str:
        return str(self.first.kind)

    @property
    def random_weights(self) -> bool:
        """A random-features control: a backbone with random weights, not a pretrained one."""
        return self.first.weights == RANDOM

    @property
    def one_class(self) -> bool:
        """Every seed's head predicts a single class for every test image: it tells nothing
        apart, whatever its accuracy (that class's share) says."""
        return all(r.one_class or len(set(r.predictions or [])) == 1 for r in self.runs)

    @property
    def seeds(self) -> list:
        return [r.seed for r in self.runs]

    @property
    def seed_labels(self) -> list[int]:
        """The seeds as resampling labels: a seed that is not a number by its position."""
        return [int(s) if is_number(s) else i for i, s in enumerate(self.seeds)]

    def mean_sd(self, name: str) -> tuple[float | None, float | None]:
        values = [v for r in self.runs if (v := metric(r, name)) is not None]
        return stats.mean_sd(values) if values else (None, None)

    def mean(self, name: str) -> float | None:
        return self.mean_sd(name)[0]

    def measured(self, name: str) -> int:
        """How many of the runs recorded this number."""
        return sum(1 for r in self.runs if metric(r, name) is not None)

    def correctness(self, labels: np.ndarray) -> np.ndarray | None:
        """(seeds, images) 0/1 correctness on exactly these test labels, None when some run
        stored no predictions for them."""
        rows = []
        for run in self.runs:
            arrays = eval_arrays(run)
            if arrays is None or not np.array_equal(arrays[0], labels):
                return None
            rows.append(arrays[1] == arrays[0])
        return np.array(rows, dtype=np.float64)


def labels(runs: Sequence[RunResult]) -> list[str]:
    """Backbone names, with the knobs that differ appended where a name repeats."""
    counts = Counter(r.backbone for r in runs)
    names = []
    for run in runs:
        name = str(run.backbone)
        if counts[run.backbone] > 1:
            same = [r for r in runs if r.backbone == run.backbone]
            differing = [
                k for k in _ENTRY_KNOBS if len({json.dumps(run_value(r, k)) for r in same}) > 1
            ]
            if differing:
                name += " (" + ", ".join(f"{k}={run_value(run, k)}" for k in differing) + ")"
        names.append(name)
    return names


def entries(runs: Iterable[RunResult]) -> list[Entry]:
    """The ok runs grouped over seeds, in order of first appearance."""
    grouped: dict[str, list[RunResult]] = {}
    for run in runs:
        if run.ok:
            grouped.setdefault(group_key(run), []).append(run)
    found = [Entry(sorted(rows, key=lambda r: seed_order(r.seed))) for rows in grouped.values()]
    names = labels([e.first for e in found])
    # same backbone and knobs, different runner group (e.g. the data changed): say which
    counts = Counter(names)
    for entry, name in zip(found, names, strict=True):
        group = entry.first.group
        entry.label = f"{name} [{str(group)[:8]}]" if counts[name] > 1 and group else name
    return found


def by_configuration(runs: Iterable[RunResult]) -> dict[str, list[RunResult]]:
    """The ok runs by their configuration (as json with sorted keys), in order of appearance."""
    found: dict[str, list[RunResult]] = {}
    for run in runs:
        if run.ok:
            found.setdefault(json.dumps(run.configuration, sort_keys=True), []).append(run)
    return found


def seeds_text(runs: Sequence[RunResult], missing: str) -> str:
    """"seed 2", "seeds 2–6" or "seeds 2, 5": the seeds of these runs."""
    seeds = sorted({r.seed for r in runs}, key=seed_order)
    if len(seeds) == 1:
        return f"seed {missing if seeds[0] is None else seeds[0]}"
    if all(isinstance(s, int) for s in seeds) and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"seeds {seeds[0]}–{seeds[-1]}"
    return "seeds " + ", ".join(missing if s is None else str(s) for s in seeds)
