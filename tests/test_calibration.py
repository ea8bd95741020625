"""This machine's speeds (bench/engine/calibration.py): measured once, remembered per machine
and versions, measured again when the entry is malformed, the machine another, or this machine
runs the reference workload at another speed than when the entry was measured."""

import math

import pytest

from backbones import baselines
from bench.cache import CALIBRATIONS_FILE
from bench.config import RunConfig
from bench.engine import calibration, cost
from bench.fsio import read_json_store, remember_json


def _counting(value: dict):
    calls = []

    def measure():
        calls.append(1)
        return dict(value)

    return measure, calls


@pytest.fixture
def reference(monkeypatch):
    """Sets this machine's reference seconds now (recorded numbers: nothing is timed)."""
    def set_now(seconds: float) -> None:
        monkeypatch.setattr(calibration, "reference_seconds", lambda: seconds)

    set_now(0.034)
    return set_now


def test_an_entry_is_measured_once_and_remembered(tmp_path, reference):
    measure, calls = _counting({"seconds": 2.5})
    first = calibration.remembered(tmp_path, "k", ("seconds",), measure, "start-up")
    second = calibration.remembered(tmp_path, "k", ("seconds",), measure, "start-up")
    stored = {"seconds": 2.5, "reference_s": 0.034}
    assert first == (stored, "measured") and second == (stored, "remembered")
    assert len(calls) == 1
    # without a cache folder nothing is remembered
    calibration.remembered(None, "k", ("seconds",), measure, "start-up")
    assert len(calls) == 2


@pytest.mark.parametrize("bad", [{"seconds": "fast"}, {"seconds": -1}, {"seconds": None},
                                 {"other": 1}, [1, 2], {"seconds": True}])
def test_a_malformed_entry_is_one_warning_and_measured_again(tmp_path, bad, reference):
    remember_json(tmp_path / CALIBRATIONS_FILE, "k", bad)
    measure, calls = _counting({"seconds": 3.0})
    with pytest.warns(UserWarning, match=f"{CALIBRATIONS_FILE}: the start-up calibration is "
                                         "malformed; measured again"):
        entry, known = calibration.remembered(tmp_path, "k", ("seconds",), measure, "start-up")
    assert (entry["seconds"], known, len(calls)) == (3.0, "measured", 1)
    assert read_json_store(tmp_path / CALIBRATIONS_FILE)["k"] == entry


@pytest.mark.parametrize(("now", "how"), [
    (0.034, "remembered"), (0.038, "remembered"), (0.030, "remembered"),  # within 15 %
    (0.051, "measured again: this machine runs 1.50x slower than when it was remembered"),
    (0.026, "measured again: this machine runs 1.31x faster than when it was remembered"),
])
def test_an_entry_is_measured_again_when_the_machine_runs_at_another_speed(
        tmp_path, reference, now, how):
    measure, calls = _counting({"seconds": 2.5})
    calibration.remembered(tmp_path, "k", ("seconds",), measure, "start-up")  # at 0.034 s
    reference(now)
    entry, found = calibration.remembered(tmp_path, "k", ("seconds",), measure, "start-up")
    assert found == how and len(calls) == (1 if how == "remembered" else 2)
    # what is measured again carries today's reference, and is remembered at today's speed
    assert entry["reference_s"] == (0.034 if how == "remembered" else now)
    assert calibration.remembered(tmp_path, "k", ("seconds",), measure, "start-up")[1] == (
        "remembered")


def test_an_entry_written_without_a_reference_is_measured_again(tmp_path, reference):
    remember_json(tmp_path / CALIBRATIONS_FILE, "k", {"seconds": 2.5})
    measure, calls = _counting({"seconds": 3.0})
    assert calibration.remembered(tmp_path, "k", ("seconds",), measure, "start-up") == (
        {"seconds": 3.0, "reference_s": 0.034}, "measured")
    assert calibration.speed_change(None, 0.034) == math.inf
    assert calibration.speed_change(0.034, 0.034 * 1.14) is None


def test_a_slower_machine_predicts_slower_extraction_from_the_same_cache(tmp_path, reference,
                                                                         monkeypatch):
    """A cache folder calibrated on a fast machine, read on one 1.5x slower (the same label):
    the extraction calibration is measured again there, and its prediction is 1.5x longer."""
    fast = cost.Calibration(0.0024, 0.0005, 0.0006, (("VGG16", 16, 0.78, 1.9),), "tensorflow",
                            0.2, 0.0005, 0.03)
    slow = cost.Calibration(*(v * 1.5 for v in (0.0024, 0.0005, 0.0006)),
                            (("VGG16", 16, 1.17, 2.9),), "tensorflow", 0.3, 0.00075, 0.045)
    stats = cost.GraphStats(flops=int(2.9e9), activations=9_000_000, ops=430, params=7_000_000)
    config = RunConfig(image_size=160)
    monkeypatch.setattr(cost, "calibrate", lambda *a, **k: fast)
    before, _ = calibration.extraction(config, (64, 64, 3), "tensorflow", tmp_path)
    reference(0.034 * 1.5)
    monkeypatch.setattr(cost, "calibrate", lambda *a, **k: slow)
    after, how = calibration.extraction(config, (64, 64, 3), "tensorflow", tmp_path)
    assert how.startswith("measured again: this machine runs 1.50x slower")
    assert after.predict(stats, 1171) == pytest.approx(1.5 * before.predict(stats, 1171))


def test_a_damaged_calibrations_file_is_one_warning_and_measured_again(tmp_path, reference):
    measure, calls = _counting({"seconds": 2.5})
    calibration.remembered(tmp_path, "k", ("seconds",), measure, "start-up")
    path = tmp_path / CALIBRATIONS_FILE
    path.write_text(path.read_text().replace("2.5", "9.5"))  # a flipped digit
    with pytest.warns(UserWarning, match="is damaged"):
        entry = calibration.remembered(tmp_path, "k", ("seconds",), measure, "start-up")
    assert entry == ({"seconds": 2.5, "reference_s": 0.034}, "measured") and len(calls) == 2


def test_a_child_is_timed_once_per_machine(tmp_path, monkeypatch, reference):
    entry, how = calibration.start_up(tmp_path)
    assert entry["seconds"] > 0 and how == "measured"  # a Python that imported TensorFlow
    assert calibration.start_up(tmp_path) == (entry, "remembered")
    monkeypatch.setattr(calibration, "machine_label", lambda: "another CPU x64")
    monkeypatch.setattr(calibration.subprocess, "run", lambda *a, **k: None)
    assert calibration.start_up(tmp_path)[1] == "measured"  # another machine measures again


def test_extraction_calibration_is_remembered_with_its_timings(tmp_path, monkeypatch,
                                                              reference):
    recorded = cost.Calibration(0.004, 0.0007, 0.0006, (("VGG16", 16, 1.3, 2.7),),
                                "tensorflow", 0.23, 0.0005, 0.03)
    monkeypatch.setattr(cost, "calibrate", lambda *a, **k: recorded)
    config = RunConfig(image_size=32)
    assert calibration.extraction(config, (64, 64, 3), "tensorflow", tmp_path) == (
        recorded, "measured")
    monkeypatch.setattr(cost, "calibrate", lambda *a, **k: pytest.fail("measured again"))
    assert calibration.extraction(config, (64, 64, 3), "tensorflow", tmp_path) == (
        recorded, "remembered")
    # another size is another measurement
    monkeypatch.setattr(cost, "calibrate", lambda *a, **k: recorded)
    assert calibration.extraction(RunConfig(image_size=64), (64, 64, 3), "tensorflow",
                                  tmp_path)[1] == "measured"


def test_training_calibrations_time_a_first_and_a_steady_epoch(tmp_path):
    config = RunConfig(image_size=32)
    head, _ = calibration.head_training(10, config, tmp_path)
    # the first epoch traces: it costs more than a steady epoch of the same samples
    steady = head["per_value_s"] * calibration.HEAD_WIDTH * calibration.HEAD_SAMPLES * 1.25
    assert head["first_s"] > steady > 0
    (dense,) = [b for b in baselines() if b.name == "dense"]
    fit, _ = calibration.baseline_training(dense, (16, 16, 3), 3, config, tmp_path)
    assert fit["first_s"] > fit["per_image_s"] * calibration.BASELINE_SAMPLES > 0
