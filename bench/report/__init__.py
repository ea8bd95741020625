"""Reads run records (runs.jsonl) and writes the leaderboard, its csv and plots.

Deliberately free of TensorFlow and Keras: rebuilding a report must be quick and must work on a
machine without them.

Rows of one configuration (every knob but the seed) make one table; rows that differ only in
their seed are one entry (mean ± sd over K seeds). Every accuracy gets a Wilson 95 % interval and
a bootstrap rank interval, and every entry is compared with its table's top one by an exact sign
test over the same images, Holm-corrected (bench.stats), so readers can tell real gaps from noise.

Layers: columns (the one column table) -> model (runs -> tables of ranked, tested entries) ->
effects (pretraining, protocol) -> tables, markdown, plots (renderers) -> write_report here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

from bench.report import model
from bench.report.columns import CSV_COLUMNS, LEADERBOARD_COLUMNS
from bench.report.markdown import MARKDOWN_COLUMNS, leaderboard_markdown
from bench.report.plots import PLOTS_DIR, write_plots
from bench.report.tables import csv_frame, leaderboard
from bench.result import RunResult
from bench.runlog import latest_records, read_records

MARKDOWN_FILE = "leaderboard.md"
CSV_FILE = "leaderboard.csv"

__all__ = [
    "CSV_COLUMNS",
    "CSV_FILE",
    "LEADERBOARD_COLUMNS",
    "MARKDOWN_COLUMNS",
    "MARKDOWN_FILE",
    "PLOTS_DIR",
    "ReportPaths",
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


def write_report(out_dir: Path, records: list[dict] | None = None) -> ReportPaths:
    """Writes leaderboard.md, leaderboard.csv and plots/ into out_dir; returns their paths.

    records None reads out_dir/runs.jsonl. Only the last record of each run counts.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = read_records(out_dir) if records is None else records
    runs = latest_records([RunResult.from_dict(row) for row in rows])
    # model.tables, not a name imported here: the package's `tables` is its tables.py module
    found = model.tables(runs)
    plots = write_plots(out_dir, found)
    markdown_file = out_dir / MARKDOWN_FILE
    markdown_file.write_text(leaderboard_markdown(runs, found, plots, out_dir), encoding="utf-8")
    csv_file = out_dir / CSV_FILE
    csv_frame(found, [r for r in runs if not r.ok]).to_csv(csv_file, index=False)
    return {
        "markdown": markdown_file,
        "csv": csv_file,
        "plots": plots.files,
        "confusion": [p for _, p in plots.confusion],
        "transfer": plots.transfer,
        "cost": plots.cost,
    }
