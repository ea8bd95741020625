"""plots/: the cost plot and its Pareto front, intervals on the size plot, stale files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import make_run
from matplotlib.figure import Figure

from bench.report import plots
from bench.report.ranking import tables
from bench.result import RunResult

LABELS = [i % 3 for i in range(40)]


def run(backbone: str, accuracy: float, infer_ms: float | None, **fields) -> RunResult:
    """An ok lesson run right on the first `accuracy` share of 40 images."""
    right = np.arange(40) < round(accuracy * 40)
    predictions = np.where(right, LABELS, [(y + 1) % 3 for y in LABELS]).tolist()
    defaults = dict(
        family=backbone[:3], weights="imagenet", params_total=int(1e6 * (infer_ms or 1)),
        test_accuracy=accuracy, n_test=40,
    )  # fmt: skip
    return make_run(backbone, "ok", labels=LABELS, predictions=predictions, infer_ms=infer_ms,
                    **{**defaults, **fields})


def sweep() -> list[RunResult]:
    return [
        run("Big", 0.9, 20.0),
        run("Fast", 0.85, 2.0),
        run("Slow", 0.6, 30.0),  # beaten on both by Big: not on the front
        run("Tiny", 0.5, 1.0),
        run("dense", 0.4, None, kind="baseline", weights=None),
    ]


@pytest.mark.parametrize(
    ("points", "front"),
    [
        ([(1, 0.5), (2, 0.7), (3, 0.6), (4, 0.9), (4, 0.8), (0.5, 0.4)], [5, 0, 1, 3]),
        ([(2, 0.5), (1, 0.5)], [1]),  # as accurate and cheaper
        ([(1, 0.5), (1, 0.5)], [0, 1]),  # equal points beat neither
        ([], []),
    ],
)
def test_pareto_front_is_exactly_the_non_dominated_points(points, front) -> None:
    assert plots.pareto_front(points) == front


def test_cost_panel_draws_the_front_the_baseline_and_the_recommendation() -> None:
    [table] = tables(sweep())
    fig = Figure()
    ax = fig.subplots()
    plots._cost_panel(fig, ax, table)
    [front] = [line for line in ax.lines if str(line.get_label()).startswith("Pareto")]
    assert list(front.get_xdata()) == [1.0, 2.0, 20.0]  # Tiny, Fast, Big; not Slow
    assert [0.4, 0.4] in [[float(y) for y in line.get_ydata()] for line in ax.lines]  # dense
    texts = [t.get_text() for t in ax.texts]
    assert "dense (from scratch)" in texts
    assert "Big (best)" in texts
    chosen = table.recommendation.chosen
    assert chosen is None or f"{chosen.label} (recommended)" in texts or chosen.label == "Big"


def test_cost_panel_shows_both_stages_of_a_fine_tuned_entry() -> None:
    """The frozen stage at the same inference time (the model is the same), joined to the
    fine-tuned entry by a line: what fine-tuning added; a frozen table draws none."""
    stages = dict(fine_tune=True, route="fine-tuned", stage="fine-tuned")
    [table] = tables([run("Big", 0.9, 20.0, frozen_accuracy=0.8, **stages),
                      run("Fast", 0.85, 2.0, frozen_accuracy=0.6, **stages)])
    fig = Figure()
    ax = fig.subplots()
    plots._cost_panel(fig, ax, table)
    [frozen] = [c for c in ax.collections if str(c.get_label()).startswith("frozen stage")]
    assert sorted(map(tuple, frozen.get_offsets().tolist())) == [(2.0, 0.6), (20.0, 0.8)]
    joins = sorted((list(line.get_xdata()), list(line.get_ydata())) for line in ax.lines
                   if len(line.get_xdata()) == 2 and line.get_xdata()[0] == line.get_xdata()[1])
    assert joins == [([2.0, 2.0], [0.6, 0.85]), ([20.0, 20.0], [0.8, 0.9])]
    [frozen_table] = tables(sweep())
    ax = Figure().subplots()
    plots._cost_panel(fig, ax, frozen_table)
    assert not [c for c in ax.collections if str(c.get_label()).startswith("frozen stage")]


def test_write_plots_writes_the_cost_plot_per_table(tmp_path: Path) -> None:
    second = [
        RunResult.from_dict({**r.to_dict(), "configuration": {**r.configuration,
                                                              "image_size": 224}})
        for r in sweep()
    ]
    written = plots.write_plots(tmp_path, tables([*sweep(), *second]))
    assert written.cost == tmp_path / "plots" / "cost.png"
    data = written.cost.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 5_000
    assert written.files[-2:] == [written.cost, written.summary]
    assert len(written.history) == 10  # every entry of both tables
    assert _png_size(written.cost) == (1200, 1300)  # two panels of 6.5 inches, one per table


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[16:24]
    return int.from_bytes(header[:4], "big"), int.from_bytes(header[4:], "big")


def test_no_cost_plot_without_inference_times_and_a_stale_one_goes(tmp_path: Path) -> None:
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "cost.png").write_bytes(b"from an earlier report")
    untimed = [RunResult.from_dict({**r.to_dict(), "infer_ms": None}) for r in sweep()]
    written = plots.write_plots(tmp_path, tables(untimed))
    assert written.cost is None and written.summary is not None
    assert not (tmp_path / "plots" / "cost.png").exists()


def test_summary_bars_are_the_95_percent_intervals() -> None:
    [table] = tables(sweep())
    entries, points, _ = plots._size_points(table.entries)
    bars = plots._bars(entries, [p[1] for p in points])
    big = entries.index(next(e for e in entries if e.label == "Big"))
    low, high = plots.interval(entries[big])
    assert bars[:, big] == pytest.approx([0.9 - low, high - 0.9])
    assert low < 0.9 < high
