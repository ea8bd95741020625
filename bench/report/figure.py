"""A figure's furniture, whatever it plots: panels with fixed margins, a palette, axis limits
with room for labels, point labels that overlap neither each other nor the markers, a matrix
of counts, and saving without pyplot. bench.report.plots decides what each figure shows."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # matplotlib is imported when a plot is drawn: a report without plots is fast
    from matplotlib.figure import Figure

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels

# Tried in this order, in points from the marker; the first that overlaps nothing wins.
_OFFSETS: tuple[tuple[int, int], ...] = (
    (5, 3), (5, -9), (-5, 3), (-5, -9), (0, 8), (0, -14),
    (10, 12), (10, -18), (-10, 12), (-10, -18), (18, 0), (-18, 0),
)  # fmt: skip
_MARKER_HALF = 3  # pixels: half the side of the box a marker is taken to fill
_OUTSIDE_COST = 4  # leaving the axes costs more than overlapping: a clipped label is unreadable


def _overlap(a: Box, b: Box) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def _annotate(ax: Any, text: str, xy: tuple[float, float], offset: tuple[int, int]) -> Any:
    dx = offset[0]
    return ax.annotate(
        text,
        xy,
        xytext=offset,
        textcoords="offset points",
        fontsize=7,
        ha="left" if dx > 0 else "right" if dx < 0 else "center",
    )


def _best_offset(
    ax: Any, renderer: Any, point: tuple[float, float, str], obstacles: Sequence[Box], frame: Box
) -> tuple[tuple[int, int], Box]:
    """The offset whose label box overlaps the obstacles (and leaves the axes) least."""
    x, y, text = point
    best_cost, best = math.inf, (_OFFSETS[0], (0.0, 0.0, 0.0, 0.0))
    for offset in _OFFSETS:
        annotation = _annotate(ax, text, (x, y), offset)
        b = annotation.get_window_extent(renderer)
        annotation.remove()
        box = (b.x0, b.y0, b.x1, b.y1)
        cost = sum(_overlap(box, o) for o in obstacles)
        cost += _OUTSIDE_COST * ((b.x1 - b.x0) * (b.y1 - b.y0) - _overlap(box, frame))
        if cost < best_cost:
            best_cost, best = cost, (offset, box)
        if cost == 0:
            break
    return best


def place_labels(fig: Figure, ax: Any, points: Sequence[tuple[float, float, str]]) -> None:
    """Labels each point, choosing per label the first offset that overlaps nothing placed yet."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    a = ax.get_window_extent(renderer)
    frame = (a.x0, a.y0, a.x1, a.y1)
    markers = []
    for x, y, _ in points:
        px, py = ax.transData.transform((x, y))
        markers.append((px - _MARKER_HALF, py - _MARKER_HALF, px + _MARKER_HALF, py + _MARKER_HALF))
    placed: list[Box] = []
    # Best first: they sit at the top, where labels crowd most and matter most.
    for index in sorted(range(len(points)), key=lambda i: -points[i][1]):
        others = [m for j, m in enumerate(markers) if j != index]
        offset, box = _best_offset(ax, renderer, points[index], [*placed, *others], frame)
        _annotate(ax, points[index][2], points[index][:2], offset)
        placed.append(box)


def save(fig: Figure, path: Path) -> None:
    """Writes the figure as a png and frees it."""
    # A Figure with its own Agg canvas: no pyplot, no global figure registry, nothing to close.
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.savefig(path, format="png")
    fig.clear()


def palette(n: int) -> list[Any]:
    if n <= 10:
        return [f"C{i}" for i in range(n)]
    import matplotlib

    return [matplotlib.colormaps["tab20"](i % 20) for i in range(n)]


def panels(n: int, width: float, height: float, right: float) -> tuple[Figure, list[Any]]:
    """A figure of n panels, one above the other; margins fixed in inches, because label
    placement measures pixel positions, which must not move afterwards."""
    total = n * height
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, total), dpi=100)
    axes = list(np.atleast_1d(fig.subplots(n, 1)))
    bottom, top, gap = 0.7, 0.9, 1.0  # inches: x label; suptitle and title; between panels
    panel = (total - bottom - top - (n - 1) * gap) / n
    fig.subplots_adjust(
        left=0.8 / width,
        right=right,
        bottom=bottom / total,
        top=1 - top / total,
        hspace=gap / panel,
    )
    return fig, axes


def log_limits(ax: Any, xs: Sequence[float], lows: Sequence[float], highs: Sequence[float]) -> None:
    """Log x and y limits with margins, so labels at the edges stay inside the axes."""
    ax.set_xscale("log")
    ax.set_xlim(min(xs) / 1.6, max(xs) * 2.2)
    span = max(max(highs) - min(lows), 0.02)
    ax.set_ylim(min(lows) - 0.08 * span, max(highs) + 0.12 * span)
    ax.grid(alpha=0.3, which="both")


def draw_matrix(ax: Any, matrix: np.ndarray, names: Sequence[str]) -> None:
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
