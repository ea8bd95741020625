"""plots/: training curves and a confusion matrix per entry, and per table (one panel each):
accuracy against inference time per image with its Pareto front (and a fine-tuned entry's frozen
stage), accuracy against model size, and accuracy against ImageNet top-1. Figures are drawn
without pyplot (no global state)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench import stats
from bench.fsio import atomic_path
from bench.report import words
from bench.report.entries import (
    Entry,
    eval_arrays,
    is_number,
    n_classes,
    seeds_text,
)
from bench.report.figure import draw_matrix, log_limits, palette, panels, place_labels, save
from bench.report.ranking import Table, transfer_points
from bench.result import RunResult
from bench.resultsdir import PLOTS_DIR, safe_name

if TYPE_CHECKING:  # matplotlib is imported when a plot is drawn
    from matplotlib.figure import Figure

SUMMARY_PLOT = "summary.png"
TRANSFER_PLOT = "transfer.png"
COST_PLOT = "cost.png"
BASELINE = "baseline"  # Entry.kind of a model trained from scratch: no backbone to time

Point = tuple[float, float, str]  # x, y, label
Panel = Callable[["Figure", Any, Table], None]  # draws one table on one axes


@dataclass
class Plots:
    """What write_plots drew; per entry, (label, file) pairs in table and rank order."""

    history: list[tuple[str, Path]] = field(default_factory=list)
    confusion: list[tuple[str, Path]] = field(default_factory=list)
    transfer: Path | None = None  # accuracy against ImageNet top-1, per table with >= 3 backbones
    cost: Path | None = None  # accuracy against inference ms per image, per table
    summary: Path | None = None  # accuracy against total parameters, per table

    @property
    def files(self) -> list[Path]:
        """Every png: histories, confusion matrices, transfer, cost, summary."""
        files = [p for _, p in self.history] + [p for _, p in self.confusion]
        return files + [p for p in (self.transfer, self.cost, self.summary) if p is not None]


def _save(fig: Figure, path: Path) -> None:
    """The png replaces the old one whole: a kill mid-write never leaves a truncated image."""
    with atomic_path(path) as tmp:
        save(fig, tmp)


def _unique_files(folder: Path, labels: Sequence[str], prefix: str) -> list[Path]:
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


def _history_panel(ax: Any, runs: Sequence[RunResult], metrics: Sequence[str], best: Any) -> None:
    """One metric pair (training batches, the watched split) per epoch, one line per run."""
    single = len(runs) == 1
    plotted = False
    for colour, metric in enumerate(metrics):
        labelled = False
        for run in runs:
            values = [np.nan if v is None else v for v in (run.history or {}).get(metric) or []]
            if not values:
                continue
            ax.plot(
                range(1, len(values) + 1),  # Keras counts epochs from 1 in its logs
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
        ax.text(0.5, 0.5, "no history recorded", ha="center", va="center", transform=ax.transAxes)


def _plot_history(runs: Sequence[RunResult], title: str, path: Path) -> None:
    """The lesson's plot_history: accuracy and loss per epoch, train and validation.

    Several runs (one entry's seeds) share the axes, one faint line per seed and metric, so the
    spread between seeds shows at a glance.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=100)
    axes = fig.subplots(1, 2)
    # fixed margins: a layout engine doubles the drawing time, and dozens of these are drawn
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.88, wspace=0.22)
    best = runs[0].best_epoch if len(runs) == 1 else None
    watched = "holdout" if runs[0].protocol == "holdout" else "test"
    for ax, metrics, ylabel in (
        (axes[0], ("accuracy", f"{watched}_accuracy"), "accuracy"),
        (axes[1], ("loss", f"{watched}_loss"), "loss"),
    ):
        _history_panel(ax, runs, metrics, best)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    if len(runs) > 1:
        title += f" ({seeds_text(runs, words.MISSING)}, one line each)"
    fig.suptitle(title)
    _save(fig, path)


def _title(table: Table) -> str:
    """The table's title as plain text, in lines a panel's width holds."""
    return textwrap.fill(words.title(table), 130)


def _accuracy_label(protocol: str) -> str:
    if protocol == "holdout":
        return "test accuracy (mean over seeds)"
    return "test (= validation) accuracy, last epoch (mean over seeds)"


def interval(entry: Entry) -> tuple[float, float] | None:
    """The 95 % interval of the entry's test accuracy (test images and seeds resampled)."""
    low, high = entry.numbers.get("ci_low"), entry.numbers.get("ci_high")
    return (float(low), float(high)) if is_number(low) and is_number(high) else None


def _bars(entries: Sequence[Entry], ys: Sequence[float]) -> np.ndarray:
    """Error bar lengths (below, above) of each accuracy: its 95 % interval, 0 without one."""
    bars = np.zeros((2, len(entries)))
    for i, (entry, y) in enumerate(zip(entries, ys, strict=True)):
        if (ci := interval(entry)) is not None:
            bars[:, i] = max(y - ci[0], 0.0), max(ci[1] - y, 0.0)
    return bars


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points (cost, accuracy) that no other point beats on both, that is with a
    cost as low and an accuracy as high and one of them strictly; cheapest first."""
    front = [
        i
        for i, (x, y) in enumerate(points)
        if not any(ox <= x and oy >= y and (ox < x or oy > y) for ox, oy in points)
    ]
    return sorted(front, key=lambda i: points[i])


def _role(table: Table, entry: Entry) -> str:
    """The entry's part in the table's recommendation, as its label says it."""
    found = table.recommendation
    if found is None:
        return ""
    if entry is found.best:
        return " (best, recommended)" if entry is found.chosen else " (best)"
    return " (recommended)" if entry is found.chosen else ""


def _cost_entries(table: Table) -> list[tuple[Entry, float, float]]:
    """(entry, inference ms per image, accuracy) of the entries a log axis can show."""
    found = []
    for entry in table.entries:
        ms, accuracy = entry.mean("infer_ms"), entry.mean("test_accuracy")
        if entry.kind != BASELINE and ms is not None and ms > 0 and accuracy is not None:
            found.append((entry, ms, accuracy))
    return found


def _baselines(ax: Any, table: Table) -> list[float]:
    """Each baseline (no backbone, no inference time) as a labelled line at its accuracy."""
    ys = []
    for entry in table.entries:
        if entry.kind == BASELINE and (y := entry.mean("test_accuracy")) is not None:
            ax.axhline(y, color="grey", linestyle=":", linewidth=1, zorder=1)
            ax.text(
                0.995,
                y,
                f"{entry.label} (from scratch)",
                transform=ax.get_yaxis_transform(),
                ha="right",
                va="bottom",
                fontsize=7,
                color="dimgrey",
            )
            ys.append(y)
    return ys


def _frozen_stages(ax: Any, found: Sequence[tuple[Entry, float, float]]) -> list[float]:
    """Each fine-tuned entry's frozen stage: a hollow marker at the same inference time (the
    model is the same), joined to the fine-tuned one by a line; returns their accuracies."""
    shown = [(x, frozen, y) for e, x, y in found if (frozen := e.mean("frozen_accuracy"))
             is not None]
    for x, frozen, y in shown:  # wide and pale, so the interval's bar shows through
        ax.plot([x, x], [frozen, y], color="C2", linewidth=4, alpha=0.4, zorder=2,
                solid_capstyle="butt")
    frozen = [f for _, f, _ in shown]
    if shown:
        ax.scatter([x for x, _, _ in shown], frozen, s=30, facecolors="white", edgecolors="C2",
                   linewidths=1.5, zorder=4, label="frozen stage (green: what fine-tuning added)")
    return frozen


def _cost_panel(fig: Figure, ax: Any, table: Table) -> None:
    found = _cost_entries(table)
    entries = [e for e, _, _ in found]
    xs, ys = np.array([x for _, x, _ in found]), np.array([y for _, _, y in found])
    bars = _bars(entries, ys)
    ax.errorbar(
        xs,
        ys,
        yerr=bars,
        fmt="o",
        markersize=4,
        color="C0",
        elinewidth=1,
        capsize=2,
        zorder=3,
        label="backbone (bars: 95 % interval)",
    )
    front = pareto_front(list(zip(xs, ys, strict=True)))
    ax.plot(
        xs[front],
        ys[front],
        drawstyle="steps-post",
        color="C1",
        linestyle="--",
        linewidth=1.2,
        zorder=2,
        label="Pareto front (nothing faster is as accurate)",
    )
    chosen = [i for i, e in enumerate(entries) if _role(table, e)]
    if chosen:
        ax.scatter(
            xs[chosen],
            ys[chosen],
            s=170,
            facecolors="none",
            edgecolors="C3",
            linewidths=1.8,
            zorder=4,
            label="best; cheapest within the margin of it",
        )
    baselines = [*_baselines(ax, table), *_frozen_stages(ax, found)]
    log_limits(ax, xs, [*(ys - bars[0]), *baselines], [*(ys + bars[1]), *baselines])
    ax.set_xlabel("inference ms per image at the run's size (log scale)")
    ax.set_ylabel(_accuracy_label(table.protocol))
    ax.set_title(_title(table), fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    labels = [words.label(e) + _role(table, e) for e in entries]
    place_labels(fig, ax, list(zip(xs, ys, labels, strict=True)))


def _per_table(
    shown: Sequence[Table], draw: Panel, path: Path, size: tuple[float, float, float], title: str
) -> bool:
    """One panel per table, drawn by draw; False (nothing written) without tables."""
    if not shown:
        return False
    width, height, right = size  # inches; right: where the axes end, as a share of the width
    fig, axes = panels(len(shown), width, height, right)
    for ax, table in zip(axes, shown, strict=True):
        draw(fig, ax, table)
    fig.suptitle(title)
    _save(fig, path)
    return True


def _plot_cost(tables: Sequence[Table], path: Path) -> bool:
    """Accuracy against inference ms per image, a panel per table with timed backbones."""
    shown = [t for t in tables if _cost_entries(t)]
    title = "Accuracy against inference time per image"
    return _per_table(shown, _cost_panel, path, (12, 6.5, 0.75), title)


def _size_points(entries: Sequence[Entry]) -> tuple[list[Entry], list[Point], list[str]]:
    """The entries a log axis of total parameters can show, their points and families."""
    shown, points, families = [], [], []
    for entry in entries:
        accuracy, params = entry.mean("test_accuracy"), entry.first.params_total
        if accuracy is None or not is_number(params) or params <= 0:
            continue  # a log axis cannot show a missing or zero size
        shown.append(entry)
        points.append((float(params), accuracy, words.label(entry)))
        families.append(entry.first.family or entry.kind)
    return shown, points, families


def _summary_panel(fig: Figure, ax: Any, table: Table) -> None:
    entries, points, families = _size_points(table.entries)
    ys = [p[1] for p in points]
    bars = _bars(entries, ys)
    names = list(dict.fromkeys(families))  # colour by family: relatives compare at a glance
    for family, colour in zip(names, palette(len(names)), strict=True):
        mine = [i for i, f in enumerate(families) if f == family]
        ax.errorbar(
            [points[i][0] for i in mine],
            [ys[i] for i in mine],
            yerr=bars[:, mine],
            fmt="o",
            markersize=4,
            color=colour,
            elinewidth=1,
            capsize=2,
            alpha=0.85,
            zorder=3,
            label=family,
        )
    log_limits(ax, [p[0] for p in points], np.subtract(ys, bars[0]), np.add(ys, bars[1]))
    ax.set_xlabel("total parameters (log scale)")
    ax.set_ylabel(_accuracy_label(table.protocol))
    ax.set_title(_title(table), fontsize=9)
    if len(names) <= 20:
        ax.legend(
            title="family", fontsize=7, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1)
        )
    place_labels(fig, ax, points)


def _plot_summary(tables: Sequence[Table], path: Path) -> bool:
    """Mean accuracy (bars: 95 % interval) against total parameters, a panel per table."""
    shown = [t for t in tables if _size_points(t.entries)[0]]
    title = "Accuracy against model size (bars: 95 % interval)"
    return _per_table(shown, _summary_panel, path, (11, 7, 0.84), title)


def _plot_confusion(entry: Entry, path: Path) -> bool:
    """Confusion matrix of the entry's lowest seed that stored predictions; False if none did."""
    run = next((r for r in entry.runs if eval_arrays(r) is not None), None)
    if run is None:
        return False
    labels, predictions = eval_arrays(run)  # type: ignore[misc]
    n = n_classes(run, (labels, predictions))
    matrix = stats.confusion_matrix(labels, predictions, n)
    names = [str(s) for s in run.class_names[:n]] + [str(i) for i in range(len(run.class_names), n)]
    side = min(3.5 + 0.45 * n, 20)
    # constrained layout from the start: a colorbar added first would not take part in it
    from matplotlib.figure import Figure

    fig = Figure(figsize=(side + 1.2, side), dpi=100, layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues", vmin=0)
    colorbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="images")
    colorbar.ax.yaxis.get_major_locator().set_params(integer=True)  # counts: no 2.5 images
    draw_matrix(ax, matrix, names)
    accuracy = float(np.mean(labels == predictions))
    split = run.eval_split or "evaluation set"
    ax.set_title(
        f"{entry.label}\naccuracy {accuracy:.3f} on {len(labels)} images ({split}), "
        f"seed {run.seed}",
        fontsize=10,
    )
    _save(fig, path)
    return True


def _transfer_panel(fig: Figure, ax: Any, table: Table) -> None:
    points = transfer_points(table.entries)
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    ax.scatter(xs, ys, s=25, color="C0", zorder=3)
    x_span = max(max(xs) - min(xs), 1.0)
    y_span = max(max(ys) - min(ys), 0.02)
    ax.set_xlim(min(xs) - 0.12 * x_span, max(xs) + 0.25 * x_span)
    ax.set_ylim(min(ys) - 0.1 * y_span, max(ys) + 0.15 * y_span)
    ax.set_xlabel("ImageNet top-1 accuracy (%, registry)")
    ax.set_ylabel(_accuracy_label(table.protocol).replace("accuracy", "accuracy here", 1))
    result = stats.spearman(xs, ys)
    rho = (
        f"Spearman rho = {result.rho:.2f}, p = {result.p_value:.3g}, n = {result.n}"
        if result.rho is not None
        else f"Spearman rho undefined, n = {result.n}"
    )
    ax.set_title(f"{_title(table)}\n{rho}", fontsize=9)
    ax.grid(alpha=0.3)
    place_labels(fig, ax, points)


def _plot_transfer(tables: Sequence[Table], path: Path) -> bool:
    """Accuracy against ImageNet top-1, a panel per table with >= 3 such backbones."""
    shown = [t for t in tables if len(transfer_points(t.entries)) >= 3]
    title = "Does ImageNet accuracy predict transfer accuracy?"
    return _per_table(shown, _transfer_panel, path, (9, 6.5, 0.97), title)


def _remove_stale(folder: Path, current: Sequence[Path]) -> None:
    """Plots of an earlier report (a run since replaced or removed) would otherwise pass for
    part of this one; only the names this module writes are touched."""
    if not folder.is_dir():
        return
    ours = {
        *folder.glob("history_*.png"),
        *folder.glob("confusion_*.png"),
        *(folder / name for name in (TRANSFER_PLOT, COST_PLOT, SUMMARY_PLOT)),
    }
    for stale in ours - set(current):
        stale.unlink(missing_ok=True)


def write_plots(out_dir: Path, tables: Sequence[Table]) -> Plots:
    """Draws every plot of the tables into out_dir/plots/ and removes stale ones."""
    folder = out_dir / PLOTS_DIR
    entries = [e for table in tables for e in table.entries]
    plots = Plots()
    if entries:
        folder.mkdir(exist_ok=True)
        labels = [e.label for e in entries]
        histories = _unique_files(folder, labels, "history")
        confusions = _unique_files(folder, labels, "confusion")
        for entry, history, confusion in zip(entries, histories, confusions, strict=True):
            _plot_history(entry.runs, entry.label, history)
            plots.history.append((entry.label, history))
            if _plot_confusion(entry, confusion):
                plots.confusion.append((entry.label, confusion))
        if _plot_transfer(tables, folder / TRANSFER_PLOT):
            plots.transfer = folder / TRANSFER_PLOT
        if _plot_cost(tables, folder / COST_PLOT):
            plots.cost = folder / COST_PLOT
        if _plot_summary(tables, folder / SUMMARY_PLOT):
            plots.summary = folder / SUMMARY_PLOT
    _remove_stale(folder, plots.files)
    return plots
