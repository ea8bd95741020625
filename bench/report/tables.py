"""The leaderboard as pandas tables: leaderboard() (one row per entry) and leaderboard.csv (one
line per run), both in table order (one table per configuration) and rank order within each."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bench.console import one_line
from bench.report import words
from bench.report.columns import (
    CSV,
    CSV_COLUMNS,
    ENTRY,
    FRAME,
    LEADERBOARD_COLUMNS,
    MEAN,
    columns_of,
)
from bench.report.entries import Entry, n_eval, run_value
from bench.report.ranking import MARGIN, Table, tables
from bench.result import RunResult
from bench.runlog import upgrade_log

if TYPE_CHECKING:  # pandas is imported when a table is made
    import pandas as pd

TABLE = "table"  # the column that names an entry's table (its configuration in words)


def table_name(table: Table) -> str:
    """The table's title as plain text (the markdown sets the knobs that differ in bold)."""
    return words.title(table)


def _as_ints(frame: pd.DataFrame, names: Sequence[str]) -> None:
    for name in names:
        try:
            frame[name] = frame[name].astype("Int64")
        except (TypeError, ValueError):  # an unexpected value (e.g. text): show it as it is
            pass


def _entry_row(table: Table, entry: Entry) -> dict[str, Any]:
    return {**entry.numbers, TABLE: table_name(table)}


def entry_frame(found: Sequence[Table]) -> pd.DataFrame:
    """One row per entry, numbers unformatted; means over seeds are floats."""
    rows = [_entry_row(t, e) for t in found for e in t.entries]
    import pandas as pd

    frame = pd.DataFrame(rows, columns=list(LEADERBOARD_COLUMNS))
    columns = columns_of(FRAME)
    _as_ints(frame, [c.name for c in columns if c.dtype == "Int64" and c.per_entry != MEAN])
    for column in columns:
        if column.dtype == "float64" or (column.numeric and column.per_entry == MEAN):
            frame[column.name] = pd.to_numeric(frame[column.name], errors="coerce")
            frame[column.name] = frame[column.name].astype("float64")
    return frame


def leaderboard(records: Sequence[dict], margin: float = MARGIN) -> pd.DataFrame:
    """One row per entry (ok runs over seeds), one ranked table per configuration after another,
    lesson tables first.

    Columns as in LEADERBOARD_COLUMNS; accuracies are means over the seeds, unformatted.
    """
    return entry_frame(tables((RunResult.from_dict(r) for r in upgrade_log(records)), margin))


def _csv_line(run: RunResult, table: Table | None, entry: Entry | None) -> dict[str, Any]:
    line = {c.name: run_value(run, c.source) for c in columns_of(CSV) if c.source is not None}
    if table is not None and entry is not None:  # rank, rank interval, tests: the entry's
        row = _entry_row(table, entry)
        line.update({c.name: row.get(c.name) for c in columns_of(CSV) if c.per_entry == ENTRY})
    line.update(n_eval=n_eval(run), error=one_line(run.error) or None)
    return line


def csv_frame(found: Sequence[Table], failed: Sequence[RunResult]) -> pd.DataFrame:
    """One line per run: the ok ones by table, entry rank and seed, then the failed ones; floats
    as the runs recorded them."""
    lines = [_csv_line(run, t, e) for t in found for e in t.entries for run in e.runs]
    lines += [_csv_line(run, None, None) for run in failed]
    import pandas as pd

    frame = pd.DataFrame(lines, columns=list(CSV_COLUMNS))
    _as_ints(frame, [c.name for c in columns_of(CSV) if c.dtype == "Int64"])
    return frame
