"""The dry run's forecast of what --runtime auto will do for a backbone, cold and with its
conversion cached: the same decision (runtime_choice.decide) on the calibration's model of
each runtime's rate, or on the rates earlier runs measured; a close call predicted as the mean
of both outcomes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.engine import runtime_choice

if TYPE_CHECKING:
    from bench.engine.cost import Calibration, GraphStats


def predict_runtimes(name: str, stats: GraphStats, n_images: int,
                     calibrations: dict[str, Calibration], memory: dict, machine: dict) -> dict:
    """A row's runtime and predicted seconds, cold (no converted model cached) and warm (the
    conversion cached), choosing as --runtime auto does (runtime_choice.decide) from the rates
    earlier runs measured (`memory`) or else the calibrations' model. The conversion is
    predicted as auto predicts it: from TensorFlow's tracing of the backbone and the ratio this
    machine measured (`machine`)."""
    rates = {k: float(v) for k, v in (memory.get("rates") or {}).items() if v}
    traced, steady = {}, {}
    for runtime, cal in calibrations.items():
        traced[runtime] = cal.predict(stats, 0)
        steady[runtime] = rates.get(runtime) or (
            n_images / max(cal.predict(stats, n_images) - traced[runtime], 1e-9))
    if len(calibrations) == 1:
        (only,) = calibrations
        seconds = traced[only] + n_images / steady[only]
        conversion = (runtime_choice.conversion_estimate(
            {**memory, "trace_s": memory.get("trace_s") or traced[only]}, machine)
            if only == "openvino" else 0.0)
        return dict(runtime=only, predicted_extract_s=seconds + conversion,
                    predicted_warm_s=seconds,
                    predicted_tensorflow_s=seconds if only == "tensorflow" else None, note="")
    trace = memory.get("trace_s") or traced["tensorflow"]
    conversion = runtime_choice.conversion_estimate({**memory, "trace_s": trace}, machine)
    speedup = runtime_choice.speedup_estimate(machine, name)
    tf_s = traced["tensorflow"] + n_images / steady["tensorflow"]
    ov_s = traced["openvino"] + n_images / steady["openvino"]
    out = dict(predicted_tensorflow_s=tf_s)
    # auto decides from TensorFlow's rate as its probe measures it; the model's rate is that
    # within MODEL_UNCERTAINTY, a remembered one exactly
    band = 0.0 if "tensorflow" in rates else MODEL_UNCERTAINTY
    close = []
    for label, paid in (("predicted_extract_s", conversion), ("predicted_warm_s", 0.0)):
        low, central, high = (
            _auto_outcome(n_images, steady["tensorflow"] * factor, rates.get("openvino"),
                          steady["openvino"], paid, speedup, tf_s, ov_s)
            for factor in (1 - band, 1.0, 1 + band))
        outcomes = {low, central, high}  # (runtime, seconds): one unless the call is close
        # a close call: either outcome may happen, and the prediction is their mean
        out[label] = sum(seconds for _, seconds in outcomes) / len(outcomes)
        out["runtime" if label == "predicted_extract_s" else "warm_runtime"] = central[0]
        if len(outcomes) > 1:
            close.append("cold" if label == "predicted_extract_s" else "warm")
    def source(runtime: str) -> str:
        return "measured rate" if runtime in rates else "model"

    out["note"] = (f"tensorflow {tf_s:.0f} s ({source('tensorflow')}); openvino "
                   f"{ov_s:.0f} s ({source('openvino')}) + converting {conversion:.0f} s"
                   + (f"; a close call {' and '.join(close)}: the mean of both"
                      if close else ""))
    return out


# How far the calibration's model may put TensorFlow's steady rate from what auto's probe
# measures (steady rates were predicted within 3 to 15 % here, results/PERF.md h).
MODEL_UNCERTAINTY = 0.15


def _auto_outcome(n_images: int, tf_rate: float, ov_known: float | None, ov_rate: float,
                  paid: float, speedup: float, tf_s: float, ov_s: float) -> tuple[str, float]:
    """(the runtime auto ends with, the extraction's seconds) when its probe reads TensorFlow
    at `tf_rate`: OpenVINO tried (the conversion `paid`) where decide says probe."""
    choice = runtime_choice.decide(runtime_choice.Evidence(n_images, tf_rate, ov_known, paid,
                                                           speedup))
    tried = choice == "probe"
    if tried:
        choice = runtime_choice.decide(runtime_choice.Evidence(n_images, tf_rate, ov_rate, 0.0,
                                                               speedup))
    seconds = (paid if tried or choice == "openvino" else 0.0) + (
        ov_s if choice == "openvino" else tf_s)
    return choice, seconds
