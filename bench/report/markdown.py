"""leaderboard.md: what was run, one ranked table per protocol with how to read it, the transfer
analysis, per-class recall, failures, notes and links to the plots."""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tabulate import tabulate

from bench import stats
from bench.console import one_line
from bench.report.columns import BY_NAME, MARKDOWN, columns_of
from bench.report.model import (
    ALPHA,
    HOLDOUT,
    LESSON,
    MISSING,
    Entry,
    is_number,
    seeds_text,
    transfer_points,
)
from bench.report.plots import PLOTS_DIR, Plots
from bench.result import RunResult
from bench.runlog import RUNS_FILE

_IDENTITY = ("rank", "backbone", "kind")
_TESTS = ("K", "95% CI", "vs top")  # of the ranking accuracy, right after it


def markdown_columns(protocol: str) -> tuple[str, ...]:
    """The leaderboard.md columns of one protocol's table: the ranking accuracy and its tests
    first (holdout ranks by, and so leads with, test accuracy), the protocol last."""
    accuracies = ("test_acc", "val_acc") if protocol == HOLDOUT else ("val_acc",)
    head = (*_IDENTITY, accuracies[0], *_TESTS, *accuracies[1:])
    skipped = {*head, "test_acc", "protocol"}
    rest = tuple(c.name for c in columns_of(MARKDOWN) if c.name not in skipped)
    return (*head, *rest, "protocol")


MARKDOWN_COLUMNS: dict[str, tuple[str, ...]] = {p: markdown_columns(p) for p in (LESSON, HOLDOUT)}

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


def _format(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    if spec == "d" and not isinstance(value, int):  # e.g. a size recorded as text
        spec = ""
    return format(value, spec) if is_number(value) and spec else str(value)


def _accuracy_text(entry: Entry, name: str) -> str:
    """mean ± sd over the seeds that measured it; the mean alone for one seed."""
    source = BY_NAME[name].source
    mean, sd = entry.numbers[name], entry.numbers[f"{name}_sd"]
    if mean is None:
        return MISSING
    return f"{mean:.3f} ± {sd:.3f}" if entry.measured(source) > 1 else f"{mean:.3f}"


def _epochs_text(entry: Entry) -> str:
    mean = entry.numbers["epochs"]
    if mean is None:
        return MISSING
    return f"{mean:.1f}" if len(entry.runs) > 1 or mean != int(mean) else f"{int(mean)}"


def _interval_text(entry: Entry) -> str:
    low, high = entry.numbers["ci_low"], entry.numbers["ci_high"]
    return f"[{low:.3f}, {high:.3f}]" if low is not None else MISSING


def _vs_top_text(entry: Entry) -> str:
    p = entry.p_value
    if p is None:
        return entry.vs_top
    return f"{entry.vs_top} ({'p<0.001' if p < 0.001 else f'p={p:.3g}'})"


# The cells that combine several numbers of an entry; every other cell is one formatted number.
_COMPOSITE_CELLS = {
    "val_acc": lambda e: _accuracy_text(e, "val_acc"),
    "test_acc": lambda e: _accuracy_text(e, "test_acc"),
    "K": lambda e: str(e.numbers["k"]),
    "95% CI": _interval_text,
    "vs top": _vs_top_text,
    "epochs": _epochs_text,
}


def _cell(entry: Entry, name: str) -> str:
    if name in _COMPOSITE_CELLS:
        return _COMPOSITE_CELLS[name](entry)
    return _format(entry.numbers[name], BY_NAME[name].fmt)


def _table(ranked: Sequence[Entry], protocol: str) -> str:
    """The pipe table, every number formatted here (tabulate only aligns)."""
    columns = markdown_columns(protocol)
    return tabulate(
        [[_cell(e, c) for c in columns] for e in ranked],
        headers=list(columns),
        tablefmt="pipe",
        disable_numparse=True,
        colalign=["right" if BY_NAME[c].numeric else "left" for c in columns],
    )


def _common_value(runs: Sequence[RunResult], name: str) -> str:
    """The value every run shares, or the distinct values marked as mixed."""
    values = list(dict.fromkeys(getattr(r, name) for r in runs))
    if len(values) == 1:
        return MISSING if values[0] is None else str(values[0])
    if len(values) > 4:
        return f"mixed ({len(values)} values)"
    return "mixed (" + ", ".join(MISSING if v is None else str(v) for v in values) + ")"


def _protocol_line(runs: Sequence[RunResult]) -> str:
    """One line saying what was run: the data and the protocol knobs."""
    data = f"Data: `{_common_value(runs, 'data')}`"
    sizes = [_common_value(runs, k) for k in ("n_train", "n_val", "n_classes")]
    if MISSING not in sizes and not any(s.startswith("mixed") for s in sizes):
        data += f" ({sizes[0]} train / {sizes[1]} val images, {sizes[2]} classes)"
    knobs = ", ".join(
        seeds_text(runs) if key == "seed" else f"{label} {_common_value(runs, key)}"
        for key, label in _SUMMARY_KNOBS
    )
    return f"{data}. Protocol: {knobs}."


def provenance_line(runs: Sequence[RunResult]) -> str | None:
    """Versions, device and commit, said once when every run agrees (else "mixed")."""
    parts = []
    for name, label in _PROVENANCE:
        values = {getattr(r, name) for r in runs}
        if values == {None}:
            continue
        (value,) = values if len(values) == 1 else ("mixed",)
        parts.append(f"{label} {value}")
    checksums = {r.data_checksum for r in runs} - {None}
    if checksums:
        parts.append(
            f"data sha256 {next(iter(checksums))[:12]}…" if len(checksums) == 1 else "data mixed"
        )
    return "Provenance: " + ", ".join(parts) + "." if parts else None


def _method_line(ranked: Sequence[Entry], protocol: str) -> str:
    """How to read the interval and tie columns, with this table's own numbers."""
    accuracy = "test_acc" if protocol == HOLDOUT else "val_acc"
    line = (
        f"How to read it: `{accuracy}` is the mean ± sd over K seeds. `95% CI` is the Wilson 95 % "
        f"interval of that accuracy on the n evaluation images. `vs top` is an exact McNemar test "
        f"against the top backbone on the same images and the same seed (a two-sided binomial "
        f"test on the images exactly one of the two got right); α = {ALPHA}: `tied` = not "
        f"significantly worse than the top."
    )
    sizes = sorted({n for e in ranked if (n := e.numbers["n_eval"])})
    top = ranked[0].numbers if ranked else {}
    if sizes and top.get("ci_low") is not None:
        n = str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}–{sizes[-1]}"
        half = (top["ci_high"] - top["ci_low"]) / 2 * 100
        line += (
            f" With n = {n} images the interval is about ±{half:.1f} points, so a gap of that "
            f"size between two backbones can be a tie."
        )
    return line


def _transfer_lines(
    ranked: Sequence[Entry], protocol: str, plot: Path | None, out_dir: Path
) -> list[str]:
    """Spearman's rho between accuracy and ImageNet top-1, or why it is left out."""
    accuracy = "test_acc" if protocol == HOLDOUT else "val_acc"
    points = transfer_points(ranked)
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
        lines += ["", f"![accuracy against ImageNet top-1]({plot.relative_to(out_dir).as_posix()})"]
    return lines


def _mean_recall(entry: Entry, width: int) -> list[str]:
    """The entry's recall per class, mean over the seeds that stored it, formatted."""
    per_run = [
        [v if is_number(v) else np.nan for v in r.per_class_accuracy]
        + [np.nan] * (width - len(r.per_class_accuracy))
        for r in entry.runs
        if r.per_class_accuracy
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a class no run saw: NaN, shown as —
        means = np.nanmean(np.array(per_run, dtype=np.float64), axis=0)
    return [_format(float(m), ".3f") for m in means]


def _per_class_lines(ranked: Sequence[Entry]) -> list[str]:
    """Recall per class, mean over seeds, for the entries that stored it."""
    shown = [e for e in ranked if any(r.per_class_accuracy for r in e.runs)]
    if not shown:
        return []
    width = max(len(r.per_class_accuracy) for e in shown for r in e.runs)
    names = next((list(r.class_names) for e in shown for r in e.runs if r.class_names), [])
    names = [*names[:width], *(f"class {i}" for i in range(len(names), width))]
    text = tabulate(
        [[entry.label, *_mean_recall(entry, width)] for entry in shown],
        headers=["backbone", *names],
        tablefmt="pipe",
        disable_numparse=True,
        colalign=["left", *(["right"] * width)],
    )
    return ["### Per-class accuracy", "", "Recall of each class (mean over seeds).", "", text]


def _protocol_sections(
    ranked: dict[str, list[Entry]], transfer: Path | None, out_dir: Path
) -> list[str]:
    lines = [] if ranked else ["No successful runs.", ""]
    for protocol, group in ranked.items():
        lines += [f"## Protocol: {protocol}", ""]
        if protocol in _PROTOCOL_TEXT:
            lines += [_PROTOCOL_TEXT[protocol], ""]
        lines += [_table(group, protocol), ""]
        lines += [_method_line(group, protocol), ""]
        lines += [*_transfer_lines(group, protocol, transfer, out_dir), ""]
        if per_class := _per_class_lines(group):
            lines += [*per_class, ""]
    return lines


def _failed_and_notes(runs: Sequence[RunResult]) -> list[str]:
    lines = []
    failed = [r for r in runs if not r.ok]
    if failed:
        seeds_per_backbone = Counter(r.backbone for r in runs)
        lines += ["## Failed", ""]
        for r in failed:
            seed = f" (seed {r.seed})" if seeds_per_backbone[r.backbone] > 1 else ""
            lines.append(f"- **{r.backbone}**{seed}: {one_line(r.error)}")
        lines.append("")
    # one line per distinct note: K seeds of one backbone repeat the same warnings
    notes = dict.fromkeys((r.backbone, one_line(note)) for r in runs for note in r.notes or [])
    if notes:
        lines += ["## Notes", ""]
        lines += [f"- **{name}**: {note}" for name, note in notes]
        lines.append("")
    return lines


def _plot_lines(plots: Plots, out_dir: Path) -> list[str]:
    if plots.summary is None and not plots.history and not plots.confusion:
        return []
    lines = ["## Plots", ""]
    if plots.summary is not None:
        rel = plots.summary.relative_to(out_dir).as_posix()
        lines += [f"Accuracy against model size: [{rel}]({rel})", "", f"![]({rel})", ""]
    for title, pairs in (
        ("Confusion matrices per backbone (lowest seed)", plots.confusion),
        ("Training curves per backbone (every seed)", plots.history),
    ):
        if pairs:
            links = ", ".join(
                f"[{label}]({path.relative_to(out_dir).as_posix()})" for label, path in pairs
            )
            lines += [f"{title} (in `{PLOTS_DIR}/`): {links}", ""]
    return lines


def leaderboard_markdown(
    runs: Sequence[RunResult], ranked: dict[str, list[Entry]], plots: Plots, out_dir: Path
) -> str:
    """The whole of leaderboard.md."""
    lines = ["# Leaderboard", ""]
    if not runs:
        lines.append(f"No runs yet: `{RUNS_FILE}` has no records.")
        return "\n".join(lines) + "\n"
    # the knobs of the table's rows; failed runs may have stopped before recording them all
    described = [r for r in runs if r.ok] or runs
    lines += [_protocol_line(described), ""]
    if provenance := provenance_line(described):
        lines += [provenance, ""]
    lines += _protocol_sections(ranked, plots.transfer, out_dir)
    lines += _failed_and_notes(runs)
    lines += _plot_lines(plots, out_dir)
    return "\n".join(lines)
