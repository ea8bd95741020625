"""The leaderboard as pandas tables: leaderboard() (one row per entry) and leaderboard.csv (one
line per run)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from bench.console import one_line
from bench.report.columns import CSV, CSV_COLUMNS, FRAME, LEADERBOARD_COLUMNS, MEAN, columns_of
from bench.report.model import Entry, n_eval, rank, run_interval, run_value
from bench.result import RunResult


def _as_ints(frame: pd.DataFrame, names: Sequence[str]) -> None:
    for name in names:
        try:
            frame[name] = frame[name].astype("Int64")
        except (TypeError, ValueError):  # an unexpected value (e.g. text): show it as it is
            pass


def entry_frame(ranked: Sequence[Entry]) -> pd.DataFrame:
    """One row per entry, numbers unformatted; means over seeds are floats."""
    frame = pd.DataFrame([e.numbers for e in ranked], columns=list(LEADERBOARD_COLUMNS))
    columns = columns_of(FRAME)
    _as_ints(frame, [c.name for c in columns if c.dtype == "Int64" and c.per_entry != MEAN])
    for column in columns:
        if column.dtype == "float64" or (column.numeric and column.per_entry == MEAN):
            frame[column.name] = pd.to_numeric(frame[column.name], errors="coerce")
            frame[column.name] = frame[column.name].astype("float64")
    return frame


def leaderboard(records: Sequence[dict]) -> pd.DataFrame:
    """One row per entry (ok runs over seeds), ranked within each protocol, lesson first.

    Columns as in LEADERBOARD_COLUMNS; accuracies are means over the seeds, unformatted.
    """
    ranked = rank(RunResult.from_dict(r) for r in records)
    return entry_frame([e for group in ranked.values() for e in group])


def _csv_line(run: RunResult, rank_of_entry: int | None) -> dict[str, Any]:
    line = {c.name: run_value(run, c.source) for c in columns_of(CSV) if c.source is not None}
    line["ci_low"], line["ci_high"] = run_interval(run)
    line.update(rank=rank_of_entry, n_eval=n_eval(run), error=one_line(run.error) or None)
    return line


def csv_frame(ranked: dict[str, list[Entry]], failed: Sequence[RunResult]) -> pd.DataFrame:
    """One line per run: the ok ones by entry rank and seed, then the failed ones; floats as
    the runs recorded them."""
    lines = [_csv_line(run, e.rank) for group in ranked.values() for e in group for run in e.runs]
    lines += [_csv_line(run, None) for run in failed]
    frame = pd.DataFrame(lines, columns=list(CSV_COLUMNS))
    _as_ints(frame, [c.name for c in columns_of(CSV) if c.dtype == "Int64"])
    return frame
