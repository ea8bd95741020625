"""Entries ranked and compared within their table, every number from one resampling of the
table's test images and seeds (bench.resampling): each entry's interval and rank interval,
which entries could be the best, the cheapest entry within a margin of the best, and the
smallest difference the table can resolve.

An interval covers what a rerun would change: other test images of the same kind and other
seeds. Claims about several entries hold together (family-wise, alpha = 5 %), the choice of the
best included. "Not shown worse" is never said as "as good": an entry either could be best, or
is worse by at least a stated amount; the recommendation is a bound on how much worse.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench import resampling
from bench.report import stages
from bench.report.columns import FRAME, MEAN, columns_of
from bench.report.entries import (
    HOLDOUT,
    LESSON,
    Entry,
    by_configuration,
    entries,
    eval_arrays,
    is_number,
    n_eval,
    run_value,
)
from bench.result import RunResult

ALPHA = 0.05  # family-wise error of a table's claims; 1 - ALPHA the confidence of intervals
CONFIDENCE = 1 - ALPHA
POWER = 0.8  # of the resolvable difference
MARGIN = 0.02  # the recommendation's default margin: 2 accuracy points (--margin)
RESAMPLES = 4000  # replicates of a table; seeded, so a report rebuilds identically
SEED = 0

BEST, COULD_BE_BEST, WORSE, NOT_COMPARED = "best", "could be best", "worse", "n/a"
COSTS = ("infer_ms", "params_total")  # what "cheapest" means, in this order of preference


@dataclass
class Recommendation:
    """The answer on top of a table: the cheapest entry within `margin` of the best, bounded."""

    best: Entry  # the top of the table
    margin: float
    cost: str | None  # the column "cheapest" was decided by (COSTS), None when no entry has one
    chosen: Entry | None  # the cheapest entry whose bound U <= margin (the best itself, maybe)
    speedup: float | None  # best's infer_ms / chosen's
    param_ratio: float | None  # best's params_total / chosen's
    # when no cheaper entry qualifies: the cheapest one observed within the margin, and the
    # test images or seeds that would decide it
    nearest: Entry | None = None
    needed: resampling.Needed | None = None
    cheaper: int = 0  # tested entries cheaper than the best


@dataclass
class Table:
    """The entries of one configuration, ranked and compared among themselves only."""

    key: str  # the configuration as json with sorted keys
    configuration: dict
    differing: frozenset[str]  # the knobs that tell this table from the report's others
    protocol: str
    entries: list[Entry]  # best first, each with its rank and numbers
    tested: list[Entry]  # the entries resampled: stored predictions on the table's images
    resampled: resampling.Resampled | None
    margin: float
    resolvable: float | None  # smallest difference found with POWER (>= 2 entries tested)
    recommendation: Recommendation | None
    # fine-tuned entries against their frozen stage (None: no fine-tuned entry compared)
    against_frozen: stages.Stages | None = None

    @property
    def fine_tuned(self) -> bool:
        """A table of fine-tuned runs (--fine-tune): each continues a frozen run."""
        return any(stages.is_fine_tuned(e) for e in self.entries)

    @property
    def n_images(self) -> int | None:
        return self.resampled.n_images if self.resampled else None

    @property
    def seeds_estimated(self) -> bool:
        """Every tested entry has at least two seeds: seed variation is in the intervals."""
        return bool(self.resampled) and all(self.resampled.seed_variance_estimated)

    def index(self, entry: Entry) -> int:
        """The entry's column in `resampled`."""
        return next(i for i, e in enumerate(self.tested) if e is entry)

    def difference(self, a: Entry, b: Entry) -> resampling.Difference:
        """a's accuracy minus b's, from the table's replicates: interval and p agree."""
        return resampling.difference(self.resampled, self.index(a), self.index(b), CONFIDENCE)


def _sort_number(value: Any) -> float:
    """Descending sort key: missing or non-finite numbers sort last."""
    return -float(value) if is_number(value) else math.inf


def _ranking_key(entry: Entry) -> tuple:
    return (_sort_number(entry.mean("test_accuracy")),
            _sort_number(entry.mean("best_epoch_accuracy")), str(entry.first.backbone),
            entry.label)


def _reference_labels(ranked: Sequence[Entry]) -> np.ndarray | None:
    """The test labels of the best-ranked entry whose runs all stored predictions."""
    for entry in ranked:
        arrays = [a for r in entry.runs if (a := _labels(r)) is not None]
        if len(arrays) == len(entry.runs) and arrays:
            return arrays[0]
    return None


def _labels(run: RunResult) -> np.ndarray | None:
    arrays = eval_arrays(run)
    return None if arrays is None else arrays[0]


def _resample(ranked: list[Entry],
              reference: np.ndarray) -> tuple[list[Entry], resampling.Resampled]:
    tested, correct, seeds = [], [], []
    for entry in ranked:
        if (matrix := entry.correctness(reference)) is not None:
            tested.append(entry)
            correct.append(matrix)
            seeds.append(entry.seed_labels)
    return tested, resampling.resample(correct, seeds, RESAMPLES, SEED)


def _compare_stages(ranked: list[Entry], reference: np.ndarray) -> stages.Stages | None:
    """Each fine-tuned entry's gain over its frozen stage, and their rank agreement."""
    found = stages.compare(ranked, reference, RESAMPLES, SEED, CONFIDENCE)
    if found is not None:
        for entry, gain in zip(found.entries, found.gains, strict=True):
            entry.gain, entry.gain_low, entry.gain_high = gain.estimate, gain.low, gain.high
            entry.gain_p = gain.p_value
    return found


def _compare(tested: list[Entry], res: resampling.Resampled, margin: float) -> None:
    """Each tested entry's interval, rank interval, verdict and bounds."""
    bests = resampling.could_be_best(res, ALPHA) if len(tested) > 1 else None
    bounds = resampling.within_margin(res, margin, ALPHA) if len(tested) > 1 else None
    ranks = resampling.rank_intervals(res, CONFIDENCE) if len(tested) > 1 else None
    for i, entry in enumerate(tested):
        entry.accuracy = float(res.estimates[i])
        entry.ci_low, entry.ci_high = resampling.interval(res, i, CONFIDENCE)
        if bests is None:  # one entry compared: no other to rank it against
            entry.verdict, entry.behind_at_least, entry.behind_at_most = BEST, 0.0, 0.0
            continue
        entry.rank_low, entry.rank_high = ranks[i]
        entry.behind_at_least = bests[i].behind_at_least
        entry.behind_at_most = bounds[i].behind_at_most
        entry.verdict = (BEST if i == 0 else COULD_BE_BEST if bests[i].could_be_best
                         else WORSE)


def _cost(entries: Sequence[Entry]) -> str | None:
    return next((c for c in COSTS if all(e.mean(c) is not None for e in entries)), None)


def recommend(table: Table) -> Recommendation | None:
    """The cheapest entry whose simultaneous bound on its gap to the best is within the margin;
    when only the best itself is, the cheapest entry that more data could still qualify. None
    with fewer than two entries compared: nothing to choose between."""
    if len(table.tested) < 2:
        return None
    best, res, margin = table.tested[0], table.resampled, table.margin
    cost = _cost(table.tested)
    within = [e for e in table.tested if e.behind_at_most is not None
              and e.behind_at_most <= margin]
    chosen = min(within, key=lambda e: (e.mean(cost), e.rank)) if within and cost else (
        within[0] if within else None)
    ratios = [b / c if (b := best.mean(name)) and (c := chosen.mean(name)) else None
              for name in COSTS] if chosen is not None else [None, None]
    found = Recommendation(best, margin, cost, chosen, *ratios)
    if cost:
        found.cheaper = sum(1 for e in table.tested if e.mean(cost) < best.mean(cost))
    if cost and (chosen is None or chosen is best):
        cheaper = [e for e in table.tested[1:] if e.mean(cost) < best.mean(cost)
                   and e.accuracy is not None and best.accuracy - e.accuracy < margin]
        if cheaper:
            found.nearest = min(cheaper, key=lambda e: (e.mean(cost), e.rank))
            found.needed = resampling.needed(res, 0, table.index(found.nearest), margin, ALPHA)
    return found


def _entry_numbers(entry: Entry, table: Table) -> dict[str, Any]:
    """The entry's leaderboard() row: columns read from its runs, then the ones computed here."""
    numbers = {
        c.name: entry.mean(c.source) if c.per_entry == MEAN else run_value(entry.first, c.source)
        for c in columns_of(FRAME)
        if c.source is not None
    }
    numbers.update(
        rank=entry.rank, rank_low=entry.rank_low, rank_high=entry.rank_high,
        k=len(entry.runs),
        holdout_accuracy_sd=entry.mean_sd("holdout_accuracy")[1],
        test_accuracy_sd=entry.mean_sd("test_accuracy")[1],
        ci_low=entry.ci_low, ci_high=entry.ci_high,
        n_eval=next((n for r in entry.runs if (n := n_eval(r))), None),
        vs_best=entry.verdict, behind_at_least=entry.behind_at_least,
        behind_at_most=entry.behind_at_most, one_class=entry.one_class,
        gain=entry.gain, gain_low=entry.gain_low, gain_high=entry.gain_high, gain_p=entry.gain_p,
    )
    return numbers


def _table(key: str, runs: list[RunResult], differing: frozenset[str], margin: float) -> Table:
    ranked = sorted(entries(runs), key=_ranking_key)
    for position, entry in enumerate(ranked, start=1):
        entry.rank = position
    reference = _reference_labels(ranked)
    tested, res, found = [], None, None
    if reference is not None and len(reference) >= 2:
        tested, res = _resample(ranked, reference)
        _compare(tested, res, margin)
        found = _compare_stages(ranked, reference)
    configuration = json.loads(key)
    protocol = str(configuration.get("protocol") or runs[0].protocol)
    resolvable = (resampling.resolvable_difference(res, POWER, ALPHA)
                  if res is not None and len(tested) > 1 else None)
    table = Table(key, configuration, differing, protocol, ranked, tested, res, margin,
                  resolvable, None, found)
    table.recommendation = recommend(table)
    for entry in ranked:
        entry.numbers = _entry_numbers(entry, table)
    return table


def _protocol_order(protocol: str) -> int:
    return {LESSON: 0, HOLDOUT: 1}.get(protocol, 2)


def tables(runs: Iterable[RunResult], margin: float = MARGIN) -> list[Table]:
    """One ranked, compared table per configuration; lesson tables first, then as they appear."""
    grouped = by_configuration(runs)
    configurations = [json.loads(k) for k in grouped]
    names = {name for c in configurations for name in c}
    differing = frozenset(n for n in names
                          if len({json.dumps(c.get(n)) for c in configurations}) > 1)
    found = [_table(key, rows, differing, margin) for key, rows in grouped.items()]
    return sorted(found, key=lambda t: _protocol_order(t.protocol))


def transfer_points(ranked: Sequence[Entry]) -> list[tuple[float, float, str]]:
    """(ImageNet top-1 %, accuracy, label) of the pretrained backbones that have both: a
    random-weights control says nothing about how ImageNet accuracy transfers."""
    points = []
    for entry in ranked:
        top1, accuracy = entry.first.imagenet_top1, entry.mean("test_accuracy")
        if (entry.kind != "baseline" and not entry.random_weights and is_number(top1)
                and accuracy is not None):
            points.append((float(top1), accuracy, entry.label))
    return points
