"""The dry run's whole-sweep arithmetic (bench/dryrun.py) on recorded numbers: no TensorFlow,
no timing."""

import pytest

from backbones import get
from bench.config import RunConfig
from bench.dryrun import Speeds, Workload, whole_runs

WORK = Workload(n_train=800, n_test=200, image_shape=(64, 64, 3), n_classes=10, source="s")
SPEEDS = Speeds(head_first_s=0.5, head_per_value_s=1e-8, start_up_s=4.0,
                baselines={"scratch-cnn": (1.5, 1e-3)})


def _row(name, extract, warm, tf_rate=50.0, build=2.0):
    return dict(backbone=name, predicted_extract_s=extract, predicted_warm_s=warm,
                predicted_build_s=build, tensorflow_images_per_s=tf_rate)


def test_the_head_trains_per_seed_on_one_extraction():
    spec = get("DenseNet121")  # 1024 features
    (one,) = whole_runs([_row("DenseNet121", 40.0, 30.0)], [spec], RunConfig(), WORK, SPEEDS)
    (three,) = whole_runs([_row("DenseNet121", 40.0, 30.0)], [spec], RunConfig(seeds=3), WORK,
                          SPEEDS)
    epoch = 1e-8 * (800 + 200) * 1024
    assert one["train_s"] == pytest.approx(0.5 + 29 * epoch)  # the first epoch, then 29
    assert three["train_s"] == pytest.approx(3 * one["train_s"])
    # extraction is paid once, whatever the seeds; the child's start-up once per entry
    assert three["total_s"] - three["train_s"] == pytest.approx(4.0 + 40.0)
    assert three["total_warm_s"] - three["train_s"] == pytest.approx(4.0 + 30.0)


def test_epochs_and_the_holdout_split_set_the_samples_per_epoch():
    spec = get("DenseNet121")
    rows = [_row("DenseNet121", 40.0, 30.0)]
    lesson = whole_runs(rows, [spec], RunConfig(epochs=10), WORK, SPEEDS)[0]["train_s"]
    # holdout: 20 % of the 800 training images are watched, the test file is not
    holdout = whole_runs(rows, [spec], RunConfig(epochs=10, protocol="holdout",
                                                 val_fraction=0.2), WORK, SPEEDS)[0]["train_s"]
    assert lesson == pytest.approx(0.5 + 9 * 1e-8 * 1000 * 1024)
    assert holdout == pytest.approx(0.5 + 9 * 1e-8 * 800 * 1024)


def test_end_to_end_runs_the_backbone_in_every_epoch_and_extracts_nothing():
    spec = get("DenseNet121")
    (row,) = whole_runs([_row("DenseNet121", 40.0, 30.0, tf_rate=50.0, build=2.0)], [spec],
                        RunConfig(end_to_end=True, epochs=5, seeds=2), WORK, SPEEDS)
    assert row["train_s"] == pytest.approx(2 * (2.0 + 5 * 1000 / 50.0))
    assert row["total_s"] == row["total_warm_s"] == pytest.approx(4.0 + row["train_s"])


def test_a_baseline_trains_on_images_and_a_backbone_that_cannot_run_costs_nothing():
    rows = [dict(backbone="scratch-cnn", predicted_extract_s=0.0, predicted_warm_s=0.0),
            dict(backbone="InceptionV3", predicted_extract_s=None, predicted_warm_s=None)]
    specs = [get("scratch-cnn"), get("InceptionV3")]
    baseline, failed = whole_runs(rows, specs, RunConfig(epochs=30), WORK, SPEEDS)
    assert baseline["train_s"] == pytest.approx(1.5 + 29 * 1e-3 * 1000)
    assert baseline["total_s"] == pytest.approx(4.0 + baseline["train_s"])
    assert failed["total_s"] is None and failed["train_s"] is None
