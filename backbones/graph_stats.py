"""What each registry backbone costs per image, known without building it: its forward graph's
FLOPs, activations and operations at 160 px (the lesson's size) and at its native size, as
bench.engine.cost.graph_stats counts them (weights=None, pooling='max', one image).

Building and tracing a backbone takes seconds (the largest ones ten); a dry run of --all would
spend minutes on it. The counts are stored in graph_stats.json, written by
``python -m bench.engine.cost --write-stats`` (a few minutes on two cores), and
tests/test_graph_stats.py holds a sample of them equal to a fresh count under the installed
Keras.

At a side that is not stored, FLOPs and activations are interpolated from the two stored
sides (per_pixel), operations and parameters do not change; tests/test_graph_stats.py bounds
the error against fresh counts (within 25 % from 32 px up; under 5 % at most sides that are
multiples of 32, where every stride divides the side).
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

STATS_FILE = Path(__file__).with_name("graph_stats.json")
STORED_SIDE = 160  # the lesson's size, bench's default; each backbone's native side is stored too
# the counts that grow with the image's area; ops and params do not
_PER_PIXEL = ("flops", "activations", "called")


@functools.cache
def _table() -> dict[str, dict[str, dict[str, int]]]:
    try:
        return json.loads(STATS_FILE.read_text())
    except (OSError, ValueError):  # a damaged or missing table: every backbone is counted
        return {}


def stored_sides(name: str) -> tuple[int, ...]:
    """The sides `name`'s counts are stored at (none for a row the table does not know)."""
    return tuple(sorted(int(side) for side in _table().get(name, {})))


def stored_stats(name: str, size: int) -> dict[str, int] | None:
    """GraphStats fields of backbone `name` on one size x size image: stored, or else
    interpolated from the stored sides (per_pixel); None when the table does not know the
    backbone."""
    sides = stored_sides(name)
    if not sides:
        return None
    table = _table()[name]
    if size in sides:
        return dict(table[str(size)])
    nearest = sorted(sides, key=lambda side: abs(math.log(side / size)))[:2]
    counts = dict(table[str(nearest[0])])
    for key in _PER_PIXEL:
        if key in counts:
            counts[key] = per_pixel(size, [(side, table[str(side)][key]) for side in nearest])
    return counts


def per_pixel(size: int, known: list[tuple[int, int]]) -> int:
    """A per-pixel count at `size` from (side, count) pairs. With two sides, count = a s^2 +
    b s through both: the area term, and the border term of unpadded ('valid') convolutions,
    which make a count grow faster than the area (InceptionV3: x3.8 from 160 to 299, where the
    area grows x3.5). With one, or where that line turns negative, the area alone."""
    (s1, c1), *rest = known
    area = c1 * (size / s1) ** 2
    if not rest:
        return round(area)
    (s2, c2), = rest
    slope = (c2 / s2 - c1 / s1) / (s2 - s1)  # count / side is linear in the side
    fitted = size * (c1 / s1 + slope * (size - s1))
    return round(fitted if fitted > 0 else area)
