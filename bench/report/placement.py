"""Point labels on a scatter plot that overlap neither each other nor the markers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
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
