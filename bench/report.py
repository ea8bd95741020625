"""Reads run records (runs.jsonl) and writes the leaderboard, its csv and plots.

Deliberately free of TensorFlow and Keras: rebuilding a report must be quick and must work on a
machine without them.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypedDict

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tabulate import tabulate

from bench.result import STATUS_OK

RUNS_FILE = "runs.jsonl"
MARKDOWN_FILE = "leaderboard.md"
CSV_FILE = "leaderboard.csv"
PLOTS_DIR = "plots"
SUMMARY_PLOT = "summary.png"

# What makes two records "the same run": a rerun of one of these replaces the earlier record.
PROTOCOL_KEYS: tuple[str, ...] = (
    "image_size",
    "preprocess",
    "pooling",
    "weights",
    "seed",
    "path",
    "epochs",
    "patience",
    "batch_size",
    "data",
)

# Leaderboard column -> record field.
_COLUMN_SOURCES: dict[str, str] = {
    "backbone": "backbone",
    "val_acc": "val_accuracy",
    "best_val_acc": "best_val_accuracy",
    "epochs": "epochs_run",
    "trainable_params": "params_trainable",
    "total_params": "params_total",
    "extract_s": "extract_s",
    "s_per_epoch": "epoch_s",
    "image_size": "image_size",
    "preprocess": "preprocess",
    "weights": "weights",
    "path": "path",
}
LEADERBOARD_COLUMNS: tuple[str, ...] = ("rank", *_COLUMN_SOURCES)
CSV_COLUMNS: tuple[str, ...] = (*LEADERBOARD_COLUMNS, "status", "error")

_INT_COLUMNS = ("rank", "epochs", "trainable_params", "total_params", "image_size")
_FLOAT_COLUMNS = ("val_acc", "best_val_acc", "extract_s", "s_per_epoch")
_TEXT_COLUMNS = ("backbone", "preprocess", "weights", "path")
# Markdown number formats per column; the csv keeps full precision.
_FLOAT_FORMATS = {"val_acc": ".3f", "best_val_acc": ".3f", "extract_s": ".1f", "s_per_epoch": ".2f"}
_INT_FORMATS = {"trainable_params": ",", "total_params": ","}
_MISSING = "—"

# Knobs reported once, above the table, when every row shares them.
_SUMMARY_KNOBS: tuple[tuple[str, str], ...] = (
    ("epochs", "epochs"),
    ("patience", "patience"),
    ("batch_size", "batch size"),
    ("seed", "seed"),
    ("pooling", "pooling"),
)

_SAFE_NAME_MAX = 120  # well under every file system's 255-byte limit, "history_" + ".png" included


class ReportError(ValueError):
    """runs.jsonl cannot be read as a sequence of records."""


class ReportPaths(TypedDict):
    """What write_report wrote."""

    markdown: Path
    csv: Path
    plots: list[Path]  # one history plot per ok row (in leaderboard order), then summary.png


# ---------------------------------------------------------------------------------------------
# runs.jsonl


def _json_safe(value: Any) -> Any:
    """Copies value into plain json types; NaN and infinities become None (json has neither)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def _repair_tail(path: Path) -> bool:
    """Makes sure an append starts on a fresh line; returns whether a newline must be prepended.

    A kill mid-write can leave a partial last line. Appending after it would glue two records
    into one invalid middle line, which read_records refuses, so a torn tail is dropped here
    (it holds no recoverable record). A complete record merely missing its newline is kept.
    """
    if not path.exists() or path.stat().st_size == 0:
        return False
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return False
    start = data.rfind(b"\n") + 1
    tail = data[start:]
    try:
        json.loads(tail)
    except ValueError:
        warnings.warn(
            f"{path}: dropping a torn last line ({len(tail)} bytes) before appending",
            stacklevel=3,
        )
        with path.open("r+b") as f:
            f.truncate(start)
            f.flush()
            os.fsync(f.fileno())
        return False
    return True


def append_record(out_dir: Path, record: dict) -> Path:
    """Appends one record as one json line to out_dir/runs.jsonl, durably; returns the file."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / RUNS_FILE
    # allow_nan=False: _json_safe already turned NaN into null; anything left is a bug.
    line = json.dumps(_json_safe(record), sort_keys=True, allow_nan=False) + "\n"
    if _repair_tail(path):
        line = "\n" + line
    data = line.encode("utf-8")
    # One write on an O_APPEND descriptor: a kill leaves at worst one torn last line, and the
    # fsync means a finished record survives a crash of the machine.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
        while written < len(data):  # short writes are rare on regular files, but legal
            written += os.write(fd, data[written:])
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def read_records(out_dir: Path) -> list[dict]:
    """Reads out_dir/runs.jsonl; a torn last line is skipped with a warning, [] if missing."""
    path = Path(out_dir) / RUNS_FILE
    if not path.exists():
        return []
    # split on "\n" only: str.splitlines would also split inside strings on e.g. U+2028.
    lines = [
        (number, text)
        for number, text in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1)
        if text.strip()
    ]
    records: list[dict] = []
    for position, (number, text) in enumerate(lines):
        try:
            record = json.loads(text)
            if not isinstance(record, dict):
                raise ValueError(f"expected a json object, found {type(record).__name__}")
        except ValueError as exc:
            if position == len(lines) - 1:
                # A run killed mid-append leaves exactly this; the record is lost, not the file.
                warnings.warn(
                    f"{path}:{number}: skipping a torn or invalid last line ({exc})", stacklevel=2
                )
                continue
            raise ReportError(f"{path}:{number}: invalid record: {exc}") from exc
        records.append(record)
    return records


def _run_key(record: dict) -> str:
    # json text as the key: hashable whatever the field types are.
    return json.dumps([record.get("backbone"), *(record.get(k) for k in PROTOCOL_KEYS)])


def latest_records(records: list[dict]) -> list[dict]:
    """Keeps the last record of each run (backbone + protocol), in file order."""
    last: dict[str, int] = {}
    for index, record in enumerate(records):
        last[_run_key(record)] = index
    return [records[i] for i in sorted(last.values())]


# ---------------------------------------------------------------------------------------------
# The table


def _is_ok(record: dict) -> bool:
    return record.get("status") == STATUS_OK


def _sort_number(value: Any) -> float:
    """Descending sort key: missing or non-finite numbers sort last."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return -float(value)
    return math.inf


def _ranked(records: Iterable[dict]) -> list[dict]:
    """The ok records, best first: val_accuracy, then best_val_accuracy, then name."""
    return sorted(
        (r for r in records if _is_ok(r)),
        key=lambda r: (
            _sort_number(r.get("val_accuracy")),
            _sort_number(r.get("best_val_accuracy")),
            str(r.get("backbone")),
        ),
    )


def _table(rows: Sequence[dict], ranks: Sequence[int | None]) -> pd.DataFrame:
    """Leaderboard columns for the given records, with pandas' nullable integers."""
    frame = pd.DataFrame(
        {
            "rank": list(ranks),
            **{col: [r.get(src) for r in rows] for col, src in _COLUMN_SOURCES.items()},
        },
        columns=list(LEADERBOARD_COLUMNS),
    )
    for col in _INT_COLUMNS:
        try:
            frame[col] = frame[col].astype("Int64")
        except (TypeError, ValueError):  # an unexpected value (e.g. text): show it as it is
            pass
    for col in _FLOAT_COLUMNS:
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    return frame


def leaderboard(records: list[dict]) -> pd.DataFrame:
    """The ok rows, ranked 1..n; columns as in LEADERBOARD_COLUMNS."""
    ranked = _ranked(records)
    return _table(ranked, range(1, len(ranked) + 1))


def _csv_frame(records: list[dict]) -> pd.DataFrame:
    """The leaderboard with full precision, then the error rows, plus status and error."""
    ranked = _ranked(records)
    failed = [r for r in records if not _is_ok(r)]
    rows = [*ranked, *failed]
    frame = _table(rows, [*range(1, len(ranked) + 1), *([None] * len(failed))])
    frame["status"] = [r.get("status") for r in rows]
    frame["error"] = [_one_line(r.get("error")) or None for r in rows]
    return frame[list(CSV_COLUMNS)]


def _markdown_table(frame: pd.DataFrame) -> str:
    """The pipe table with readable number formats."""
    columns = list(frame.columns)
    # object dtype with None: tabulate then prints _MISSING instead of "nan" / "<NA>".
    shown = frame.astype(object).where(frame.notna(), None)
    return tabulate(
        shown,
        headers="keys",
        tablefmt="pipe",
        showindex=False,
        floatfmt=[_FLOAT_FORMATS.get(c, "g") for c in columns],
        intfmt=[_INT_FORMATS.get(c, "") for c in columns],
        missingval=_MISSING,
        # names and paths stay text even when they look like numbers
        disable_numparse=[i for i, c in enumerate(columns) if c in _TEXT_COLUMNS],
    )


# ---------------------------------------------------------------------------------------------
# Markdown


def _one_line(text: Any) -> str:
    return " ".join(str(text).split()) if text is not None else ""


def _common_value(records: Sequence[dict], key: str) -> str:
    """The value every record shares, or the distinct values marked as mixed."""
    values = list(dict.fromkeys(r.get(key) for r in records))
    if len(values) == 1:
        return _MISSING if values[0] is None else str(values[0])
    return "mixed (" + ", ".join(_MISSING if v is None else str(v) for v in values) + ")"


def _protocol_line(records: Sequence[dict]) -> str:
    """One line saying what was run: the data and the protocol knobs."""
    data = f"Data: `{_common_value(records, 'data')}`"
    sizes = [_common_value(records, k) for k in ("n_train", "n_val", "n_classes")]
    if _MISSING not in sizes and not any(s.startswith("mixed") for s in sizes):
        data += f" ({sizes[0]} train / {sizes[1]} val images, {sizes[2]} classes)"
    knobs = ", ".join(f"{label} {_common_value(records, key)}" for key, label in _SUMMARY_KNOBS)
    line = f"{data}. Protocol: {knobs}."
    versions = [
        f"{label} {_common_value(records, key)}"
        for key, label in (("keras_version", "Keras"), ("tf_version", "TensorFlow"))
        if any(r.get(key) for r in records)
    ]
    if versions:
        line += " " + ", ".join(versions) + "."
    return line


def _markdown(
    records: Sequence[dict],
    frame: pd.DataFrame,
    labels: Sequence[str],
    history_files: Sequence[Path],
    summary: Path | None,
    out_dir: Path,
) -> str:
    lines = ["# Leaderboard", ""]
    if not records:
        lines.append(f"No runs yet: `{RUNS_FILE}` has no records.")
        return "\n".join(lines) + "\n"
    # the knobs of the table's rows; failed runs may have stopped before recording them all
    ok = [r for r in records if _is_ok(r)]
    lines += [_protocol_line(ok or records), ""]
    if len(frame):
        lines += [_markdown_table(frame), ""]
    else:
        lines += ["No successful runs.", ""]
    failed = [r for r in records if not _is_ok(r)]
    if failed:
        lines += ["## Failed", ""]
        lines += [f"- **{r.get('backbone')}**: {_one_line(r.get('error'))}" for r in failed]
        lines.append("")
    notes = [(r.get("backbone"), note) for r in records for note in (r.get("notes") or [])]
    if notes:
        lines += ["## Notes", ""]
        lines += [f"- **{name}**: {_one_line(note)}" for name, note in notes]
        lines.append("")
    if summary is not None or history_files:
        lines += ["## Plots", ""]
        if summary is not None:
            rel = summary.relative_to(out_dir).as_posix()
            lines += [f"Validation accuracy against model size: [{rel}]({rel})", "", f"![]({rel})"]
            lines.append("")
        if history_files:
            links = ", ".join(
                f"[{label}]({path.relative_to(out_dir).as_posix()})"
                for label, path in zip(labels, history_files, strict=True)
            )
            lines += [f"Training curves per backbone (in `{PLOTS_DIR}/`): {links}", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Plots


def safe_name(name: str) -> str:
    """A file-name-safe version of name: [A-Za-z0-9._-] only, no leading dot, never empty."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", str(name)).lstrip(".")[:_SAFE_NAME_MAX]
    return cleaned or "_"


def _labels(rows: Sequence[dict]) -> list[str]:
    """Backbone names, with the protocol knobs that differ appended where a name repeats."""
    counts = Counter(r.get("backbone") for r in rows)
    labels = []
    for row in rows:
        name = str(row.get("backbone"))
        if counts[row.get("backbone")] > 1:
            same = [r for r in rows if r.get("backbone") == row.get("backbone")]
            differing = [k for k in PROTOCOL_KEYS if len({json.dumps(r.get(k)) for r in same}) > 1]
            if differing:
                name += " (" + ", ".join(f"{k}={row.get(k)}" for k in differing) + ")"
        labels.append(name)
    return labels


def _unique_files(folder: Path, labels: Sequence[str]) -> list[Path]:
    """plots/history_<safe label>.png, numbered when two labels map to one name."""
    seen: set[str] = set()
    files = []
    for label in labels:
        stem = f"history_{safe_name(label)}"
        candidate, n = stem, 1
        while candidate.lower() in seen:  # lower(): case-insensitive file systems
            n += 1
            candidate = f"{stem}_{n}"
        seen.add(candidate.lower())
        files.append(folder / f"{candidate}.png")
    return files


def _save(fig: Figure, path: Path) -> None:
    # A Figure with its own Agg canvas: no pyplot, no global figure registry, nothing to close.
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png")
    fig.clear()


def _plot_history(record: dict, title: str, path: Path) -> None:
    """The lesson's plot_history: accuracy and loss per epoch, train and validation."""
    history = record.get("history") or {}
    fig = Figure(figsize=(10, 4), dpi=100)
    axes = fig.subplots(1, 2)
    # fixed margins: a layout engine doubles the drawing time, and dozens of these are drawn
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.88, wspace=0.22)
    best = record.get("best_epoch")
    for ax, metrics, ylabel in (
        (axes[0], ("accuracy", "val_accuracy"), "accuracy"),
        (axes[1], ("loss", "val_loss"), "loss"),
    ):
        plotted = False
        for metric in metrics:
            values = [np.nan if v is None else v for v in history.get(metric) or []]
            if values:
                epochs = range(1, len(values) + 1)  # Keras counts epochs from 1 in its logs
                ax.plot(epochs, values, marker="o", markersize=3, label=metric)
                plotted = True
        if plotted:
            if isinstance(best, int) and best >= 1:
                ax.axvline(best, color="grey", linestyle=":", linewidth=1, label=f"best ({best})")
            ax.legend()
            ax.xaxis.get_major_locator().set_params(integer=True)
        else:
            ax.text(
                0.5, 0.5, "no history recorded", ha="center", va="center", transform=ax.transAxes
            )
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    _save(fig, path)


def _place_labels(fig: Figure, ax: Any, points: Sequence[tuple[float, float, str]]) -> None:
    """Labels each point, choosing per label the first offset that overlaps nothing placed yet."""
    canvas = FigureCanvasAgg(fig)
    renderer = canvas.get_renderer()
    offsets = [
        (5, 3),
        (5, -9),
        (-5, 3),
        (-5, -9),
        (0, 8),
        (0, -14),
        (10, 12),
        (10, -18),
        (-10, 12),
        (-10, -18),
        (18, 0),
        (-18, 0),
    ]
    axes_box = ax.get_window_extent(renderer)
    marker_boxes = []
    for x, y, _ in points:
        px, py = ax.transData.transform((x, y))
        marker_boxes.append((px - 3, py - 3, px + 3, py + 3))
    placed: list[tuple[float, float, float, float]] = []

    def overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
        w = min(a[2], b[2]) - max(a[0], b[0])
        h = min(a[3], b[3]) - max(a[1], b[1])
        return w * h if w > 0 and h > 0 else 0.0

    # Best first: they sit at the top, where labels crowd most and matter most.
    for index in sorted(range(len(points)), key=lambda i: -points[i][1]):
        x, y, text = points[index]
        best_cost, best_box, best_offset = math.inf, None, offsets[0]
        annotation = None
        for dx, dy in offsets:
            if annotation is not None:
                annotation.remove()
            annotation = ax.annotate(
                text,
                (x, y),
                xytext=(dx, dy),
                textcoords="offset points",
                fontsize=7,
                ha="left" if dx > 0 else "right" if dx < 0 else "center",
            )
            b = annotation.get_window_extent(renderer)
            box = (b.x0, b.y0, b.x1, b.y1)
            cost = sum(overlap(box, o) for o in placed)
            cost += sum(overlap(box, m) for j, m in enumerate(marker_boxes) if j != index)
            # leaving the axes costs more than overlapping: a clipped label is unreadable
            outside = (b.x1 - b.x0) * (b.y1 - b.y0) - overlap(
                box, (axes_box.x0, axes_box.y0, axes_box.x1, axes_box.y1)
            )
            cost += 4 * outside
            if cost < best_cost:
                best_cost, best_box, best_offset = cost, box, (dx, dy)
            if cost == 0:
                break
        if annotation is not None:
            annotation.remove()
        dx, dy = best_offset
        ax.annotate(
            text,
            (x, y),
            xytext=(dx, dy),
            textcoords="offset points",
            fontsize=7,
            ha="left" if dx > 0 else "right" if dx < 0 else "center",
        )
        if best_box is not None:
            placed.append(best_box)


def _plot_summary(rows: Sequence[dict], labels: Sequence[str], path: Path) -> bool:
    """Validation accuracy against total parameters; False (nothing written) if nothing to plot."""
    points = []
    families = []
    for row, label in zip(rows, labels, strict=True):
        acc, params = row.get("val_accuracy"), row.get("params_total")
        if _sort_number(acc) == math.inf or _sort_number(params) == math.inf or params <= 0:
            continue  # a log axis cannot show a missing or zero size
        points.append((float(params), float(acc), label))
        families.append(row.get("family") or "other")
    if not points:
        return False
    fig = Figure(figsize=(11, 7), dpi=100)
    ax = fig.subplots()
    family_names = list(dict.fromkeys(families))
    with_legend = 1 < len(family_names) <= 20
    # fixed margins rather than a layout engine: label placement measures pixel positions,
    # which must not move afterwards
    fig.subplots_adjust(left=0.08, right=0.84 if with_legend else 0.97, bottom=0.09, top=0.94)
    # colour by family: related architectures are easy to compare at a glance
    palette = (
        [f"C{i}" for i in range(10)]
        if len(family_names) <= 10
        else [matplotlib.colormaps["tab20"](i % 20) for i in range(len(family_names))]
    )
    colours = palette[: len(family_names)]
    for family, colour in zip(family_names, colours, strict=True):
        xs = [p[0] for p, f in zip(points, families, strict=True) if f == family]
        ys = [p[1] for p, f in zip(points, families, strict=True) if f == family]
        ax.scatter(xs, ys, s=20, color=colour, label=family, zorder=3)
    ax.set_xscale("log")
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    # margins so labels at the edges stay inside the axes
    ax.set_xlim(min(xs) / 1.6, max(xs) * 2.2)
    span = max(max(ys) - min(ys), 0.02)
    ax.set_ylim(min(ys) - 0.08 * span, max(ys) + 0.12 * span)
    ax.set_xlabel("total parameters (log scale)")
    ax.set_ylabel("validation accuracy (last epoch)")
    ax.set_title("Validation accuracy against model size")
    ax.grid(alpha=0.3, which="both")
    if with_legend:
        ax.legend(
            title="family",
            fontsize=7,
            title_fontsize=8,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
        )
    _place_labels(fig, ax, [(x, y, text) for x, y, text in points])
    _save(fig, path)
    return True


# ---------------------------------------------------------------------------------------------
# Everything


def write_report(out_dir: Path, records: list[dict] | None = None) -> ReportPaths:
    """Writes leaderboard.md, leaderboard.csv and plots/ into out_dir; returns their paths.

    records None reads out_dir/runs.jsonl. Only the last record of each run counts.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if records is None:
        records = read_records(out_dir)
    records = latest_records(list(records))

    ranked = _ranked(records)
    frame = leaderboard(records)
    labels = _labels(ranked)

    plots_dir = out_dir / PLOTS_DIR
    history_files = _unique_files(plots_dir, labels)
    plots: list[Path] = []
    summary: Path | None = None
    if ranked:
        plots_dir.mkdir(exist_ok=True)
        for row, label, file in zip(ranked, labels, history_files, strict=True):
            _plot_history(row, label, file)
            plots.append(file)
        if _plot_summary(ranked, labels, plots_dir / SUMMARY_PLOT):
            summary = plots_dir / SUMMARY_PLOT
            plots.append(summary)
    # Plots of an earlier report (a run since replaced or removed) would otherwise pass for
    # part of this one; only the names this module writes are touched.
    if summary is None:
        (plots_dir / SUMMARY_PLOT).unlink(missing_ok=True)
    if plots_dir.is_dir():
        for stale in set(plots_dir.glob("history_*.png")) - set(plots):
            stale.unlink()

    markdown = out_dir / MARKDOWN_FILE
    markdown.write_text(
        _markdown(records, frame, labels, history_files, summary, out_dir), encoding="utf-8"
    )
    csv = out_dir / CSV_FILE
    _csv_frame(records).to_csv(csv, index=False)
    return {"markdown": markdown, "csv": csv, "plots": plots}
