"""The leaderboard as data: runs -> entries (one configuration's runs over seeds), ranked within
each protocol, each with a Wilson interval and an exact McNemar test against the top entry.

Renderers (markdown, tables, plots) read these entries; none of them ranks or tests anything.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench import stats
from bench.report.columns import FRAME, MEAN, columns_of
from bench.result import RunResult
from bench.runlog import GROUP_KNOBS, group_key

LESSON = "lesson"  # early stopping watches the test file, which is also what is reported
HOLDOUT = "holdout"  # early stopping on a split of the training set; the test file once at the end

ALPHA = 0.05  # McNemar: p >= ALPHA vs the top entry is "tied" (not significantly worse)
CONFIDENCE = 0.95  # Wilson intervals
MISSING = "—"  # how a missing value reads in the report's text

_COMPUTED_METRICS = ("balanced_accuracy", "macro_f1")  # from stored predictions when not recorded


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _sort_number(value: Any) -> float:
    """Descending sort key: missing or non-finite numbers sort last."""
    return -float(value) if is_number(value) else math.inf


def seed_order(seed: Any) -> tuple:
    return (not is_number(seed), seed if is_number(seed) else 0, str(seed))


def rank_field(protocol: str) -> str:
    """The accuracy entries are ranked by: the untouched test file under holdout."""
    return "test_accuracy" if protocol == HOLDOUT else "val_accuracy"


def eval_arrays(run: RunResult) -> tuple[np.ndarray, np.ndarray] | None:
    """(labels, predictions) of the evaluation images, or None when not stored (or unusable)."""
    labels, predictions = run.labels or [], run.predictions or []
    if not labels or len(labels) != len(predictions):
        return None
    try:
        y, p = np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)
    except (TypeError, ValueError):
        return None
    if y.ndim != 1 or y.min() < 0 or p.min() < 0:
        return None
    return y, p


def n_classes(run: RunResult, arrays: tuple[np.ndarray, np.ndarray]) -> int:
    declared = run.n_classes if is_number(run.n_classes) else 0
    return max(int(declared), len(run.class_names or []), int(max(a.max() for a in arrays)) + 1)


def metric(run: RunResult, name: str) -> float | None:
    """A number of the run; balanced accuracy and macro-F1 computed when only predictions are."""
    value = getattr(run, name)
    if is_number(value):
        return float(value)
    if name in _COMPUTED_METRICS and (arrays := eval_arrays(run)):
        function = stats.balanced_accuracy if name == "balanced_accuracy" else stats.macro_f1
        result = function(*arrays, n_classes(run, arrays))
        return result if math.isfinite(result) else None
    return None


def run_value(run: RunResult, name: str) -> Any:
    """A field of the run as recorded, or computed from its predictions where it can be."""
    computed = metric(run, name) if name in _COMPUTED_METRICS else None
    return getattr(run, name) if computed is None else computed


def n_eval(run: RunResult) -> int | None:
    """Images the ranking accuracy was measured on."""
    if arrays := eval_arrays(run):
        return len(arrays[0])
    # without stored labels: under lesson the test file is the validation set, n_val counts it
    if run.protocol != HOLDOUT and is_number(run.n_val) and run.n_val > 0:
        return int(run.n_val)
    return None


def wilson(accuracy: float | None, n: int | None) -> tuple[float | None, float | None]:
    if accuracy is None or not n or not 0 <= accuracy <= 1:
        return None, None
    return stats.wilson_interval(round(accuracy * n), n, CONFIDENCE)


def run_interval(run: RunResult) -> tuple[float | None, float | None]:
    """Wilson interval of one run's ranking accuracy."""
    return wilson(metric(run, rank_field(run.protocol)), n_eval(run))


@dataclass
class Entry:
    """One leaderboard line: the ok runs of one configuration, lowest seed first."""

    runs: list[RunResult]
    label: str = ""  # backbone, plus the knobs that tell it from a same-named entry
    rank: int | None = None
    vs_top: str = "n/a"
    p_value: float | None = None
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

    def mean_sd(self, name: str) -> tuple[float | None, float | None]:
        values = [v for r in self.runs if (v := metric(r, name)) is not None]
        return stats.mean_sd(values) if values else (None, None)

    def mean(self, name: str) -> float | None:
        return self.mean_sd(name)[0]

    def measured(self, name: str) -> int:
        """How many of the runs recorded (or allow computing) this number."""
        return sum(1 for r in self.runs if metric(r, name) is not None)

    def accuracy(self) -> float | None:
        return self.mean(rank_field(self.protocol))


def labels(runs: Sequence[RunResult]) -> list[str]:
    """Backbone names, with the knobs that differ appended where a name repeats."""
    counts = Counter(r.backbone for r in runs)
    names = []
    for run in runs:
        name = str(run.backbone)
        if counts[run.backbone] > 1:
            same = [r for r in runs if r.backbone == run.backbone]
            differing = [
                k for k in GROUP_KNOBS if len({json.dumps(getattr(r, k)) for r in same}) > 1
            ]
            if differing:
                name += " (" + ", ".join(f"{k}={getattr(run, k)}" for k in differing) + ")"
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


def _protocol_order(protocol: str) -> tuple[int, str]:
    return ({LESSON: 0, HOLDOUT: 1}.get(protocol, 2), protocol)


def _ranking_key(entry: Entry) -> tuple:
    return (
        _sort_number(entry.accuracy()),
        _sort_number(entry.mean("best_val_accuracy")),
        str(entry.first.backbone),
        entry.label,
    )


def ranked_by_protocol(found: Iterable[Entry]) -> dict[str, list[Entry]]:
    """Entries per protocol (lesson first), best first, ranked 1..n, compared with the top."""
    by_protocol: dict[str, list[Entry]] = {}
    for entry in found:
        by_protocol.setdefault(entry.protocol, []).append(entry)
    ranked: dict[str, list[Entry]] = {}
    for protocol in sorted(by_protocol, key=_protocol_order):
        group = sorted(by_protocol[protocol], key=_ranking_key)
        for rank, entry in enumerate(group, start=1):
            entry.rank = rank
        _compare_with_top(group)
        for entry in group:
            entry.numbers = _entry_numbers(entry)
        ranked[protocol] = group
    return ranked


def rank(runs: Iterable[RunResult]) -> dict[str, list[Entry]]:
    """The ok runs as ranked, tested entries per protocol."""
    return ranked_by_protocol(entries(runs))


def _entry_numbers(entry: Entry) -> dict[str, Any]:
    """The entry's leaderboard() row: columns read from its runs, then the ones computed here."""
    numbers = {
        c.name: entry.mean(c.source) if c.per_entry == MEAN else getattr(entry.first, c.source)
        for c in columns_of(FRAME)
        if c.source is not None
    }
    n = next((n for r in entry.runs if (n := n_eval(r))), None)
    ci_low, ci_high = wilson(entry.accuracy(), n)
    numbers.update(
        rank=entry.rank,
        k=len(entry.runs),
        val_acc_sd=entry.mean_sd("val_accuracy")[1],
        test_acc_sd=entry.mean_sd("test_accuracy")[1],
        ci_low=ci_low,
        ci_high=ci_high,
        n_eval=n,
        vs_top=entry.vs_top,
        p_value=entry.p_value,
    )
    return numbers


def _paired_runs(top: Entry, other: Entry) -> tuple[RunResult, RunResult]:
    """The runs to compare: the lowest seed both have, else each one's lowest seed."""
    shared = {r.seed for r in top.runs} & {r.seed for r in other.runs}
    for run in top.runs:  # lowest seed first
        if run.seed in shared:
            return run, next(r for r in other.runs if r.seed == run.seed)
    return top.first, other.first


def _compare_with_top(ranked: Sequence[Entry]) -> None:
    """Sets vs_top and p_value: exact McNemar of each entry against the first, same images."""
    if not ranked:
        return
    top = ranked[0]
    top.vs_top, top.p_value = "top", None
    for entry in ranked[1:]:
        entry.vs_top, entry.p_value = "n/a", None
        top_run, run = _paired_runs(top, entry)
        top_arrays, arrays = eval_arrays(top_run), eval_arrays(run)
        if top_arrays is None or arrays is None:
            continue
        if not np.array_equal(top_arrays[0], arrays[0]):
            entry.vs_top = "n/a: different images"
            continue
        test = stats.mcnemar_exact(top_arrays[1] == top_arrays[0], arrays[1] == arrays[0])
        entry.p_value = test.p_value
        if test.p_value >= ALPHA:
            entry.vs_top = "tied"
        else:
            # b: only the top is right; c: only this one is. Ranked by the mean over seeds, an
            # entry can still beat the top on the one seed compared; say so rather than hide it.
            entry.vs_top = "worse" if test.b > test.c else "better"


def transfer_points(ranked: Sequence[Entry]) -> list[tuple[float, float, str]]:
    """(ImageNet top-1 %, ranking accuracy, label) of the backbones that have both."""
    points = []
    for entry in ranked:
        top1, accuracy = entry.first.imagenet_top1, entry.accuracy()
        if entry.kind == "backbone" and is_number(top1) and accuracy is not None:
            points.append((float(top1), accuracy, entry.label))
    return points


def seeds_text(runs: Sequence[RunResult]) -> str:
    """"seed 2", "seeds 2–6" or "seeds 2, 5": the seeds of these runs."""
    seeds = sorted({r.seed for r in runs}, key=seed_order)
    if len(seeds) == 1:
        return f"seed {MISSING if seeds[0] is None else seeds[0]}"
    if all(isinstance(s, int) for s in seeds) and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"seeds {seeds[0]}–{seeds[-1]}"
    return "seeds " + ", ".join(MISSING if s is None else str(s) for s in seeds)
