"""Reads run records (runs.jsonl) and writes the leaderboard, its csv and plots.

Deliberately free of TensorFlow and Keras: rebuilding a report must be quick and must work on a
machine without them.

Rows of one configuration (every knob but the seed) make one table; rows that differ only in
their seed are one entry. Every interval, comparison, rank interval and recommendation comes
from one resampling of the table's test images and seeds (bench.resampling), so a reader can
tell real gaps from noise and no interval contradicts a verdict.

Layers: columns (the one column table) -> entries (runs -> entries) -> stages (a fine-tuned
entry against its frozen stage) -> ranking (ranked, compared tables) -> effects (pretraining,
the test file's epoch choice, probes) -> words -> tables, markdown, plots (renderers) ->
write_report here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypedDict

from bench.fsio import atomic_path, remove_stale_temporaries, write_text_atomic
from bench.report import ranking
from bench.report.columns import CSV_COLUMNS, LEADERBOARD_COLUMNS
from bench.report.markdown import MARKDOWN_COLUMNS, leaderboard_markdown
from bench.report.plots import write_plots
from bench.report.ranking import MARGIN
from bench.report.tables import csv_frame, leaderboard
from bench.result import RunResult
from bench.resultsdir import CSV_FILE, MARKDOWN_FILE, PLOTS_DIR, STATE_FILE
from bench.runlog import RUNS_FILE, latest_records, log_state, read_log, upgrade_log

__all__ = [
    "CSV_COLUMNS",
    "CSV_FILE",
    "LEADERBOARD_COLUMNS",
    "MARKDOWN_COLUMNS",
    "MARKDOWN_FILE",
    "PLOTS_DIR",
    "STATE_FILE",
    "ReportPaths",
    "is_current",
    "leaderboard",
    "write_report",
]


class ReportPaths(TypedDict):
    """What write_report wrote."""

    markdown: Path
    csv: Path
    # every png: history per entry (leaderboard order), confusion per entry, transfer, cost,
    # summary
    plots: list[Path]
    confusion: list[Path]  # one per entry with stored predictions, in leaderboard order
    transfer: Path | None  # accuracy against ImageNet top-1, when >= 3 backbones have it
    cost: Path | None  # accuracy against inference ms per image, when entries measured it


def write_report(out_dir: Path, records: list[dict] | None = None,
                 margin: float = MARGIN) -> ReportPaths:
    """Writes leaderboard.md, leaderboard.csv and plots/ into out_dir; returns their paths.

    records None reads out_dir/runs.jsonl. Only the last record of each run counts. Each file
    replaces the old one whole (a kill leaves the old or the new, never half), and the state
    marker is written last, so a report cut short reads as stale. Call it holding the folder's
    writer lock (bench.fsio.writer_lock).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / STATE_FILE).unlink(missing_ok=True)
    rows, state = read_log(out_dir) if records is None else (upgrade_log(records), None)
    for folder in (out_dir, out_dir / PLOTS_DIR):
        remove_stale_temporaries(folder)
    runs = latest_records([RunResult.from_dict(row) for row in rows])
    # ranking.tables, not a name imported here: the package's `tables` is its tables.py module
    found = ranking.tables(runs, margin)
    plots = write_plots(out_dir, found)
    markdown_file = write_text_atomic(out_dir / MARKDOWN_FILE,
                                      leaderboard_markdown(runs, found, plots, out_dir))
    csv_file = out_dir / CSV_FILE
    with atomic_path(csv_file) as tmp:
        csv_frame(found, [r for r in runs if not r.ok]).to_csv(tmp, index=False)
    if state is not None:  # records given by the caller: not a report of runs.jsonl
        write_text_atomic(out_dir / STATE_FILE, json.dumps({"runs_jsonl": state}) + "\n")
    return {
        "markdown": markdown_file,
        "csv": csv_file,
        "plots": plots.files,
        "confusion": [p for _, p in plots.confusion],
        "transfer": plots.transfer,
        "cost": plots.cost,
    }


def is_current(out_dir: Path) -> bool:
    """Whether out_dir's report was built, to its end, from runs.jsonl as it is now."""
    out_dir = Path(out_dir)
    try:
        saved = json.loads((out_dir / STATE_FILE).read_text(encoding="utf-8"))["runs_jsonl"]
        runs = (out_dir / RUNS_FILE).read_bytes()
    except (OSError, ValueError, KeyError, TypeError):  # no marker, a damaged one, no runs
        return False
    return saved == log_state(runs) and (out_dir / MARKDOWN_FILE).is_file()
