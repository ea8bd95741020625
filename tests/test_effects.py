"""What pretraining bought and what the lesson protocol inflates, on entries whose per-image
results are known."""

from __future__ import annotations

import numpy as np
import pytest

from bench.report.effects import TEST, inflation, paired_difference, pretraining
from bench.report.model import Entry, Table
from bench.result import RunResult

LABELS = [i % 3 for i in range(60)]


def run(backbone: str, right: np.ndarray | None, **fields) -> RunResult:
    """An ok run whose predictions are right exactly where `right` is True."""
    stored = {}
    if right is not None:
        wrong = [(y + 1) % 3 for y in LABELS]
        stored = dict(labels=LABELS, predictions=np.where(right, LABELS, wrong).tolist())
    fields = {"weights": "imagenet", "test_accuracy": 0.5, **fields}
    return RunResult(backbone=backbone, status="ok", **stored, **fields)


def entry(*runs: RunResult) -> Entry:
    return Entry(list(runs), label=runs[0].backbone)


def table(*entries: Entry, protocol: str = "lesson", **knobs) -> Table:
    configuration = {"protocol": protocol, "val_fraction": 0.2, "image_size": 160, **knobs}
    return Table("key", configuration, f"{protocol} table", protocol, list(entries), "Holm", None)


ALL = np.ones(60, dtype=bool)
HALF = np.arange(60) % 2 == 0


def test_pretrained_right_where_random_is_wrong_shows_a_clear_gain() -> None:
    pretrained = entry(run("M", ALL, seed=1), run("M", ALL, seed=2))
    random = entry(
        run("M", HALF, seed=1, weights="random"), run("M", ~HALF, seed=2, weights="random")
    )
    [effect] = pretraining([table(pretrained, random)])
    assert (effect.backbone, effect.title, effect.test) == ("M", "lesson table", TEST)
    assert effect.treated is pretrained and effect.control is random
    assert effect.difference == pytest.approx(0.5)  # averaged over the two seeds
    assert 0 < effect.ci_low <= 0.5 <= effect.ci_high
    assert effect.p_value < 0.001


def test_identical_entries_differ_by_nothing() -> None:
    same = entry(run("M", HALF))
    [effect] = pretraining([table(same, entry(run("M", HALF, weights="random")))])
    assert (effect.difference, effect.ci_low, effect.ci_high, effect.p_value) == (0, 0, 0, 1)


def test_noisy_difference_interval_contains_zero_and_p_is_large() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.random(60) < 0.6, rng.random(60) < 0.6
    difference, low, high, p = paired_difference(a.astype(float), b.astype(float))
    assert difference == pytest.approx(a.mean() - b.mean())
    assert low < 0 < high and p > 0.05


def test_each_pretrained_backbone_is_compared_with_the_best_baseline() -> None:
    best_baseline = entry(run("dense", HALF, kind="baseline", weights=None))
    worse_baseline = entry(run("cnn", ~ALL, kind="baseline", weights=None))
    found = pretraining([table(entry(run("M", ALL)), best_baseline, worse_baseline)])
    assert [(e.backbone, e.control) for e in found] == [("M", best_baseline)]
    assert found[0].difference == pytest.approx(0.5)


def test_no_effect_without_predictions_on_the_same_images() -> None:
    shifted = run("M", ALL, weights="random")
    shifted = RunResult.from_dict({**shifted.to_dict(), "labels": LABELS[1:] + LABELS[:1]})
    assert pretraining([table(entry(run("M", ALL)), entry(shifted))]) == []
    assert (
        pretraining([table(entry(run("M", None)), entry(run("M", HALF, weights="random")))]) == []
    )
    # a random backbone is not a pretrained one: nothing to compare it with
    assert pretraining([table(entry(run("M", HALF, weights="random")))]) == []


def test_inflation_compares_the_same_experiment_under_both_protocols() -> None:
    lesson = entry(run("M", None, test_accuracy=0.8), run("M", None, test_accuracy=0.7, seed=2))
    holdout = entry(run("M", None, protocol="holdout", test_accuracy=0.6))
    other = entry(run("M", None, protocol="holdout", test_accuracy=0.1))
    found = inflation(
        [
            table(lesson),
            table(holdout, protocol="holdout", val_fraction=0.1),  # the protocol's own knob
            table(other, protocol="holdout", image_size=224),  # another experiment
        ]
    )
    assert len(found) == 1
    [effect] = found
    assert (effect.backbone, effect.lesson, effect.holdout) == ("M", lesson, holdout)
    assert effect.lesson_accuracy == pytest.approx(0.75)
    assert effect.holdout_accuracy == pytest.approx(0.6)
    assert effect.inflation == pytest.approx(0.15)


def test_no_inflation_for_a_model_under_one_protocol_only() -> None:
    lesson = table(entry(run("M", None, test_accuracy=0.8)))
    holdout = table(
        entry(run("N", None, protocol="holdout", test_accuracy=0.6)), protocol="holdout"
    )
    assert inflation([lesson, holdout]) == []
