"""What pretraining bought, what choosing the epoch on the test file flatters, and the probes
against the head: paired differences on entries whose per-image results are known."""

from __future__ import annotations

import numpy as np
from conftest import make_run

from bench.report.effects import inflation, pretraining, probes
from bench.report.ranking import tables

LABELS = [i % 3 for i in range(90)]
ALL = np.ones(90, dtype=bool)
HALF = np.arange(90) % 2 == 0


def predictions(right: np.ndarray) -> list[int]:
    """Right exactly where `right` is True."""
    return np.where(right, LABELS, [(y + 1) % 3 for y in LABELS]).tolist()


def run(backbone: str, right: np.ndarray, seed: int = 2, **fields):
    return make_run(backbone, labels=LABELS, predictions=predictions(right), seed=seed,
                    test_accuracy=float(np.mean(right)), n_classes=3, infer_ms=1.0,
                    params_total=1000, **fields)


def test_pretrained_right_where_random_is_wrong_shows_a_clear_gain() -> None:
    runs = [run("M", ALL, seed=s) for s in (2, 3, 4)]
    runs += [run("M", HALF, seed=s, weights="random") for s in (2, 3, 4)]
    (table,) = tables(runs)
    (effect,) = pretraining([table])
    assert effect.treated.first.weights == "imagenet" and effect.control.random_weights
    d = effect.difference
    assert d.estimate == 0.5 and 0 < d.low < 0.5 < d.high and d.p_value < 0.01
    # the table's own resampling: the same numbers as its intervals and verdicts use
    again = table.difference(effect.treated, effect.control)
    assert (again.low, again.high, again.p_value) == (d.low, d.high, d.p_value)


def test_a_pretrained_backbone_is_compared_with_the_best_baseline_too() -> None:
    runs = [run("M", ALL, seed=s) for s in (2, 3)]
    runs += [run("dense", HALF, seed=s, kind="baseline") for s in (2, 3)]
    runs += [run("scratch-cnn", np.arange(90) < 30, seed=s, kind="baseline") for s in (2, 3)]
    (effect,) = pretraining(tables(runs))
    assert effect.control.first.backbone == "dense"  # the better baseline
    assert effect.difference.estimate == 0.5


def test_no_difference_is_no_gain() -> None:
    runs = [run("M", HALF, seed=s) for s in (2, 3)]
    runs += [run("M", HALF, seed=s, weights="random") for s in (2, 3)]
    (effect,) = pretraining(tables(runs))
    d = effect.difference
    assert d.estimate == 0 and d.low <= 0 <= d.high and d.p_value == 1


def _holdout(backbone: str, right: np.ndarray, chosen: np.ndarray, seed: int):
    return run(backbone, right, seed=seed, protocol="holdout",
               test_chosen_predictions=predictions(chosen), test_chosen_epoch=3)


def test_choosing_the_epoch_on_the_test_file_is_measured_inside_the_run() -> None:
    # the epoch the test file would choose is right on 10 more images than the holdout's
    better = HALF | (np.arange(90) < 10)
    runs = [_holdout("M", HALF, better, seed=s) for s in (2, 3, 4)]
    (found,) = inflation(tables(runs))
    assert found.chosen_on_holdout == np.mean(HALF)
    assert found.chosen_on_test == np.mean(better)
    d = found.difference
    assert d.estimate == np.mean(better) - np.mean(HALF) and 0 < d.low <= d.estimate <= d.high


def test_no_inflation_without_the_recorded_test_epochs() -> None:
    runs = [run("M", HALF, seed=s, protocol="holdout") for s in (2, 3)]
    assert inflation(tables(runs)) == []
    lesson = [run("M", HALF, seed=s, test_chosen_predictions=predictions(ALL)) for s in (2, 3)]
    assert inflation(tables(lesson)) == []  # lesson runs choose on the test file anyway


def test_a_probe_is_compared_with_its_head_on_the_same_images() -> None:
    runs = [run("M", HALF, seed=s, probes={"linear": {"C": 1.0, "predictions": predictions(ALL)}})
            for s in (2, 3)]
    (probe,) = probes(tables(runs))
    assert probe.name == "linear" and probe.accuracy == 1.0
    assert probe.low <= 1.0 <= probe.high
    assert probe.difference.estimate == 0.5 and probe.difference.low > 0
