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
from bench.report import effects, stages, words
from bench.report.columns import BY_NAME, DETAILS, MARKDOWN, STAGES, columns_of
from bench.report.entries import Entry, is_number, seeds_text, weights_file_text
from bench.report.plots import Plots
from bench.report.ranking import ALPHA, Table, transfer_points
from bench.report.words import MISSING, label
from bench.result import RunResult
from bench.resultsdir import PLOTS_DIR, RUNS_FILE

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

def _format(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    if spec == "d" and not isinstance(value, int):  # e.g. a size recorded as text
        spec = ""
    return format(value, spec) if is_number(value) and spec else str(value)


def _mean_sd_text(entry: Entry, name: str) -> str:
    """mean ± sd over the seeds that measured it; the mean alone for one seed."""
    mean, sd = entry.numbers[name], entry.numbers[f"{name}_sd"]
    if mean is None:
        return MISSING
    return f"{mean:.3f} ± {sd:.3f}" if entry.measured(BY_NAME[name].source) > 1 else f"{mean:.3f}"


def _accuracy_text(entry: Entry) -> str:
    """The test accuracy, mean ± sd over seeds, with its interval (images and seeds)."""
    text = _mean_sd_text(entry, "test_accuracy")
    low, high = entry.ci_low, entry.ci_high
    return f"{text} [{low:.3f}, {high:.3f}]" if low is not None else text


def _rank_text(entry: Entry) -> str:
    """The rank and, on every entry compared with others, its interval (even `1 (1–1)`)."""
    if entry.rank_low is None:
        return str(entry.rank)
    return f"{entry.rank} ({entry.rank_low}–{entry.rank_high})"


def _params_text(entry: Entry) -> str:
    trainable, total = entry.numbers["trainable_params"], entry.numbers["total_params"]
    return f"{_format(trainable, ',')} / {_format(total, ',')}"


def _gain_text(entry: Entry) -> str:
    """Fine-tuned minus frozen accuracy with its interval."""
    if entry.gain is None:
        return MISSING
    return f"{entry.gain:+.3f} [{entry.gain_low:+.3f}, {entry.gain_high:+.3f}]"


def _epochs_text(entry: Entry) -> str:
    mean = entry.numbers["epochs"]
    if mean is None:
        return MISSING
    return f"{mean:.1f}" if len(entry.runs) > 1 or mean != int(mean) else f"{int(mean)}"


# The cells that combine several numbers of an entry; every other cell is one formatted number.
_COMPOSITE_CELLS: dict[str, Callable[[Entry], str]] = {
    "rank": _rank_text,
    "backbone": label,  # with the knob that tells two entries of a name apart, and marks
    "test_accuracy": _accuracy_text,
    "vs best": words.verdict,
    "params trainable / total": _params_text,
    "holdout_accuracy": lambda e: _mean_sd_text(e, "holdout_accuracy"),
    "K": lambda e: str(e.numbers["k"]),
    "epochs": _epochs_text,
    "weights": lambda e: _format(weights_file_text(e.first), ""),
    "gain": _gain_text,
    "gain_p": lambda e: MISSING if e.gain_p is None else _p_text(e.gain_p),
}


def _cell(entry: Entry, name: str) -> str:
    if name in _COMPOSITE_CELLS:
        return _COMPOSITE_CELLS[name](entry)
    return _format(entry.numbers[name], BY_NAME[name].fmt)


def details_columns(table: Table) -> tuple[str, ...]:
    """The details table's columns; optional ones (holdout_accuracy, probes) only when some
    entry has them, the fine-tuning ones in fine-tuned tables only."""
    return tuple(
        c.name
        for c in columns_of(DETAILS)
        if not (c.optional and all(e.numbers.get(c.name) is None for e in table.entries))
        and (table.fine_tuned or not c.fine_tuned)
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


def _bold_lead(text: str | None) -> str | None:
    """The sentence's lead (up to its first colon) in bold."""
    if text is None or ":" not in text:
        return text
    lead, rest = text.split(":", 1)
    return f"**{lead}:**{rest}"


def _method_lines(table: Table) -> list[str]:
    """How to read the table, what it can resolve, and what it could not estimate."""
    lines = [words.method_text(table), ""]
    for text in (words.resolvable_text(table), words.seed_warning(table)):
        if text:
            lines += [text, ""]
    return lines


def _transfer_lines(table: Table, plot: Path | None, out_dir: Path) -> list[str]:
    """Spearman's rho between accuracy and ImageNet top-1, or why it is left out."""
    found = transfer_points(table.entries)
    lines = ["### Transfer analysis", ""]
    if len(found) < 3:
        lines.append(
            f"Omitted: a rank correlation needs at least 3 pretrained backbones with an ImageNet "
            f"top-1 in the registry (random-weights controls do not count); this table has "
            f"{len(found)}."
        )
        return lines
    result = stats.spearman([p[0] for p in found], [p[1] for p in found])
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


def _stage_lines(table: Table) -> list[str]:
    """A fine-tuned table's entries against their frozen stage, and whether the frozen
    ranking predicted the fine-tuned one."""
    if not table.fine_tuned:
        return []
    shown = [e for e in table.entries if stages.is_fine_tuned(e)]
    return ["### Fine-tuned against the frozen stage", "", words.STAGES_TEXT, "",
            _pipe_table(shown, [c.name for c in columns_of(STAGES)]), "",
            "### Did the frozen ranking predict the fine-tuned one?", "",
            words.agreement_text(table), ""]


def _title(table: Table) -> str:
    """The table's configuration, the knobs that tell tables apart in bold."""
    return ", ".join(f"**{text}**" if differs else text
                     for text, differs in words.title_parts(table.configuration, table.differing))


def _table_section(number: int, table: Table, plots: Plots, out_dir: Path) -> list[str]:
    lines = [f"## Table {number}: {_title(table)}", ""]
    if table.protocol in words.PROTOCOL_TEXT:
        lines += [words.PROTOCOL_TEXT[table.protocol], ""]
    for text in (words.could_be_best_text(table),
                 words.recommendation_text(table.recommendation)):
        if text:
            lines += [_bold_lead(text), ""]
    lines += [_pipe_table(table.entries, MARKDOWN_COLUMNS), ""]
    lines += _method_lines(table)
    lines += _stage_lines(table)
    lines += ["### Details", "", _pipe_table(table.entries, details_columns(table)), ""]
    lines += [*_transfer_lines(table, plots.transfer, out_dir), ""]
    if per_class := _per_class_lines(table.entries):
        lines += [*per_class, ""]
    return lines


def _difference_cells(d) -> list[str]:
    return [f"{d.estimate:+.3f}", f"[{d.low:+.3f}, {d.high:+.3f}]", _p_text(d.p_value)]


def _p_text(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3g}"


_DIFFERENCE_HEADERS = ["difference", f"{100 * (1 - ALPHA):.0f} % interval", "p"]
_HOW = ("Each difference is paired, image by image and over the seeds, with its interval and "
        "p-value from the same resampling of the test images and seeds as the tables: the "
        "interval excludes 0 exactly when p < 0.05.")


def _pretraining_lines(found: Sequence[effects.Pretraining]) -> list[str]:
    if not found:
        return []
    rows = [[e.treated.label, label(e.control), words.title(e.table),
             *_difference_cells(e.difference)] for e in found]
    text = ["## What pretraining bought", "",
            "Accuracy of the ImageNet-pretrained backbone minus that of the same backbone with "
            "random weights (its BatchNorm statistics re-estimated on the training images, the "
            "usual random-features control), or of the table's best model trained from "
            "scratch, on the same test images (mean over seeds). " + _HOW]
    if any(e.control.one_class for e in found):
        text[-1] += (" A control marked \"predicts one class\" learned nothing from its "
                     "features: the difference against it overstates what pretraining bought.")
    return [*text, "", tabulate(rows, headers=["backbone", "against", "table",
                                               *_DIFFERENCE_HEADERS],
                                tablefmt="pipe", disable_numparse=True), ""]


def _inflation_lines(found: Sequence[effects.Inflation]) -> list[str]:
    if not found:
        return []
    rows = [[label(e.entry), str(len(e.entry.runs)), f"{e.chosen_on_test:.3f}",
             f"{e.chosen_on_holdout:.3f}", *_difference_cells(e.difference)] for e in found]
    headers = ["backbone", "K", "epoch chosen on test", "epoch chosen on holdout",
               *_DIFFERENCE_HEADERS]
    return [
        "## What choosing the epoch on the test file flatters", "",
        "Inside each holdout run, the test accuracy was recorded after every epoch without "
        "being used. A stopper watching the test file (as the lesson's does) would have kept "
        "the epoch where it was highest; the holdout kept the epoch its own split chose. The "
        "difference is what choosing on the test file adds to a score, measured in the same "
        "runs. " + _HOW, "",
        tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True), "",
    ]


def _probe_lines(found: Sequence[effects.Probe]) -> list[str]:
    if not found:
        return []
    rows = [[label(p.entry), p.name, f"{p.accuracy:.3f} [{p.low:.3f}, {p.high:.3f}]",
             *_difference_cells(p.difference)] for p in found]
    headers = ["backbone", "probe", "accuracy", "probe − head", *_DIFFERENCE_HEADERS[1:]]
    return [
        "## Probes against the head", "",
        "The standard transfer probes on the same frozen features (Kornblith et al. 2019): a "
        "logistic regression and a cosine k-nearest-neighbour classifier, tuned on the training "
        "split, scored on the same test images as the head. " + _HOW, "",
        tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True), "",
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
        data += f" ({sizes[0]} train / {sizes[1]} test images, {sizes[2]} classes)"
    knobs = ", ".join(
        seeds_text(runs, MISSING) if key == "seed" else f"{said} {_common_value(runs, key)}"
        for key, said in _SUMMARY_KNOBS
    )
    return f"{data}. Protocol: {knobs}."


def provenance_line(runs: Sequence[RunResult]) -> str | None:
    """Versions, device and commit, said once when every run agrees (else "mixed")."""
    parts = []
    for name, said in _PROVENANCE:
        values = {getattr(r, name) for r in runs}
        if values == {None}:
            continue
        (value,) = values if len(values) == 1 else ("mixed",)
        parts.append(f"{said} {value}")
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
    lines += _probe_lines(effects.probes(found))
    lines += _failed_and_notes(runs)
    lines += _plot_lines(plots, out_dir)
    return "\n".join(lines)
