"""The leaderboard as data: runs -> one table per configuration, each of entries (one backbone's
runs over seeds) ranked best first, with a rank interval, a Holm-corrected paired test against
the top entry and a recommendation.

Renderers (markdown, tables, plots, effects) read these tables; none of them ranks or tests
anything.
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
from bench.config import CONFIGURATION_KNOBS
from bench.report.columns import FRAME, MEAN, columns_of
from bench.result import RunResult
from bench.runlog import group_key

LESSON = "lesson"  # early stopping watches the test file, which is also what is reported
HOLDOUT = "holdout"  # early stopping on a split of the training set; the test file once at the end

ALPHA = 0.05  # family-wise: Holm-adjusted p >= ALPHA vs the top is "not distinguishable"
CONFIDENCE = 0.95  # Wilson intervals and rank intervals
CORRECTION = "Holm"  # controls the family-wise error over a table's comparisons, any dependence
RESAMPLES = 1000  # bootstrap of the rank intervals; seeded, so a report rebuilds identically
MISSING = "—"  # how a missing value reads in the report's text

TOP = "top"
NOT_DISTINGUISHABLE = "not distinguishable"

# What tells two entries of one backbone apart within a table (whose configuration they share)
# besides their runner group: the weights (ImageNet, random, a file).
_ENTRY_KNOBS = ("weights",)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _sort_number(value: Any) -> float:
    """Descending sort key: missing or non-finite numbers sort last."""
    return -float(value) if is_number(value) else math.inf


def seed_order(seed: Any) -> tuple:
    return (not is_number(seed), seed if is_number(seed) else 0, str(seed))


def rank_field(protocol: str) -> str:
    """The accuracy entries are ranked by: the untouched test file under holdout."""
    return "test_accuracy"


def eval_arrays(run: RunResult) -> tuple[np.ndarray, np.ndarray] | None:
    """(labels, predictions) of the test images, or None when not stored (or unusable)."""
    return stats.label_arrays(run.labels, run.predictions)


def n_classes(run: RunResult, arrays: tuple[np.ndarray, np.ndarray]) -> int:
    declared = run.n_classes if is_number(run.n_classes) else 0
    return max(int(declared), len(run.class_names or []), int(max(a.max() for a in arrays)) + 1)


def metric(run: RunResult, name: str) -> float | None:
    """A number of the run, None when it has none."""
    value = getattr(run, name)
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
    """A field of the run as reported: computed from its predictions where it can be, the
    weights as a name."""
    if name == "weights":
        return weights_name(run)
    return getattr(run, name)


def n_eval(run: RunResult) -> int | None:
    """Images the ranking accuracy was measured on."""
    if arrays := eval_arrays(run):
        return len(arrays[0])
    # without stored labels: under lesson the test file is the validation set, n_test counts it
    if run.protocol != HOLDOUT and is_number(run.n_test) and run.n_test > 0:
        return int(run.n_test)
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
    """One leaderboard line: a backbone's ok runs in one configuration, lowest seed first."""

    runs: list[RunResult]
    label: str = ""  # backbone, plus the knobs that tell it from a same-named entry
    rank: int | None = None
    rank_low: int | None = None  # 95 % bootstrap rank interval, over test images and seeds
    rank_high: int | None = None
    # "top" | "not distinguishable" | "worse" | "better" | "n/a" | "n/a: different images"
    vs_top: str = "n/a"
    p_value: float | None = None  # sign test over images against the top, unadjusted
    p_adjusted: float | None = None  # Holm-adjusted over the table's comparisons
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


@dataclass
class Recommendation:
    """The answer on top of a table: its best entry, and the cheapest one not distinguishable
    from it (by inference ms per image, else total parameters); the best itself when none is."""

    best: Entry
    cheapest: Entry
    speedup: float | None  # best infer_ms / cheapest infer_ms
    param_ratio: float | None  # best params_total / cheapest params_total


@dataclass
class Table:
    """The entries of one configuration, ranked and tested among themselves only."""

    key: str  # the configuration as json with sorted keys
    configuration: dict
    title: str  # the configuration in words
    protocol: str
    entries: list[Entry]  # best first, each with .rank
    correction: str  # of the comparisons with the top: "Holm"
    recommendation: Recommendation | None


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


def _knob_text(name: str, value: Any) -> str:
    """One knob of a configuration in words."""
    if name == "protocol":
        return f"{value} protocol"
    if name == "image_size":
        return "each backbone's native size" if value == "native" else f"{value} px"
    if name in ("preprocess", "pooling"):
        return f"{value} {'preprocessing' if name == 'preprocess' else 'pooling'}"
    if name == "end_to_end":
        return "end-to-end" if value else "cached features"
    if name == "batch_size":
        return f"batch {value}"
    if name == "data_checksum":
        return f"data {str(value)[:8]}" if value else f"data {MISSING}"
    return f"{name.replace('_', ' ')} {value}"


_TITLE_ORDER = (*CONFIGURATION_KNOBS, "data", "data_checksum")
_TITLE_ONLY_WHEN_DIFFERENT = {"data", "data_checksum"}  # said once above the tables otherwise


def title(configuration: dict, differing: Iterable[str] = ()) -> str:
    """The configuration in words; the knobs in differing (which tell tables apart) in bold."""
    differing = set(differing)
    names = [k for k in _TITLE_ORDER if k in configuration]
    names += sorted(k for k in configuration if k not in _TITLE_ORDER)
    parts = []
    for name in names:
        value = configuration[name]
        if name == "val_fraction" and configuration.get("protocol") != HOLDOUT:
            continue
        if name in _TITLE_ONLY_WHEN_DIFFERENT and name not in differing:
            continue
        text = _knob_text(name, value)
        parts.append(f"**{text}**" if name in differing else text)
    return ", ".join(parts)


def _ranking_key(entry: Entry) -> tuple:
    return (
        _sort_number(entry.accuracy()),
        _sort_number(entry.mean("best_epoch_accuracy")),
        str(entry.first.backbone),
        entry.label,
    )


def _scores(entry: Entry, images: np.ndarray) -> dict[Any, np.ndarray]:
    """Per-image correctness by seed, of the entry's runs on exactly these images."""
    return {
        run.seed: arrays[1] == arrays[0]
        for run in entry.runs
        if (arrays := eval_arrays(run)) is not None and np.array_equal(arrays[0], images)
    }


def _reference_images(ranked: Sequence[Entry]) -> np.ndarray | None:
    """The evaluation labels of the best-ranked entry that stored them."""
    return next((arrays[0] for e in ranked for r in e.runs if (arrays := eval_arrays(r))), None)


def _compare_with_top(ranked: Sequence[Entry]) -> None:
    """Sets vs_top, p_value and p_adjusted: an exact sign test over the images against the top,
    on each image's correctness averaged over the seeds both entries have (else all of each),
    Holm-adjusted over the table."""
    top, tested = ranked[0], []
    top.vs_top = TOP
    images = _reference_images([top])
    mine = {} if images is None else _scores(top, images)
    for entry in ranked[1:]:
        if images is None or _reference_images([entry]) is None:
            continue  # "n/a": no stored predictions
        if not (theirs := _scores(entry, images)):
            entry.vs_top = "n/a: different images"
            continue
        seeds = (mine.keys() & theirs.keys()) or None
        test = stats.sign_test(
            np.mean([v for k, v in mine.items() if seeds is None or k in seeds], axis=0),
            np.mean([v for k, v in theirs.items() if seeds is None or k in seeds], axis=0),
        )
        entry.p_value = test.p_value
        tested.append((entry, test))
    for (entry, test), adjusted in zip(
        tested, stats.holm([e.p_value for e, _ in tested]), strict=True
    ):
        entry.p_adjusted = adjusted
        if adjusted >= ALPHA:
            entry.vs_top = NOT_DISTINGUISHABLE
        else:
            # ranked by the recorded accuracy, an entry can still beat the top image by image
            entry.vs_top = "worse" if test.a_better > test.b_better else "better"


def _rank_intervals(ranked: Sequence[Entry]) -> None:
    """Sets rank_low and rank_high of the entries with predictions on the table's images."""
    images = _reference_images(ranked)
    if images is None:
        return
    scores = [np.array(list(found.values())) if (found := _scores(e, images)) else None
              for e in ranked]
    fixed = [math.nan if (a := e.accuracy()) is None else a for e in ranked]
    intervals = stats.bootstrap_ranks(scores, fixed, RESAMPLES, seed=0, confidence=CONFIDENCE)
    for entry, interval in zip(ranked, intervals, strict=True):
        if interval is not None:
            entry.rank_low, entry.rank_high = interval


def recommend(ranked: Sequence[Entry]) -> Recommendation | None:
    """The best entry and the cheapest entry not distinguishable from it."""
    if not ranked or ranked[0].accuracy() is None:
        return None
    best = ranked[0]
    candidates = [best, *(e for e in ranked if e.vs_top == NOT_DISTINGUISHABLE)]
    cheapest = best
    for cost in ("infer_ms", "params_total"):
        if all(e.mean(cost) is not None for e in candidates):
            cheapest = min(candidates, key=lambda e, cost=cost: (e.mean(cost), e.rank))
            break
    ratios = [
        best_cost / cheap_cost if (best_cost := best.mean(c)) and (cheap_cost := cheapest.mean(c))
        else None
        for c in ("infer_ms", "params_total")
    ]
    return Recommendation(best, cheapest, *ratios)


def _entry_numbers(entry: Entry) -> dict[str, Any]:
    """The entry's leaderboard() row: columns read from its runs, then the ones computed here."""
    numbers = {
        c.name: entry.mean(c.source) if c.per_entry == MEAN else run_value(entry.first, c.source)
        for c in columns_of(FRAME)
        if c.source is not None
    }
    n = next((n for r in entry.runs if (n := n_eval(r))), None)
    ci_low, ci_high = wilson(entry.accuracy(), n)
    numbers.update(
        rank=entry.rank,
        rank_low=entry.rank_low,
        rank_high=entry.rank_high,
        k=len(entry.runs),
        val_acc_sd=entry.mean_sd("watched_accuracy")[1],
        test_acc_sd=entry.mean_sd("test_accuracy")[1],
        ci_low=ci_low,
        ci_high=ci_high,
        n_eval=n,
        vs_top=entry.vs_top,
        p_value=entry.p_value,
        p_adjusted=entry.p_adjusted,
    )
    return numbers


def _ranked_table(key: str, runs: list[RunResult], title_text: str) -> Table:
    ranked = sorted(entries(runs), key=_ranking_key)
    for position, entry in enumerate(ranked, start=1):
        entry.rank = position
    if ranked:
        _compare_with_top(ranked)
        _rank_intervals(ranked)
    for entry in ranked:
        entry.numbers = _entry_numbers(entry)
    configuration = json.loads(key)
    protocol = str(configuration.get("protocol") or runs[0].protocol)
    return Table(key, configuration, title_text, protocol, ranked, CORRECTION, recommend(ranked))


def _protocol_order(protocol: str) -> int:
    return {LESSON: 0, HOLDOUT: 1}.get(protocol, 2)


def tables(runs: Iterable[RunResult]) -> list[Table]:
    """One ranked, tested table per configuration; lesson tables first, then as they appear."""
    by_key: dict[str, list[RunResult]] = {}
    for run in runs:
        if run.ok:
            by_key.setdefault(json.dumps(run.configuration, sort_keys=True), []).append(run)
    configurations = [json.loads(k) for k in by_key]
    names = {name for c in configurations for name in c}
    differing = {n for n in names if len({json.dumps(c.get(n)) for c in configurations}) > 1}
    found = [
        _ranked_table(key, rows, title(json.loads(key), differing)) for key, rows in by_key.items()
    ]
    return sorted(found, key=lambda t: _protocol_order(t.protocol))


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
