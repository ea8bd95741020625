"""--runtime auto's rule, on recorded numbers (no timing in tests): what it converts, what it
runs, how much it can lose, and what it learns about the machine; and the dry run's cold and
warm predictions, made by the same rule."""

from __future__ import annotations

import numpy as np
import pytest

from bench.engine import cost, runtime_choice, runtime_forecast
from bench.engine.runtime_choice import REGRET, UNCERTAIN, Evidence, decide


def test_a_conversion_dearer_than_the_bet_is_not_tried():
    # DenseNet121 @160 on 1,171 images as a clean clone measured it (2-core EPYC): TensorFlow
    # steady at 29.5 img/s (40 s), the SavedModel conversion 36 s. No speed-up can win that
    # back, and if OpenVINO were no faster the run would lose 90 %.
    assert decide(Evidence(1171, 29.5, None, 36.0, 1.6)) == "tensorflow"
    # the same backbone on 100,000 images: converting is a small bet on a large gain
    assert decide(Evidence(100_000, 29.5, None, 36.0, 1.6)) == "probe"


@pytest.mark.parametrize("name, tf_rate, trace_s, speedup, want", [
    # measured 2026-12-05 (random weights, 160 px, cifar10-ds10's 1,171 images): TensorFlow's
    # probe rate and tracing; the speed-up is the recorded prior. Converting each took 3-5 s.
    ("DenseNet121", 54.1, 2.3, 1.6, "probe"),
    ("ResNet50", 50.8, 1.23, 1.6, "probe"),
    ("EfficientNetB0", 132.3, 1.31, 2.5, "probe"),
    # VGG16: OpenVINO no faster, so nothing is converted however cheap
    ("VGG16", 13.9, 0.5, 1.01, "tensorflow"),
])
def test_recorded_cold_runs(name, tf_rate, trace_s, speedup, want):
    conversion = runtime_choice.conversion_estimate({"trace_s": trace_s}, {})
    assert conversion == pytest.approx(trace_s * runtime_choice.CONVERSION_PER_TRACE)
    assert decide(Evidence(1171, tf_rate, None, conversion, speedup)) == want


def test_timed_rates_decide_and_a_tie_keeps_tensorflow():
    assert decide(Evidence(1171, 54.1, 85.1, 0.0, 1.6)) == "openvino"
    assert decide(Evidence(1171, 54.1, 56.0, 0.0, 1.6)) == "tensorflow"  # 3.5 % faster: a tie
    assert decide(Evidence(1171, 85.0, 54.0, 0.0, 1.6)) == "tensorflow"
    # a remembered rate with the conversion still to pay (its cache was deleted)
    assert decide(Evidence(1171, 54.1, 85.1, 30.0, 1.6)) == "tensorflow"


def _realized(evidence: Evidence, true_speedup: float) -> float:
    """Seconds auto's plan takes when OpenVINO's real speed-up is `true_speedup` and the
    conversion costs what was predicted."""
    tf_s = evidence.images / evidence.tensorflow_rate
    first = decide(evidence)
    if first != "probe":
        return tf_s
    final = decide(Evidence(evidence.images, evidence.tensorflow_rate,
                            evidence.tensorflow_rate * true_speedup, 0.0, evidence.speedup))
    return evidence.conversion_s + (tf_s if final == "tensorflow"
                                    else evidence.images / (evidence.tensorflow_rate
                                                            * true_speedup))


@pytest.mark.parametrize("seed", [0, 1])
def test_auto_loses_at_most_its_bet_and_nothing_when_its_prior_is_right(seed):
    rng = np.random.default_rng(seed)
    for _ in range(5000):
        n, rate = int(rng.integers(100, 200_000)), float(rng.uniform(2, 2000))
        conversion, prior = float(rng.uniform(0.2, 120)), float(rng.uniform(0.5, 8))
        evidence = Evidence(n, rate, None, conversion, prior)
        tf_s = n / rate
        # whatever OpenVINO's real speed: never more than REGRET of TensorFlow's time lost
        for true_speedup in (0.5, 1.0, prior, 8.0):
            assert _realized(evidence, true_speedup) <= (1 + REGRET) * tf_s + 1e-9
        # a right prior and a conversion within the bet: within UNCERTAIN of the better
        if conversion <= REGRET * tf_s:
            best = min(tf_s, conversion + n / (rate * prior))
            assert _realized(evidence, prior) <= best / (1 - UNCERTAIN) + 1e-9


def test_the_machine_is_learnt_from_its_own_measurements():
    assert runtime_choice.speedup_estimate({}, "DenseNet121") == pytest.approx(1.6)
    unknown = runtime_choice.speedup_estimate({}, "NotInTheTable")
    assert unknown == pytest.approx(float(np.median(list(
        runtime_choice.RECORDED_SPEEDUPS.values()))))
    # this machine measured ResNet50 and EfficientNetB0 at 3/4 of the recorded speed-ups:
    # its own numbers for them, the recorded ones scaled by 3/4 for the rest
    machine = {"speedups": {"ResNet50": 1.2, "EfficientNetB0": 1.875}}
    assert runtime_choice.speedup_estimate(machine, "ResNet50") == 1.2
    assert runtime_choice.speedup_estimate(machine, "DenseNet121") == pytest.approx(1.2)
    # a conversion as measured, else tracing times this machine's median ratio
    assert runtime_choice.conversion_estimate({"conversion_s": 7.0, "trace_s": 1.0}, {}) == 7.0
    assert runtime_choice.conversion_estimate(
        {"trace_s": 2.0}, {"conversion_per_trace": [1.5, 3.7, 2.3]}) == pytest.approx(4.6)
    assert runtime_choice.conversion_estimate({}, {}) == 0.0


def test_learning_keeps_ratios_and_speedups_per_machine(tmp_path, monkeypatch):
    runtime_choice._learn(tmp_path, {"conversion_s": 4.6, "trace_s": 2.0},
                          {"tensorflow": 50.0, "openvino": 80.0}, label="DenseNet121")
    runtime_choice._learn(tmp_path, {"conversion_s": 3.0, "trace_s": 1.0}, {"tensorflow": 9.0},
                          label="ResNet50")
    machine = runtime_choice.machine_memory(tmp_path)
    assert machine["conversion_per_trace"] == [2.3, 3.0]
    assert machine["speedups"] == {"DenseNet121": 1.6}
    # another machine (another CPU) starts from the recorded numbers
    monkeypatch.setattr(runtime_choice, "machine_label", lambda: "another CPU x64")
    assert runtime_choice.machine_memory(tmp_path) == {}


def _calibrations(ov_per_image: float) -> dict[str, cost.Calibration]:
    """TensorFlow at 1 ms per MFLOP-ish; OpenVINO `ov_per_image` of it per image."""
    tf = cost.Calibration(seconds_per_gflop=1.0, seconds_per_mvalue=0.0,
                          trace_seconds_per_op=0.002, runtime="tensorflow")
    ov = cost.Calibration(seconds_per_gflop=ov_per_image, seconds_per_mvalue=0.0,
                          trace_seconds_per_op=0.0005, runtime="openvino")
    return {"tensorflow": tf, "openvino": ov}


@pytest.mark.parametrize("n_images, cold, warm", [
    (1_000, "tensorflow", "openvino"),  # converting costs more than OpenVINO saves once
    (200_000, "openvino", "openvino"),
])
def test_the_dry_run_predicts_cold_and_warm_as_auto_chooses(n_images, cold, warm):
    stats = cost.GraphStats(flops=int(0.01e9), activations=0, ops=1000)  # 0.01 s per image
    machine = {"speedups": {"DenseNet121": 2.0}}  # OpenVINO measured 2x here
    # tracing 2 s, conversion 2.5 x 2 s = 5 s: half of TensorFlow's 10 s for 1,000 images;
    # TensorFlow's rate remembered from a run, so the choice is auto's exactly
    row = runtime_forecast.predict_runtimes("DenseNet121", stats, n_images, _calibrations(0.5),
                                            {"rates": {"tensorflow": 100.0}}, machine)
    tf_s = 2.0 + n_images * 0.01
    assert row["predicted_tensorflow_s"] == pytest.approx(tf_s)
    assert (row["runtime"], row["warm_runtime"]) == (cold, warm)
    assert row["predicted_warm_s"] == pytest.approx(0.5 + n_images * 0.005)
    want_cold = tf_s if cold == "tensorflow" else 5.0 + 0.5 + n_images * 0.005
    assert row["predicted_extract_s"] == pytest.approx(want_cold)
    assert row["predicted_warm_s"] <= row["predicted_extract_s"] <= tf_s


def test_a_close_call_predicts_the_mean_of_both_outcomes():
    """TensorFlow's rate from the model, within MODEL_UNCERTAINTY of what auto's probe will
    read: at 1,000 images the conversion (5 s) is just within half of TensorFlow's 10 s at a
    rate 15 % lower and beyond it at the model's, so either runtime may run; far from the
    threshold the prediction is the one outcome."""
    stats = cost.GraphStats(flops=int(0.01e9), activations=0, ops=1000)
    machine = {"speedups": {"DenseNet121": 2.0}}
    close = runtime_forecast.predict_runtimes("DenseNet121", stats, 1_000, _calibrations(0.5),
                                              {}, machine)
    tensorflow, openvino = 2.0 + 10.0, 5.0 + 0.5 + 5.0  # the probe converts, OpenVINO runs
    assert close["runtime"] == "tensorflow"
    assert close["predicted_extract_s"] == pytest.approx((tensorflow + openvino) / 2)
    assert "a close call cold" in close["note"]
    clear = runtime_forecast.predict_runtimes("DenseNet121", stats, 200_000,
                                              _calibrations(0.5), {}, machine)
    assert clear["predicted_extract_s"] == pytest.approx(5.0 + 0.5 + 200_000 * 0.005)
    assert "close call" not in clear["note"]


@pytest.mark.parametrize("entry", [{"rates": "fast"}, {"rates": {"tensorflow": "54"}},
                                   {"rates": {"tensorflow": -1.0}}, {"trace_s": None}, [1, 2]])
def test_a_malformed_remembered_entry_is_measured_again(entry):
    assert runtime_choice._valid(entry) is None
    assert runtime_choice._valid({"rates": {"tensorflow": 54.1, "openvino": 85.0},
                                  "trace_s": 2.3, "conversion_s": 4.6}) is not None


def test_a_malformed_machine_entry_is_learnt_again(tmp_path):
    runtime_choice._remember(tmp_path, runtime_choice._machine_key(),
                             {"conversion_per_trace": ["x"], "speedups": {}})
    assert runtime_choice.machine_memory(tmp_path) == {}
