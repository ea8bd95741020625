"""plots/: training curves and a confusion matrix per entry, accuracy against model size, and
accuracy against ImageNet top-1. Figures are drawn without pyplot (no global state)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench import stats
from bench.report.model import (
    HOLDOUT,
    Entry,
    eval_arrays,
    is_number,
    n_classes,
    rank_field,
    seeds_text,
    transfer_points,
)
from bench.report.placement import place_labels
from bench.result import RunResult
from bench.runlog import safe_name

PLOTS_DIR = "plots"
SUMMARY_PLOT = "summary.png"
TRANSFER_PLOT = "transfer.png"

Point = tuple[float, float, str]  # x, y, label


@dataclass
class Plots:
    """What write_plots drew, as (entry label, file) pairs in leaderboard order."""

    history: list[tuple[str, Path]] = field(default_factory=list)
    confusion: list[tuple[str, Path]] = field(default_factory=list)
    transfer: Path | None = None  # accuracy against ImageNet top-1, when >= 3 backbones have it
    summary: Path | None = None

    @property
    def files(self) -> list[Path]:
        """Every png: histories, confusion matrices, transfer, summary."""
        files = [p for _, p in self.history] + [p for _, p in self.confusion]
        return files + [p for p in (self.transfer, self.summary) if p is not None]


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


def _save(fig: Figure, path: Path) -> None:
    # A Figure with its own Agg canvas: no pyplot, no global figure registry, nothing to close.
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png")
    fig.clear()


def _history_panel(ax: Any, runs: Sequence[RunResult], metrics: Sequence[str], best: Any) -> None:
    """One metric pair (train, validation) per epoch, one line per run."""
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
    fig = Figure(figsize=(10, 4), dpi=100)
    axes = fig.subplots(1, 2)
    # fixed margins: a layout engine doubles the drawing time, and dozens of these are drawn
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.88, wspace=0.22)
    best = runs[0].best_epoch if len(runs) == 1 else None
    for ax, metrics, ylabel in (
        (axes[0], ("accuracy", "val_accuracy"), "accuracy"),
        (axes[1], ("loss", "val_loss"), "loss"),
    ):
        _history_panel(ax, runs, metrics, best)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    if len(runs) > 1:
        title += f" ({seeds_text(runs)}, one line each)"
    fig.suptitle(title)
    _save(fig, path)


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


def _size_points(ranked: Sequence[Entry]) -> tuple[list[Point], list[str], list[float]]:
    """(total parameters, accuracy, label), family and sd of each entry a log axis can show."""
    points, families, errors = [], [], []
    for entry in ranked:
        accuracy, params = entry.accuracy(), entry.first.params_total
        if accuracy is None or not is_number(params) or params <= 0:
            continue  # a log axis cannot show a missing or zero size
        points.append((float(params), accuracy, entry.label))
        families.append(entry.first.family or entry.kind)
        errors.append(entry.mean_sd(rank_field(entry.protocol))[1] or 0.0)
    return points, families, errors


def _scatter_families(
    ax: Any, points: Sequence[Point], families: Sequence[str], errors: Sequence[float]
) -> None:
    # colour by family: related architectures are easy to compare at a glance
    names = list(dict.fromkeys(families))
    for family, colour in zip(names, _palette(len(names)), strict=True):
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


def _plot_summary(ranked: Sequence[Entry], path: Path) -> bool:
    """Mean accuracy against total parameters; False (nothing written) if nothing to plot."""
    points, families, errors = _size_points(ranked)
    if not points:
        return False
    fig = Figure(figsize=(11, 7), dpi=100)
    ax = fig.subplots()
    with_legend = 1 < len(set(families)) <= 20
    # fixed margins rather than a layout engine: label placement measures pixel positions,
    # which must not move afterwards
    fig.subplots_adjust(left=0.08, right=0.84 if with_legend else 0.97, bottom=0.09, top=0.94)
    _scatter_families(ax, points, families, errors)
    ax.set_xscale("log")
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    # margins so labels at the edges stay inside the axes
    ax.set_xlim(min(xs) / 1.6, max(xs) * 2.2)
    span = max(max(ys) - min(ys), 0.02)
    ax.set_ylim(min(ys) - 0.08 * span - max(errors), max(ys) + 0.12 * span + max(errors))
    ax.set_xlabel("total parameters (log scale)")
    ax.set_ylabel(_accuracy_label([e.protocol for e in ranked]))
    bars = " (bars: ± sd over seeds)" if any(errors) else ""
    ax.set_title(f"Accuracy against model size{bars}")
    ax.grid(alpha=0.3, which="both")
    if with_legend:
        ax.legend(
            title="family", fontsize=7, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1)
        )
    place_labels(fig, ax, points)
    _save(fig, path)
    return True


def _draw_matrix(ax: Any, matrix: np.ndarray, names: Sequence[str]) -> None:
    """The counts as an image with each cell's number written on it."""
    n = len(names)
    ax.set_xticks(range(n), labels=names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), labels=names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    threshold = matrix.max() / 2 if matrix.size else 0
    font = max(5, 11 - n // 4)
    for i in range(n):
        for j in range(n):
            colour = "white" if matrix[i, j] > threshold else "black"
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=font, color=colour)


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
    fig = Figure(figsize=(side + 1.2, side), dpi=100, layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues", vmin=0)
    colorbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="images")
    colorbar.ax.yaxis.get_major_locator().set_params(integer=True)  # counts: no 2.5 images
    _draw_matrix(ax, matrix, names)
    accuracy = float(np.mean(labels == predictions))
    split = run.eval_split or "evaluation set"
    ax.set_title(
        f"{entry.label}\naccuracy {accuracy:.3f} on {len(labels)} images ({split}), "
        f"seed {run.seed}",
        fontsize=10,
    )
    _save(fig, path)
    return True


def _plot_transfer(ranked: dict[str, list[Entry]], path: Path) -> bool:
    """Accuracy against ImageNet top-1, one panel per protocol with >= 3 backbones."""
    panels = [(p, pts) for p, group in ranked.items() if len(pts := transfer_points(group)) >= 3]
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
        place_labels(fig, ax, points)
    fig.suptitle("Does ImageNet accuracy predict transfer accuracy?")
    _save(fig, path)
    return True


def _remove_stale(folder: Path, current: Sequence[Path]) -> None:
    """Plots of an earlier report (a run since replaced or removed) would otherwise pass for
    part of this one; only the names this module writes are touched."""
    if not folder.is_dir():
        return
    ours = {
        *folder.glob("history_*.png"),
        *folder.glob("confusion_*.png"),
        folder / TRANSFER_PLOT,
        folder / SUMMARY_PLOT,
    }
    for stale in ours - set(current):
        stale.unlink(missing_ok=True)


def write_plots(out_dir: Path, ranked: dict[str, list[Entry]]) -> Plots:
    """Draws every plot of the ranked entries into out_dir/plots/ and removes stale ones."""
    folder = out_dir / PLOTS_DIR
    entries = [e for group in ranked.values() for e in group]
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
        if _plot_transfer(ranked, folder / TRANSFER_PLOT):
            plots.transfer = folder / TRANSFER_PLOT
        if _plot_summary(entries, folder / SUMMARY_PLOT):
            plots.summary = folder / SUMMARY_PLOT
    _remove_stale(folder, plots.files)
    return plots
