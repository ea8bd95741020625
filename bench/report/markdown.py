"""leaderboard.md: what was run, then one section per configuration (its recommendation, ranked
table, how to read it, details, transfer analysis, per-class recall), what pretraining bought,
what the lesson protocol inflates, failures, notes and links to the plots."""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tabulate import tabulate

from bench import stats
from bench.console import one_line
from bench.report import effects
from bench.report.columns import BY_NAME, DETAILS, MARKDOWN, columns_of
from bench.report.model import (
    ALPHA,
    HOLDOUT,
    LESSON,
    MISSING,
    RESAMPLES,
    Entry,
    Table,
    is_number,
    seeds_text,
    transfer_points,
    weights_file_text,
)
from bench.report.plots import PLOTS_DIR, Plots
from bench.result import RunResult
from bench.runlog import RUNS_FILE

# The main table of every configuration: rank, backbone, accuracy, the test, cost.
MARKDOWN_COLUMNS: tuple[str, ...] = tuple(c.name for c in columns_of(MARKDOWN))

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
        "As in the episode: early stopping watches the test file, and the accuracy is measured "
        "on that same file at the last epoch run, which flatters every number a little."
    ),
    HOLDOUT: (
        "Early stopping watches a stratified, seeded holdout split of the training set (`val_acc`"
        " in the details) and restores the best epoch's weights; the accuracy is the test file's, "
        "evaluated once at the end."
    ),
}


def _format(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    if spec == "d" and not isinstance(value, int):  # e.g. a size recorded as text
        spec = ""
    return format(value, spec) if is_number(value) and spec else str(value)


def _accuracy_name(entry: Entry) -> str:
    return "test_acc" if entry.protocol == HOLDOUT else "val_acc"


def _mean_sd_text(entry: Entry, name: str) -> str:
    """mean ± sd over the seeds that measured it; the mean alone for one seed."""
    mean, sd = entry.numbers[name], entry.numbers[f"{name}_sd"]
    if mean is None:
        return MISSING
    return f"{mean:.3f} ± {sd:.3f}" if entry.measured(BY_NAME[name].source) > 1 else f"{mean:.3f}"


def _accuracy_text(entry: Entry) -> str:
    """The ranking accuracy, mean ± sd, with its Wilson interval."""
    text = _mean_sd_text(entry, _accuracy_name(entry))
    low, high = entry.numbers["ci_low"], entry.numbers["ci_high"]
    return f"{text} [{low:.3f}, {high:.3f}]" if low is not None else text


def _rank_text(entry: Entry) -> str:
    if entry.rank_low is None or entry.rank_low == entry.rank_high == entry.rank:
        return str(entry.rank)
    return f"{entry.rank} ({entry.rank_low}–{entry.rank_high})"


def _p_text(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3g}"


def _vs_top_text(entry: Entry) -> str:
    if entry.p_value is None or entry.p_adjusted is None:
        return entry.vs_top
    p, adjusted = _p_text(entry.p_value), _p_text(entry.p_adjusted)
    return f"{entry.vs_top} (p{'' if p[0] == '<' else '='}{p}, adj. {adjusted})"


def _params_text(entry: Entry) -> str:
    trainable, total = entry.numbers["trainable_params"], entry.numbers["total_params"]
    return f"{_format(trainable, ',')} / {_format(total, ',')}"


def _epochs_text(entry: Entry) -> str:
    mean = entry.numbers["epochs"]
    if mean is None:
        return MISSING
    return f"{mean:.1f}" if len(entry.runs) > 1 or mean != int(mean) else f"{int(mean)}"


# The cells that combine several numbers of an entry; every other cell is one formatted number.
_COMPOSITE_CELLS: dict[str, Callable[[Entry], str]] = {
    "rank": _rank_text,
    "backbone": lambda e: e.label,  # with the knob that tells two entries of a name apart
    "accuracy": _accuracy_text,
    "vs top": _vs_top_text,
    "params": _params_text,
    "val_acc": lambda e: _mean_sd_text(e, "val_acc"),
    "K": lambda e: str(e.numbers["k"]),
    "epochs": _epochs_text,
    "weights": lambda e: _format(weights_file_text(e.first), ""),
}


def _cell(entry: Entry, name: str) -> str:
    if name in _COMPOSITE_CELLS:
        return _COMPOSITE_CELLS[name](entry)
    return _format(entry.numbers[name], BY_NAME[name].fmt)


def details_columns(table: Table) -> tuple[str, ...]:
    """The details table's columns: val_acc only where it is not the main accuracy (holdout),
    optional columns (probes) only when some entry has them."""
    return tuple(
        c.name
        for c in columns_of(DETAILS)
        if not (c.name == "val_acc" and table.protocol != HOLDOUT)
        and not (c.optional and all(e.numbers.get(c.name) is None for e in table.entries))
    )


def _pipe_table(entries: Sequence[Entry], columns: Sequence[str]) -> str:
    """The pipe table, every number formatted here (tabulate only aligns)."""
    return tabulate(
        [[_cell(e, c) for c in columns] for e in entries],
        headers=list(columns),
        tablefmt="pipe",
        disable_numparse=True,
        colalign=["right" if BY_NAME[c].numeric else "left" for c in columns],
    )


def _times(ratio: float | None, fewer: str, more: str) -> str | None:
    if ratio is None or math.isclose(ratio, 1.0):
        return None
    return f"{ratio:.1f}× {fewer}" if ratio > 1 else f"{1 / ratio:.1f}× {more}"


def recommendation_line(table: Table) -> str | None:
    """"Best: X. Cheapest not distinguishable from it: Y (N× faster per image, M× fewer
    parameters).", or None for a table without an accuracy."""
    chosen = table.recommendation
    if chosen is None:
        return None
    best = f"**Best: {chosen.best.label}.**"
    if chosen.cheapest is not chosen.best:
        gains = [
            _times(chosen.speedup, "faster per image", "slower per image"),
            _times(chosen.param_ratio, "fewer parameters", "more parameters"),
        ]
        said = ", ".join(g for g in gains if g)
        return (
            f"{best} **Cheapest not distinguishable from it: {chosen.cheapest.label}**"
            + (f" ({said})." if said else ".")
        )
    if not any(e.p_adjusted is not None for e in table.entries):
        return f"{best} No other entry could be tested against it (no stored predictions)."
    return f"{best} **Cheapest not distinguishable from it: {chosen.best.label} itself.**"


def _method_line(table: Table) -> str:
    """How to read the rank, interval and test columns, with this table's own numbers."""
    accuracy = "test" if table.protocol == HOLDOUT else "validation (= test file)"
    compared = sum(1 for e in table.entries if e.p_adjusted is not None)
    line = (
        f"How to read it: `accuracy` is the {accuracy} accuracy, mean ± sd over K seeds, with "
        f"the Wilson 95 % interval on the n evaluation images in brackets. `rank` adds its 95 % "
        f"interval over {RESAMPLES:,} bootstrap resamples of the test images and the seeds. "
        f"`vs top` is an exact two-sided sign test over the test images against the top entry, "
        f"on each image's correctness averaged over the seeds both have (the images are the "
        f"independent unit, not the seeds; on one seed it is the exact McNemar test); p is raw, "
        f"adj. is {table.correction}-adjusted over this table's {compared} comparisons; `not "
        f"distinguishable` = adjusted p ≥ {ALPHA}."
    )
    sizes = sorted({n for e in table.entries if (n := e.numbers["n_eval"])})
    top = table.entries[0].numbers if table.entries else {}
    if sizes and top.get("ci_low") is not None:
        n = str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}–{sizes[-1]}"
        half = (top["ci_high"] - top["ci_low"]) / 2 * 100
        line += (
            f" With n = {n} images the interval is about ±{half:.1f} points, so a gap of that "
            f"size between two backbones may be noise."
        )
    return line


def _transfer_lines(table: Table, plot: Path | None, out_dir: Path) -> list[str]:
    """Spearman's rho between accuracy and ImageNet top-1, or why it is left out."""
    points = transfer_points(table.entries)
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
            f"Spearman rank correlation between this table's accuracy and ImageNet top-1 across "
            f"its backbones: rho = {result.rho:.2f}, p = {result.p_value:.3g}, n = {result.n}. "
            f"A rho near 1 means the better ImageNet models also transfer better to this data "
            f"set; with few backbones only a large rho is significant."
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


def _table_section(number: int, table: Table, plots: Plots, out_dir: Path) -> list[str]:
    lines = [f"## Table {number}: {table.title}", ""]
    if table.protocol in _PROTOCOL_TEXT:
        lines += [_PROTOCOL_TEXT[table.protocol], ""]
    if recommendation := recommendation_line(table):
        lines += [recommendation, ""]
    lines += [_pipe_table(table.entries, MARKDOWN_COLUMNS), ""]
    lines += [_method_line(table), ""]
    lines += ["### Details", "", _pipe_table(table.entries, details_columns(table)), ""]
    lines += [*_transfer_lines(table, plots.transfer, out_dir), ""]
    if per_class := _per_class_lines(table.entries):
        lines += [*per_class, ""]
    return lines


def _pretraining_lines(found: Sequence[effects.Pretraining]) -> list[str]:
    if not found:
        return []
    rows = [
        [
            e.backbone,
            e.control.label,
            e.title.replace("**", ""),
            f"{e.difference:+.3f}",
            f"[{e.ci_low:+.3f}, {e.ci_high:+.3f}]",
            _p_text(e.p_value),
        ]
        for e in found
    ]
    headers = ["backbone", "against", "table", "difference", "95% CI", "p"]
    return [
        "## What pretraining bought",
        "",
        "Accuracy of the ImageNet-pretrained backbone minus that of the same backbone with "
        f"random weights, or of the table's best model trained from scratch, on the same test "
        f"images (mean over seeds); interval and p from a {found[0].test}.",
        "",
        tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True),
        "",
    ]


def _inflation_lines(found: Sequence[effects.Inflation]) -> list[str]:
    if not found:
        return []
    rows = [
        [e.backbone, f"{e.lesson_accuracy:.3f}", f"{e.holdout_accuracy:.3f}", f"{e.inflation:+.3f}"]
        for e in found
    ]
    headers = ["backbone", "lesson val_acc", "holdout test_acc", "inflation"]
    return [
        "## What the lesson protocol inflates",
        "",
        "The same backbone under both protocols: the lesson's accuracy (early stopping on the "
        "test file) minus the holdout protocol's test accuracy (means over seeds). A positive "
        "gap is how much choosing the epoch on the test file flatters the score.",
        "",
        tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True),
        "",
    ]


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
    sizes = [_common_value(runs, k) for k in ("n_train", "n_test", "n_classes")]
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
    if plots.summary is None and plots.cost is None and not plots.history and not plots.confusion:
        return []
    lines = ["## Plots", ""]
    for title, plot in (
        ("Accuracy against inference ms per image", plots.cost),
        ("Accuracy against model size", plots.summary),
    ):
        if plot is not None:
            rel = plot.relative_to(out_dir).as_posix()
            lines += [f"{title}: [{rel}]({rel})", "", f"![]({rel})", ""]
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
    runs: Sequence[RunResult], found: Sequence[Table], plots: Plots, out_dir: Path
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
    if not found:
        lines += ["No successful runs.", ""]
    for number, table in enumerate(found, start=1):
        lines += _table_section(number, table, plots, out_dir)
    lines += _pretraining_lines(effects.pretraining(found))
    lines += _inflation_lines(effects.inflation(found))
    lines += _failed_and_notes(runs)
    lines += _plot_lines(plots, out_dir)
    return "\n".join(lines)
