"""This machine's speeds (bench/engine/calibration.py): measured once, remembered per machine
and versions, measured again when the entry is malformed or the machine another."""

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


def test_an_entry_is_measured_once_and_remembered(tmp_path):
    measure, calls = _counting({"seconds": 2.5})
    first = calibration.remembered(tmp_path, "k", ("seconds",), measure, "start-up")
    second = calibration.remembered(tmp_path, "k", ("seconds",), measure, "start-up")
    assert first == ({"seconds": 2.5}, False) and second == ({"seconds": 2.5}, True)
    assert len(calls) == 1
    # without a cache folder nothing is remembered
    calibration.remembered(None, "k", ("seconds",), measure, "start-up")
    assert len(calls) == 2


@pytest.mark.parametrize("bad", [{"seconds": "fast"}, {"seconds": -1}, {"seconds": None},
                                 {"other": 1}, [1, 2], {"seconds": True}])
def test_a_malformed_entry_is_one_warning_and_measured_again(tmp_path, bad):
    remember_json(tmp_path / CALIBRATIONS_FILE, "k", bad)
    measure, calls = _counting({"seconds": 3.0})
    with pytest.warns(UserWarning, match=f"{CALIBRATIONS_FILE}: the start-up calibration is "
                                         "malformed; measured again"):
        entry, known = calibration.remembered(tmp_path, "k", ("seconds",), measure, "start-up")
    assert (entry, known, len(calls)) == ({"seconds": 3.0}, False, 1)
    assert read_json_store(tmp_path / CALIBRATIONS_FILE)["k"] == {"seconds": 3.0}


def test_a_damaged_calibrations_file_is_one_warning_and_measured_again(tmp_path):
    measure, calls = _counting({"seconds": 2.5})
    calibration.remembered(tmp_path, "k", ("seconds",), measure, "start-up")
    path = tmp_path / CALIBRATIONS_FILE
    path.write_text(path.read_text().replace("2.5", "9.5"))  # a flipped digit
    with pytest.warns(UserWarning, match="is damaged"):
        entry = calibration.remembered(tmp_path, "k", ("seconds",), measure, "start-up")
    assert entry == ({"seconds": 2.5}, False) and len(calls) == 2


def test_a_child_is_timed_once_per_machine(tmp_path, monkeypatch):
    entry, known = calibration.start_up(tmp_path)
    assert entry["seconds"] > 0 and not known  # a Python that imported TensorFlow, timed
    assert calibration.start_up(tmp_path) == (entry, True)
    monkeypatch.setattr(calibration, "machine_label", lambda: "another CPU x64")
    monkeypatch.setattr(calibration.subprocess, "run", lambda *a, **k: None)
    assert calibration.start_up(tmp_path)[1] is False  # another machine measures again


def test_extraction_calibration_is_remembered_with_its_timings(tmp_path, monkeypatch):
    recorded = cost.Calibration(0.004, 0.0007, 0.0006, (("VGG16", 16, 1.3, 2.7),),
                                "tensorflow", 0.23, 0.0005, 0.03)
    monkeypatch.setattr(cost, "calibrate", lambda *a, **k: recorded)
    config = RunConfig(image_size=32)
    assert calibration.extraction(config, (64, 64, 3), "tensorflow", tmp_path) == (
        recorded, False)
    monkeypatch.setattr(cost, "calibrate", lambda *a, **k: pytest.fail("measured again"))
    assert calibration.extraction(config, (64, 64, 3), "tensorflow", tmp_path) == (
        recorded, True)
    # another size is another measurement
    monkeypatch.setattr(cost, "calibrate", lambda *a, **k: recorded)
    assert not calibration.extraction(RunConfig(image_size=64), (64, 64, 3), "tensorflow",
                                      tmp_path)[1]


def test_training_calibrations_time_a_first_and_a_steady_epoch(tmp_path):
    config = RunConfig(image_size=32)
    head, _ = calibration.head_training(10, config, tmp_path)
    # the first epoch traces: it costs more than a steady epoch of the same samples
    steady = head["per_value_s"] * calibration.HEAD_WIDTH * calibration.HEAD_SAMPLES * 1.25
    assert head["first_s"] > steady > 0
    (dense,) = [b for b in baselines() if b.name == "dense"]
    fit, _ = calibration.baseline_training(dense, (16, 16, 3), 3, config, tmp_path)
    assert fit["first_s"] > fit["per_image_s"] * calibration.BASELINE_SAMPLES > 0
