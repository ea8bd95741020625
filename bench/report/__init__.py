"""Reads run records (runs.jsonl) and writes the leaderboard, its csv and plots.

Deliberately free of TensorFlow and Keras: rebuilding a report must be quick and must work on a
machine without them.

Rows that differ only in their seed are one leaderboard entry (mean ± sd over K seeds). Every
accuracy gets a Wilson 95 % interval, and every entry is compared with the top one by an exact
McNemar test on the same images (bench.stats), so readers can tell real gaps from noise.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tabulate import tabulate

from bench import stats
from bench.result import STATUS_OK
from bench.runlog import (
    PROTOCOL_KEYS,
    RUNS_FILE,
    latest_records,
    read_records,
    safe_name,
)
from bench.runlog import field_or_default as _field

MARKDOWN_FILE = "leaderboard.md"
CSV_FILE = "leaderboard.csv"
PLOTS_DIR = "plots"
SUMMARY_PLOT = "summary.png"
TRANSFER_PLOT = "transfer.png"

LESSON = "lesson"  # early stopping watches the test file, which is also what is reported
HOLDOUT = "holdout"  # early stopping on a split of the training set; the test file once at the end

# Records that agree on these (and on the backbone) but not on the seed are one multi-seed entry;
# the `group` field, when the runner wrote it, says the same thing more precisely.
GROUP_KEYS: tuple[str, ...] = tuple(k for k in PROTOCOL_KEYS if k != "seed")

ALPHA = 0.05  # McNemar: p >= ALPHA vs the top entry is "tied" (not significantly worse)
CONFIDENCE = 0.95  # Wilson intervals

# What every table ends with: per-class summaries, cost and how the run was made.
_DESCRIPTIVE_COLUMNS = (
    "balanced_acc",
    "macro_f1",
    "best_val_acc",
    "epochs",
    "trainable_params",
    "total_params",
    "extract_s",
    "s_per_epoch",
    "image_size",
    "preprocess",
    "weights",
    "path",
)

# leaderboard(): one row per entry (a backbone's runs over seeds), numbers unformatted.
LEADERBOARD_COLUMNS: tuple[str, ...] = (
    "rank",  # within its protocol
    "backbone",
    "kind",  # "backbone" | "baseline"
    "protocol",
    "k",  # seeds averaged
    "val_acc",  # mean over seeds; under holdout the holdout split of the training set
    "val_acc_sd",
    "test_acc",  # mean over seeds; holdout only
    "test_acc_sd",
    "ci_low",  # Wilson interval of the ranking accuracy (val under lesson, test under holdout)
    "ci_high",
    "n_eval",  # images the accuracy, the interval and the McNemar test are computed on
    "vs_top",  # "top" | "tied" | "worse" | "better" | "n/a" | "n/a: different images"
    "p_value",  # exact McNemar vs the top entry
    *_DESCRIPTIVE_COLUMNS,
)

# leaderboard.md: one table per protocol; holdout ranks by, and so leads with, test accuracy.
_COMMON_TAIL = (*_DESCRIPTIVE_COLUMNS, "protocol")
MARKDOWN_COLUMNS: dict[str, tuple[str, ...]] = {
    LESSON: ("rank", "backbone", "kind", "val_acc", "K", "95% CI", "vs top", *_COMMON_TAIL),
    HOLDOUT: (
        "rank",
        "backbone",
        "kind",
        "test_acc",
        "K",
        "95% CI",
        "vs top",
        "val_acc",
        *_COMMON_TAIL,
    ),
}
_NUMERIC_MARKDOWN = {
    "rank",
    "val_acc",
    "test_acc",
    "K",
    "balanced_acc",
    "macro_f1",
    "best_val_acc",
    "epochs",
    "trainable_params",
    "total_params",
    "extract_s",
    "s_per_epoch",
    "image_size",
}

# leaderboard.csv: one line per run (every seed), full precision; lists (predictions...) left out.
CSV_COLUMNS: tuple[str, ...] = (
    "rank",  # of the run's entry
    "backbone",
    "kind",
    "protocol",
    "seed",
    "val_acc",
    "test_acc",
    "ci_low",  # Wilson interval of this run's ranking accuracy
    "ci_high",
    "n_eval",
    "balanced_acc",
    "macro_f1",
    "best_val_acc",
    "epochs",
    "trainable_params",
    "total_params",
    "extract_s",
    "s_per_epoch",
    "image_size",
    "preprocess",
    "weights",
    "path",
    "eval_split",
    "imagenet_top1",
    "group",
    "config_hash",
    "python_version",
    "keras_version",
    "tf_version",
    "numpy_version",
    "device",
    "weights_sha256",
    "data_checksum",
    "git_commit",
    "started_at",
    "status",
    "error",
)
# csv column -> record field, where the names differ
_CSV_SOURCES = {
    "val_acc": "val_accuracy",
    "test_acc": "test_accuracy",
    "best_val_acc": "best_val_accuracy",
    "balanced_acc": "balanced_accuracy",
    "epochs": "epochs_run",
    "trainable_params": "params_trainable",
    "total_params": "params_total",
    "s_per_epoch": "epoch_s",
}
_CSV_INTS = ("rank", "seed", "n_eval", "epochs", "trainable_params", "total_params", "image_size")

_MISSING = "—"

# Knobs reported once, above the tables, when every row shares them.
_SUMMARY_KNOBS: tuple[tuple[str, str], ...] = (
    ("epochs", "epochs"),
    ("patience", "patience"),
    ("batch_size", "batch size"),
    ("seed", "seed"),
    ("pooling", "pooling"),
)
# Provenance said once, when every row agrees.
_PROVENANCE: tuple[tuple[str, str], ...] = (
    ("python_version", "Python"),
    ("keras_version", "Keras"),
    ("tf_version", "TensorFlow"),
    ("numpy_version", "numpy"),
    ("device", "device"),
    ("git_commit", "git commit"),
)

_PROTOCOL_TEXT = {
    LESSON: (
        "As in the episode: early stopping watches the test file, and `val_acc` is measured on "
        "that same file at the last epoch run, which flatters every number a little."
    ),
    HOLDOUT: (
        "Early stopping watches a stratified, seeded holdout split of the training set (`val_acc`)"
        " and restores the best epoch's weights; `test_acc` is the test file, evaluated once at "
        "the end. Ranked by `test_acc`."
    ),
}



class ReportPaths(TypedDict):
    """What write_report wrote."""

    markdown: Path
    csv: Path
    # every png: history per entry (leaderboard order), confusion per entry, transfer, summary
    plots: list[Path]
    confusion: list[Path]  # one per entry with stored predictions, in leaderboard order
    transfer: Path | None  # accuracy against ImageNet top-1, when >= 3 backbones have it


# ---------------------------------------------------------------------------------------------
# Entries: one backbone's runs over seeds


def _is_ok(record: dict) -> bool:
    return record.get("status") == STATUS_OK


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _sort_number(value: Any) -> float:
    """Descending sort key: missing or non-finite numbers sort last."""
    return -float(value) if _is_number(value) else math.inf


def _seed_order(record: dict) -> tuple:
    seed = record.get("seed")
    return (not _is_number(seed), seed if _is_number(seed) else 0, str(seed))


def _group_key(record: dict) -> str:
    if record.get("group"):
        return json.dumps(["group", record.get("backbone"), record.get("group")])
    return json.dumps(["knobs", record.get("backbone"), *(_field(record, k) for k in GROUP_KEYS)])


def _rank_field(protocol: str) -> str:
    """The accuracy entries are ranked by: the untouched test file under holdout."""
    return "test_accuracy" if protocol == HOLDOUT else "val_accuracy"


def _eval_arrays(record: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """(labels, predictions) of the evaluation images, or None when not stored (or unusable)."""
    labels, predictions = record.get("labels") or [], record.get("predictions") or []
    if not labels or len(labels) != len(predictions):
        return None
    try:
        y, p = np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)
    except (TypeError, ValueError):
        return None
    if y.ndim != 1 or y.min() < 0 or p.min() < 0:
        return None
    return y, p


def _n_classes(record: dict, arrays: tuple[np.ndarray, np.ndarray]) -> int:
    declared = record.get("n_classes") if _is_number(record.get("n_classes")) else 0
    return max(
        int(declared), len(record.get("class_names") or []), int(max(a.max() for a in arrays)) + 1
    )


def _metric(record: dict, key: str) -> float | None:
    """A number of the record; balanced accuracy and macro-F1 computed when only predictions are."""
    value = record.get(key)
    if _is_number(value):
        return float(value)
    if key in ("balanced_accuracy", "macro_f1") and (arrays := _eval_arrays(record)):
        function = stats.balanced_accuracy if key == "balanced_accuracy" else stats.macro_f1
        result = function(*arrays, _n_classes(record, arrays))
        return result if math.isfinite(result) else None
    return None


def _n_eval(record: dict) -> int | None:
    """Images the ranking accuracy was measured on."""
    if arrays := _eval_arrays(record):
        return len(arrays[0])
    # without stored labels: under lesson the test file is the validation set, n_val counts it
    n_val = record.get("n_val")
    if _field(record, "protocol") != HOLDOUT and _is_number(n_val) and n_val > 0:
        return int(n_val)
    return None


def _wilson(accuracy: float | None, n: int | None) -> tuple[float | None, float | None]:
    if accuracy is None or not n or not 0 <= accuracy <= 1:
        return None, None
    return stats.wilson_interval(round(accuracy * n), n, CONFIDENCE)


@dataclass
class _Entry:
    """One leaderboard line: the ok runs of one configuration, lowest seed first."""

    rows: list[dict]
    label: str = ""  # backbone, plus the knobs that tell it from a same-named entry
    rank: int | None = None
    vs_top: str = "n/a"
    p_value: float | None = None
    numbers: dict[str, Any] = field(default_factory=dict)

    @property
    def first(self) -> dict:
        return self.rows[0]

    @property
    def protocol(self) -> str:
        return str(_field(self.first, "protocol"))

    @property
    def kind(self) -> str:
        return str(_field(self.first, "kind"))

    def mean(self, key: str) -> float | None:
        values = [v for r in self.rows if (v := _metric(r, key)) is not None]
        return stats.mean_sd(values)[0] if values else None

    def mean_sd(self, key: str) -> tuple[float | None, float | None]:
        values = [v for r in self.rows if (v := _metric(r, key)) is not None]
        return stats.mean_sd(values) if values else (None, None)

    def accuracy(self) -> float | None:
        return self.mean(_rank_field(self.protocol))


def _entries(records: Iterable[dict]) -> list[_Entry]:
    """The ok records grouped over seeds, in order of first appearance."""
    grouped: dict[str, list[dict]] = {}
    for record in records:
        if _is_ok(record):
            grouped.setdefault(_group_key(record), []).append(record)
    entries = [_Entry(sorted(rows, key=_seed_order)) for rows in grouped.values()]
    labels = _labels([e.first for e in entries], GROUP_KEYS)
    # same backbone and knobs, different runner group (e.g. the data changed): say which
    counts = Counter(labels)
    for entry, label in zip(entries, labels, strict=True):
        group = entry.first.get("group")
        entry.label = f"{label} [{str(group)[:8]}]" if counts[label] > 1 and group else label
    return entries


def _protocol_order(protocol: str) -> tuple[int, str]:
    return ({LESSON: 0, HOLDOUT: 1}.get(protocol, 2), protocol)


def _ranked_by_protocol(entries: Iterable[_Entry]) -> dict[str, list[_Entry]]:
    """Entries per protocol (lesson first), best first, ranked 1..n, compared with the top."""
    by_protocol: dict[str, list[_Entry]] = {}
    for entry in entries:
        by_protocol.setdefault(entry.protocol, []).append(entry)
    ranked: dict[str, list[_Entry]] = {}
    for protocol in sorted(by_protocol, key=_protocol_order):
        group = sorted(
            by_protocol[protocol],
            key=lambda e: (
                _sort_number(e.accuracy()),
                _sort_number(e.mean("best_val_accuracy")),
                str(e.first.get("backbone")),
                e.label,
            ),
        )
        for rank, entry in enumerate(group, start=1):
            entry.rank = rank
            entry.numbers = _entry_numbers(entry)
        _compare_with_top(group)
        ranked[protocol] = group
    return ranked


def _entry_numbers(entry: _Entry) -> dict[str, Any]:
    val, val_sd = entry.mean_sd("val_accuracy")
    test, test_sd = entry.mean_sd("test_accuracy")
    accuracy = entry.accuracy()
    n_eval = next((n for r in entry.rows if (n := _n_eval(r))), None)
    ci_low, ci_high = _wilson(accuracy, n_eval)
    first = entry.first
    return {
        "rank": entry.rank,
        "backbone": first.get("backbone"),
        "kind": entry.kind,
        "protocol": entry.protocol,
        "k": len(entry.rows),
        "val_acc": val,
        "val_acc_sd": val_sd,
        "test_acc": test,
        "test_acc_sd": test_sd,
        "ci_low": ci_low,
        "ci_high": ci_high,
        "n_eval": n_eval,
        "balanced_acc": entry.mean("balanced_accuracy"),
        "macro_f1": entry.mean("macro_f1"),
        "best_val_acc": entry.mean("best_val_accuracy"),
        "epochs": entry.mean("epochs_run"),
        # the same for every seed: the lowest seed's
        "trainable_params": first.get("params_trainable"),
        "total_params": first.get("params_total"),
        "extract_s": entry.mean("extract_s"),
        "s_per_epoch": entry.mean("epoch_s"),
        "image_size": first.get("image_size"),
        "preprocess": first.get("preprocess"),
        "weights": first.get("weights"),
        "path": first.get("path"),
    }


def _paired_rows(top: _Entry, other: _Entry) -> tuple[dict, dict]:
    """The runs to compare: the lowest seed both have, else each one's lowest seed."""
    shared = {r.get("seed") for r in top.rows} & {r.get("seed") for r in other.rows}
    for row in top.rows:  # lowest seed first
        if row.get("seed") in shared:
            return row, next(r for r in other.rows if r.get("seed") == row.get("seed"))
    return top.first, other.first


def _compare_with_top(ranked: Sequence[_Entry]) -> None:
    """Sets vs_top and p_value: exact McNemar of each entry against the first, same images."""
    if not ranked:
        return
    top = ranked[0]
    top.vs_top, top.p_value = "top", None
    for entry in ranked[1:]:
        entry.vs_top, entry.p_value = "n/a", None
        top_row, row = _paired_rows(top, entry)
        top_arrays, arrays = _eval_arrays(top_row), _eval_arrays(row)
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


# ---------------------------------------------------------------------------------------------
# The tables


def _entry_frame(entries: Sequence[_Entry]) -> pd.DataFrame:
    frame = pd.DataFrame(
        [{**e.numbers, "vs_top": e.vs_top, "p_value": e.p_value} for e in entries],
        columns=list(LEADERBOARD_COLUMNS),
    )
    for col in ("rank", "k", "n_eval", "trainable_params", "total_params", "image_size"):
        try:
            frame[col] = frame[col].astype("Int64")
        except (TypeError, ValueError):  # an unexpected value (e.g. text): show it as it is
            pass
    for col in (
        "val_acc",
        "val_acc_sd",
        "test_acc",
        "test_acc_sd",
        "ci_low",
        "ci_high",
        "p_value",
        "balanced_acc",
        "macro_f1",
        "best_val_acc",
        "epochs",
        "extract_s",
        "s_per_epoch",
    ):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    return frame


def leaderboard(records: list[dict]) -> pd.DataFrame:
    """One row per entry (ok runs over seeds), ranked within each protocol, lesson first.

    Columns as in LEADERBOARD_COLUMNS; accuracies are means over the seeds, unformatted.
    """
    ranked = _ranked_by_protocol(_entries(records))
    return _entry_frame([e for entries in ranked.values() for e in entries])


def _csv_frame(ranked: dict[str, list[_Entry]], failed: Sequence[dict]) -> pd.DataFrame:
    """One line per run: the ok ones by entry rank and seed, then the failed ones."""
    lines = []
    for entries in ranked.values():
        for entry in entries:
            for row in entry.rows:
                lines.append((entry.rank, row))
    lines += [(None, row) for row in failed]
    table = []
    for rank, row in lines:
        line: dict[str, Any] = {}
        for col in CSV_COLUMNS:
            source = _CSV_SOURCES.get(col, col)
            value = _metric(row, source) if source in ("balanced_accuracy", "macro_f1") else None
            line[col] = value if value is not None else _field(row, source)
        ranking = _metric(row, _rank_field(str(_field(row, "protocol"))))
        n_eval = _n_eval(row)
        line.update(rank=rank, n_eval=n_eval, error=_one_line(row.get("error")) or None)
        line["ci_low"], line["ci_high"] = _wilson(ranking, n_eval)
        table.append(line)
    frame = pd.DataFrame(table, columns=list(CSV_COLUMNS))
    for col in _CSV_INTS:
        try:
            frame[col] = frame[col].astype("Int64")
        except (TypeError, ValueError):
            pass
    return frame


def _format(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return _MISSING
    if _is_number(value) and spec:
        return format(value, spec)
    return str(value)


def _mean_sd_text(mean: float | None, sd: float | None, rows: Sequence[dict], key: str) -> str:
    if mean is None:
        return _MISSING
    measured = sum(1 for r in rows if _metric(r, key) is not None)
    return f"{mean:.3f} ± {sd:.3f}" if measured > 1 else f"{mean:.3f}"


def _p_text(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3g}"


def _vs_top_text(entry: _Entry) -> str:
    if entry.p_value is None:
        return entry.vs_top
    return f"{entry.vs_top} ({_p_text(entry.p_value)})"


def _epochs_text(entry: _Entry) -> str:
    mean = entry.numbers["epochs"]
    if mean is None:
        return _MISSING
    return f"{mean:.1f}" if len(entry.rows) > 1 or mean != int(mean) else f"{int(mean)}"


def _markdown_cells(entry: _Entry, columns: Sequence[str]) -> list[str]:
    n = entry.numbers
    rows = entry.rows
    cells = {
        "rank": _format(n["rank"], "d"),
        "backbone": str(n["backbone"]),
        "kind": entry.kind,
        "val_acc": _mean_sd_text(n["val_acc"], n["val_acc_sd"], rows, "val_accuracy"),
        "test_acc": _mean_sd_text(n["test_acc"], n["test_acc_sd"], rows, "test_accuracy"),
        "K": str(n["k"]),
        "95% CI": (
            f"[{n['ci_low']:.3f}, {n['ci_high']:.3f}]" if n["ci_low"] is not None else _MISSING
        ),
        "vs top": _vs_top_text(entry),
        "balanced_acc": _format(n["balanced_acc"], ".3f"),
        "macro_f1": _format(n["macro_f1"], ".3f"),
        "best_val_acc": _format(n["best_val_acc"], ".3f"),
        "epochs": _epochs_text(entry),
        "trainable_params": _format(n["trainable_params"], ","),
        "total_params": _format(n["total_params"], ","),
        "extract_s": _format(n["extract_s"], ".1f"),
        "s_per_epoch": _format(n["s_per_epoch"], ".2f"),
        "image_size": _format(n["image_size"], "d" if isinstance(n["image_size"], int) else ""),
        "preprocess": _format(n["preprocess"], ""),
        "weights": _format(n["weights"], ""),
        "path": _format(n["path"], ""),
        "protocol": entry.protocol,
    }
    return [cells[c] for c in columns]


def markdown_columns(protocol: str) -> tuple[str, ...]:
    """The leaderboard.md columns of one protocol's table."""
    return MARKDOWN_COLUMNS.get(protocol, MARKDOWN_COLUMNS[LESSON])


def _markdown_table(entries: Sequence[_Entry], protocol: str) -> str:
    """The pipe table, every number formatted here (tabulate only aligns)."""
    columns = markdown_columns(protocol)
    return tabulate(
        [_markdown_cells(e, columns) for e in entries],
        headers=list(columns),
        tablefmt="pipe",
        disable_numparse=True,
        colalign=["right" if c in _NUMERIC_MARKDOWN else "left" for c in columns],
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
    if len(values) > 4:
        return f"mixed ({len(values)} values)"
    return "mixed (" + ", ".join(_MISSING if v is None else str(v) for v in values) + ")"


def _seeds_text(records: Sequence[dict]) -> str:
    seeds = sorted({r.get("seed") for r in records}, key=lambda s: _seed_order({"seed": s}))
    if len(seeds) == 1:
        return f"seed {_MISSING if seeds[0] is None else seeds[0]}"
    if all(isinstance(s, int) for s in seeds) and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"seeds {seeds[0]}–{seeds[-1]}"
    return "seeds " + ", ".join(_MISSING if s is None else str(s) for s in seeds)


def _protocol_line(records: Sequence[dict]) -> str:
    """One line saying what was run: the data and the protocol knobs."""
    data = f"Data: `{_common_value(records, 'data')}`"
    sizes = [_common_value(records, k) for k in ("n_train", "n_val", "n_classes")]
    if _MISSING not in sizes and not any(s.startswith("mixed") for s in sizes):
        data += f" ({sizes[0]} train / {sizes[1]} val images, {sizes[2]} classes)"
    knobs = ", ".join(
        _seeds_text(records) if key == "seed" else f"{label} {_common_value(records, key)}"
        for key, label in _SUMMARY_KNOBS
    )
    return f"{data}. Protocol: {knobs}."


def _provenance_line(records: Sequence[dict]) -> str | None:
    """Versions, device and commit, said once when every run agrees (else "mixed")."""
    parts = []
    for key, label in _PROVENANCE:
        values = {r.get(key) for r in records}
        if values == {None}:
            continue
        (value,) = values if len(values) == 1 else ("mixed",)
        parts.append(f"{label} {value}")
    checksums = {r.get("data_checksum") for r in records} - {None}
    if checksums:
        parts.append(
            f"data sha256 {next(iter(checksums))[:12]}…" if len(checksums) == 1 else "data mixed"
        )
    return "Provenance: " + ", ".join(parts) + "." if parts else None


def _method_line(entries: Sequence[_Entry], protocol: str) -> str:
    """How to read the interval and tie columns, with this table's own numbers."""
    accuracy = "test_acc" if protocol == HOLDOUT else "val_acc"
    line = (
        f"How to read it: `{accuracy}` is the mean ± sd over K seeds. `95% CI` is the Wilson 95 % "
        f"interval of that accuracy on the n evaluation images. `vs top` is an exact McNemar test "
        f"against the top backbone on the same images and the same seed (a two-sided binomial "
        f"test on the images exactly one of the two got right); α = {ALPHA}: `tied` = not "
        f"significantly worse than the top."
    )
    sizes = sorted({n for e in entries if (n := e.numbers["n_eval"])})
    top = entries[0].numbers if entries else {}
    if sizes and top.get("ci_low") is not None:
        n = str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}–{sizes[-1]}"
        half = (top["ci_high"] - top["ci_low"]) / 2 * 100
        line += (
            f" With n = {n} images the interval is about ±{half:.1f} points, so a gap of that "
            f"size between two backbones can be a tie."
        )
    return line


def _transfer_points(entries: Sequence[_Entry]) -> list[tuple[float, float, str]]:
    """(ImageNet top-1 %, ranking accuracy, label) of the backbones that have both."""
    points = []
    for entry in entries:
        top1, accuracy = entry.first.get("imagenet_top1"), entry.accuracy()
        if entry.kind == "backbone" and _is_number(top1) and accuracy is not None:
            points.append((float(top1), accuracy, entry.label))
    return points


def _transfer_lines(
    entries: Sequence[_Entry], protocol: str, plot: Path | None, out_dir: Path
) -> list[str]:
    """Spearman's rho between accuracy and ImageNet top-1, or why it is left out."""
    accuracy = "test_acc" if protocol == HOLDOUT else "val_acc"
    points = _transfer_points(entries)
    lines = ["### Transfer analysis", ""]
    if len(points) < 3:
        lines.append(
            f"Omitted: a rank correlation needs at least 3 backbones with an ImageNet top-1 in "
            f"the registry; this table has {len(points)}."
        )
        return lines
    result = stats.spearman([p[0] for p in points], [p[1] for p in points])
    if result.rho is None:
        text = f"Spearman's rho is undefined here (n = {result.n}: one of the two is constant)."
    else:
        text = (
            f"Spearman rank correlation between `{accuracy}` and ImageNet top-1 across the "
            f"swept backbones: rho = {result.rho:.2f}, p = {result.p_value:.3g}, "
            f"n = {result.n}. A rho near 1 means the better ImageNet models also transfer "
            f"better to this data set; with few backbones only a large rho is significant."
        )
    lines.append(text)
    if plot is not None:
        rel = plot.relative_to(out_dir).as_posix()
        lines += ["", f"![accuracy against ImageNet top-1]({rel})"]
    return lines


def _per_class_lines(entries: Sequence[_Entry]) -> list[str]:
    """Recall per class, mean over seeds, for the entries that stored it."""
    shown = [e for e in entries if any(r.get("per_class_accuracy") for r in e.rows)]
    if not shown:
        return []
    width = max(len(r.get("per_class_accuracy") or []) for e in shown for r in e.rows)
    names = next(
        (list(r["class_names"]) for e in shown for r in e.rows if r.get("class_names")), []
    )
    names = [*names[:width], *(f"class {i}" for i in range(len(names), width))]
    table = []
    for entry in shown:
        per_run = [
            [v if _is_number(v) else np.nan for v in r["per_class_accuracy"]]
            + [np.nan] * (width - len(r["per_class_accuracy"]))
            for r in entry.rows
            if r.get("per_class_accuracy")
        ]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a class no run saw: NaN, shown as —
            means = np.nanmean(np.array(per_run, dtype=np.float64), axis=0)
        table.append([entry.label, *(_format(float(m), ".3f") for m in means)])
    text = tabulate(
        table,
        headers=["backbone", *names],
        tablefmt="pipe",
        disable_numparse=True,
        colalign=["left", *(["right"] * width)],
    )
    return ["### Per-class accuracy", "", "Recall of each class (mean over seeds).", "", text]


def _markdown(
    records: Sequence[dict],
    ranked: dict[str, list[_Entry]],
    history: Sequence[tuple[str, Path]],
    confusion: Sequence[tuple[str, Path]],
    transfer: Path | None,
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
    if provenance := _provenance_line(ok or records):
        lines += [provenance, ""]
    if not ranked:
        lines += ["No successful runs.", ""]
    for protocol, entries in ranked.items():
        lines += [f"## Protocol: {protocol}", ""]
        if protocol in _PROTOCOL_TEXT:
            lines += [_PROTOCOL_TEXT[protocol], ""]
        lines += [_markdown_table(entries, protocol), ""]
        lines += [_method_line(entries, protocol), ""]
        lines += [*_transfer_lines(entries, protocol, transfer, out_dir), ""]
        if per_class := _per_class_lines(entries):
            lines += [*per_class, ""]
    failed = [r for r in records if not _is_ok(r)]
    if failed:
        seeds_per_backbone = Counter(r.get("backbone") for r in records)
        lines += ["## Failed", ""]
        for r in failed:
            seed = f" (seed {r.get('seed')})" if seeds_per_backbone[r.get("backbone")] > 1 else ""
            lines.append(f"- **{r.get('backbone')}**{seed}: {_one_line(r.get('error'))}")
        lines.append("")
    # one line per distinct note: K seeds of one backbone repeat the same warnings
    notes = dict.fromkeys(
        (r.get("backbone"), _one_line(note)) for r in records for note in (r.get("notes") or [])
    )
    if notes:
        lines += ["## Notes", ""]
        lines += [f"- **{name}**: {note}" for name, note in notes]
        lines.append("")
    if summary is not None or history or confusion:
        lines += ["## Plots", ""]
        if summary is not None:
            rel = summary.relative_to(out_dir).as_posix()
            lines += [f"Accuracy against model size: [{rel}]({rel})", "", f"![]({rel})", ""]
        for title, pairs in (
            ("Confusion matrices per backbone (lowest seed)", confusion),
            ("Training curves per backbone (every seed)", history),
        ):
            if pairs:
                links = ", ".join(
                    f"[{label}]({path.relative_to(out_dir).as_posix()})" for label, path in pairs
                )
                lines += [f"{title} (in `{PLOTS_DIR}/`): {links}", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Plots


def _labels(rows: Sequence[dict], keys: Sequence[str] = PROTOCOL_KEYS) -> list[str]:
    """Backbone names, with the knobs (of keys) that differ appended where a name repeats."""
    counts = Counter(r.get("backbone") for r in rows)
    labels = []
    for row in rows:
        name = str(row.get("backbone"))
        if counts[row.get("backbone")] > 1:
            same = [r for r in rows if r.get("backbone") == row.get("backbone")]
            differing = [k for k in keys if len({json.dumps(_field(r, k)) for r in same}) > 1]
            if differing:
                name += " (" + ", ".join(f"{k}={_field(row, k)}" for k in differing) + ")"
        labels.append(name)
    return labels


def _unique_files(folder: Path, labels: Sequence[str], prefix: str = "history") -> list[Path]:
    """plots/<prefix>_<safe label>.png, numbered when two labels map to one name."""
    seen: set[str] = set()
    files = []
    for label in labels:
        stem = f"{prefix}_{safe_name(label)}"
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


def _plot_history(rows: Sequence[dict], title: str, path: Path) -> None:
    """The lesson's plot_history: accuracy and loss per epoch, train and validation.

    Several rows (one entry's seeds) share the axes, one faint line per seed and metric, so the
    spread between seeds shows at a glance.
    """
    fig = Figure(figsize=(10, 4), dpi=100)
    axes = fig.subplots(1, 2)
    # fixed margins: a layout engine doubles the drawing time, and dozens of these are drawn
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.88, wspace=0.22)
    single = len(rows) == 1
    best = rows[0].get("best_epoch") if single else None
    for ax, metrics, ylabel in (
        (axes[0], ("accuracy", "val_accuracy"), "accuracy"),
        (axes[1], ("loss", "val_loss"), "loss"),
    ):
        plotted = False
        for colour, metric in enumerate(metrics):
            labelled = False
            for row in rows:
                history = row.get("history") or {}
                values = [np.nan if v is None else v for v in history.get(metric) or []]
                if not values:
                    continue
                epochs = range(1, len(values) + 1)  # Keras counts epochs from 1 in its logs
                ax.plot(
                    epochs,
                    values,
                    color=f"C{colour}",
                    marker="o" if single else None,
                    markersize=3,
                    alpha=1.0 if single else 0.55,
                    label=None if labelled else metric,
                )
                labelled = plotted = True
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
    if not single:
        title += f" ({_seeds_text(rows)}, one line each)"
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


def _palette(n: int) -> list[Any]:
    if n <= 10:
        return [f"C{i}" for i in range(n)]
    return [matplotlib.colormaps["tab20"](i % 20) for i in range(n)]


def _accuracy_label(protocols: Sequence[str]) -> str:
    if set(protocols) == {HOLDOUT}:
        return "test accuracy (mean over seeds)"
    if HOLDOUT not in protocols:
        return "validation accuracy, last epoch (mean over seeds)"
    return "accuracy (lesson: val, holdout: test; mean over seeds)"


def _plot_summary(entries: Sequence[_Entry], path: Path) -> bool:
    """Mean accuracy against total parameters; False (nothing written) if nothing to plot."""
    points, families, errors = [], [], []
    for entry in entries:
        accuracy, params = entry.accuracy(), entry.first.get("params_total")
        if accuracy is None or not _is_number(params) or params <= 0:
            continue  # a log axis cannot show a missing or zero size
        points.append((float(params), accuracy, entry.label))
        families.append(entry.first.get("family") or entry.kind)
        sd = entry.mean_sd(_rank_field(entry.protocol))[1]
        errors.append(sd or 0.0)
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
    colours = _palette(len(family_names))
    for family, colour in zip(family_names, colours, strict=True):
        mine = [i for i, f in enumerate(families) if f == family]
        xs = [points[i][0] for i in mine]
        ys = [points[i][1] for i in mine]
        ax.scatter(xs, ys, s=20, color=colour, label=family, zorder=3)
        if any(errors[i] for i in mine):  # sd over seeds
            ax.errorbar(
                xs,
                ys,
                yerr=[errors[i] for i in mine],
                fmt="none",
                ecolor=colour,
                elinewidth=1,
                capsize=2,
                alpha=0.7,
                zorder=2,
            )
    ax.set_xscale("log")
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    # margins so labels at the edges stay inside the axes
    ax.set_xlim(min(xs) / 1.6, max(xs) * 2.2)
    span = max(max(ys) - min(ys), 0.02)
    ax.set_ylim(min(ys) - 0.08 * span - max(errors), max(ys) + 0.12 * span + max(errors))
    ax.set_xlabel("total parameters (log scale)")
    ax.set_ylabel(_accuracy_label([e.protocol for e in entries]))
    title = "Accuracy against model size"
    if any(errors):
        title += " (bars: ± sd over seeds)"
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    if with_legend:
        ax.legend(
            title="family",
            fontsize=7,
            title_fontsize=8,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
        )
    _place_labels(fig, ax, points)
    _save(fig, path)
    return True


def _plot_confusion(entry: _Entry, path: Path) -> bool:
    """Confusion matrix of the entry's lowest seed that stored predictions; False if none did."""
    row = next((r for r in entry.rows if _eval_arrays(r) is not None), None)
    if row is None:
        return False
    labels, predictions = _eval_arrays(row)  # type: ignore[misc]
    n = _n_classes(row, (labels, predictions))
    matrix = stats.confusion_matrix(labels, predictions, n)
    names = list(row.get("class_names") or [])
    names = [str(s) for s in names[:n]] + [str(i) for i in range(len(names), n)]
    side = min(3.5 + 0.45 * n, 20)
    # constrained layout from the start: a colorbar added first would not take part in it
    fig = Figure(figsize=(side + 1.2, side), dpi=100, layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues", vmin=0)
    colorbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="images")
    colorbar.ax.yaxis.get_major_locator().set_params(integer=True)  # counts: no 2.5 images
    ax.set_xticks(range(n), labels=names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), labels=names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    threshold = matrix.max() / 2 if matrix.size else 0
    font = max(5, 11 - n // 4)
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                str(matrix[i, j]),
                ha="center",
                va="center",
                fontsize=font,
                color="white" if matrix[i, j] > threshold else "black",
            )
    accuracy = float(np.mean(labels == predictions))
    split = row.get("eval_split") or "evaluation set"
    ax.set_title(
        f"{entry.label}\naccuracy {accuracy:.3f} on {len(labels)} images ({split}), "
        f"seed {row.get('seed')}",
        fontsize=10,
    )
    _save(fig, path)
    return True


def _plot_transfer(ranked: dict[str, list[_Entry]], path: Path) -> bool:
    """Accuracy against ImageNet top-1, one panel per protocol with >= 3 backbones."""
    panels = [
        (p, pts) for p, entries in ranked.items() if len(pts := _transfer_points(entries)) >= 3
    ]
    if not panels:
        return False
    fig = Figure(figsize=(8 * len(panels), 6.5), dpi=100)
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    fig.subplots_adjust(left=0.09 / len(panels), right=0.98, bottom=0.1, top=0.88, wspace=0.2)
    for ax, (protocol, points) in zip(axes, panels, strict=True):
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        ax.scatter(xs, ys, s=25, color="C0", zorder=3)
        x_span = max(max(xs) - min(xs), 1.0)
        y_span = max(max(ys) - min(ys), 0.02)
        ax.set_xlim(min(xs) - 0.12 * x_span, max(xs) + 0.25 * x_span)
        ax.set_ylim(min(ys) - 0.1 * y_span, max(ys) + 0.15 * y_span)
        ax.set_xlabel("ImageNet top-1 accuracy (%, registry)")
        accuracy = "test" if protocol == HOLDOUT else "validation"
        ax.set_ylabel(f"{accuracy} accuracy on this data set (mean over seeds)")
        result = stats.spearman(xs, ys)
        rho = (
            f"Spearman rho = {result.rho:.2f}, p = {result.p_value:.3g}, n = {result.n}"
            if result.rho is not None
            else f"Spearman rho undefined, n = {result.n}"
        )
        ax.set_title(f"Protocol {protocol}: {rho}", fontsize=10)
        ax.grid(alpha=0.3)
        _place_labels(fig, ax, points)
    fig.suptitle("Does ImageNet accuracy predict transfer accuracy?")
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

    ranked = _ranked_by_protocol(_entries(records))
    entries = [e for group in ranked.values() for e in group]
    plots_dir = out_dir / PLOTS_DIR
    history: list[tuple[str, Path]] = []
    confusion: list[tuple[str, Path]] = []
    transfer: Path | None = None
    summary: Path | None = None
    if entries:
        plots_dir.mkdir(exist_ok=True)
        labels = [e.label for e in entries]
        history_files = _unique_files(plots_dir, labels, "history")
        confusion_files = _unique_files(plots_dir, labels, "confusion")
        for entry, history_file, confusion_file in zip(
            entries, history_files, confusion_files, strict=True
        ):
            _plot_history(entry.rows, entry.label, history_file)
            history.append((entry.label, history_file))
            if _plot_confusion(entry, confusion_file):
                confusion.append((entry.label, confusion_file))
        if _plot_transfer(ranked, plots_dir / TRANSFER_PLOT):
            transfer = plots_dir / TRANSFER_PLOT
        if _plot_summary(entries, plots_dir / SUMMARY_PLOT):
            summary = plots_dir / SUMMARY_PLOT
    plots = [p for _, p in history] + [p for _, p in confusion]
    plots += [p for p in (transfer, summary) if p is not None]
    # Plots of an earlier report (a run since replaced or removed) would otherwise pass for
    # part of this one; only the names this module writes are touched.
    if plots_dir.is_dir():
        ours = {
            *plots_dir.glob("history_*.png"),
            *plots_dir.glob("confusion_*.png"),
            plots_dir / TRANSFER_PLOT,
            plots_dir / SUMMARY_PLOT,
        }
        for stale in ours - set(plots):
            stale.unlink(missing_ok=True)

    markdown = out_dir / MARKDOWN_FILE
    markdown.write_text(
        _markdown(records, ranked, history, confusion, transfer, summary, out_dir),
        encoding="utf-8",
    )
    csv = out_dir / CSV_FILE
    _csv_frame(ranked, [r for r in records if not _is_ok(r)]).to_csv(csv, index=False)
    return {
        "markdown": markdown,
        "csv": csv,
        "plots": plots,
        "confusion": [p for _, p in confusion],
        "transfer": transfer,
    }
