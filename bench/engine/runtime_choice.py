"""--runtime auto: which runtime runs a backbone's extraction, chosen so that it cannot lose
by much, and remembered.

On a CUDA GPU TensorFlow runs it (OpenVINO here is a CPU runtime). On a CPU with OpenVINO
installed, auto weighs each runtime's whole extraction of the dataset: TensorFlow's steady
rate, timed on the first images after its tracing (the traced function is loaded anyway), against
OpenVINO's conversion (0 when the converted model is cached), compilation and rate.
Converting is a bet: it is made when OpenVINO, at the speed-up expected on this machine, is
predicted clearly faster conversion included, and the conversion is predicted at most REGRET of
TensorFlow's extraction, so that a conversion that buys nothing loses at most that. The
conversion is predicted from this machine's own speed (TensorFlow's measured tracing of the
backbone times the ratio of conversion to tracing measured on this machine), never from seconds
fixed in the code. Where two predictions are within UNCERTAIN of each other, TensorFlow, already
loaded, runs.

The probe batches of the chosen runtime are the first batches of its extraction; only the other
runtime's probe is extra work. Rates, tracing and conversion seconds are remembered per
backbone, size, input and machine in runtime-choices.json in the cache folder (kept with
--no-cache, which concerns features only): the next run of that backbone probes nothing.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from backbones import BackboneSpec
from bench.cache import CHOICES_FILE
from bench.config import RunConfig
from bench.engine import openvino_backend
from bench.engine.runtimes import OpenVinoRuntime, Runtime, TensorFlowRuntime
from bench.fsio import read_json_store, remember_json
from bench.identity import KERAS_VERSION, RunIdentity
from bench.provenance import cpu_name, usable_cores

# Timed full batches per probe: at least two (the first full batch after tracing still
# allocates), more until this many seconds were timed, unless the first took longer.
PROBE_SECONDS = 0.25
# A conversion is started only when its predicted cost is at most this share of TensorFlow's
# predicted extraction: were OpenVINO then no faster at all (its expected speed-up wrong by
# 2x or more), the run lost at most that.
REGRET = 0.5
# Predicted totals this close are a tie, and a tie goes to the runtime already loaded.
UNCERTAIN = 0.05
# Before this machine has measured its own: a conversion costs this many times TensorFlow's
# tracing of the same backbone (measured 1.5-3.7, median 2.3, for DenseNet121, ResNet50,
# EfficientNetB0, MobileNetV3Small and ConvNeXtTiny on a 2-core EPYC: results/PERF.md).
CONVERSION_PER_TRACE = 2.5
# OpenVINO's speed-up over TensorFlow on the bare backbone, 160 px, batch 16, as
# results/PERF.md measured it (its runtime table; the first five remeasured 2026-12-05 with
# OpenVINO 2026.4.1): ratios, not seconds, which move far less between machines. A backbone
# this machine has timed in both runtimes uses its own; the others use these scaled by how
# this machine's own measurements compare with them, and a backbone not in the table their
# median.
RECORDED_SPEEDUPS = {"ConvNeXtTiny": 8.2, "MobileNetV3Small": 4.9, "EfficientNetB0": 2.5,
                     "ResNet50": 1.6, "DenseNet121": 1.6, "EfficientNetV2B0": 1.68,
                     "InceptionV3": 1.16, "ResNet50V2": 1.13, "Xception": 1.42,
                     "NASNetMobile": 1.69, "VGG16": 1.01}


def has_gpu() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


def openvino_key(spec: BackboneSpec, config: RunConfig, ident: RunIdentity) -> str:
    """What makes a converted model: backbone, weights identity, size, pooling, versions."""
    return openvino_backend.model_key(backbone=spec.name, kwargs=dict(spec.kwargs),
                                      weights=ident.weights_id, size=ident.size,
                                      pooling=config.pooling, keras=KERAS_VERSION,
                                      tensorflow=tf.__version__)


def make_runtime(name: str, spec: BackboneSpec, backbone: keras.Model, extractor: keras.Model,
                config: RunConfig, ident: RunIdentity, image_shape: tuple[int, ...],
                dtype: str, store: Path | None, traced=None) -> Runtime:
    """The named runtime ("tensorflow" or "openvino") for this backbone; `traced`, a
    TensorFlowRuntime's backbone_function, spares OpenVINO's conversion a second tracing."""
    batch = config.extract_batch_size
    if name == "tensorflow":
        return TensorFlowRuntime(extractor, image_shape, dtype, batch)
    return OpenVinoRuntime(spec, backbone, ident.size, config, image_shape, dtype, batch,
                          openvino_key(spec, config, ident), store, traced)


def choose_runtime(spec: BackboneSpec, backbone: keras.Model, extractor: keras.Model,
           config: RunConfig, ident: RunIdentity, images: np.ndarray, n_total: int,
           store: Path | None) -> tuple[Runtime, np.ndarray | None]:
    """(runtime, features of images[:k] it already computed, or None) for config.runtime."""
    shape, dtype = tuple(images.shape[1:]), images.dtype.name

    def build(name: str, traced=None) -> Runtime:
        return make_runtime(name, spec, backbone, extractor, config, ident, shape, dtype, store,
                            traced)

    if config.runtime != "auto":
        runtime = build(config.runtime)
        runtime.info.note = f"--runtime {config.runtime}; " + runtime.info.note
        return runtime, None
    if has_gpu() or openvino_backend.version() is None:
        runtime = build("tensorflow")
        runtime.info.note = ("auto: a GPU runs TensorFlow" if has_gpu()
                            else "auto: OpenVINO is not installed")
        return runtime, None
    key = _choice_key(spec, config, ident.size, shape, dtype)
    memory, machine = _entry(store, key, spec.name), machine_memory(store)
    rates = {k: float(v) for k, v in (memory.get("rates") or {}).items()}
    cached = openvino_backend.is_cached(openvino_key(spec, config, ident), spec.name, store)
    probed: dict[str, _Probe] = {}
    if "tensorflow" not in rates or ("openvino" not in rates and not cached
                                     and "conversion_s" not in memory
                                     and "trace_s" not in memory):
        probed["tensorflow"] = _probe(lambda: build("tensorflow"), images,
                                      config.extract_batch_size)
        rates["tensorflow"] = probed["tensorflow"].rate
        memory["trace_s"] = round(probed["tensorflow"].first_s, 3)
    done = len(probed["tensorflow"].features) if probed else 0
    conversion = 0.0 if cached else conversion_estimate(memory, machine)
    evidence = Evidence(n_total - done, rates["tensorflow"], rates.get("openvino"), conversion,
                        speedup_estimate(machine, spec.name))
    if decide(evidence) == "probe":
        traced = probed["tensorflow"].runtime.backbone_function if probed else None
        # OpenVINO is timed on the images after TensorFlow's, so that both probes' features
        # are kept; on all of them again when TensorFlow's probe took every image
        rest = images[done:] if done < len(images) else images
        probed["openvino"] = _probe(lambda: build("openvino", traced), rest,
                                    config.extract_batch_size)
        if done >= len(images):
            probed["openvino"].features = probed["openvino"].features[:0]
        done += len(probed["openvino"].features)
        runtime = probed["openvino"].runtime
        rates["openvino"] = probed["openvino"].rate
        if runtime.conversion_s:
            memory["conversion_s"] = round(runtime.conversion_s, 2)
        evidence = Evidence(n_total - done, rates["tensorflow"], rates["openvino"], 0.0,
                            evidence.speedup)
    best = decide(evidence)  # OpenVINO's rate is known now: "tensorflow" or "openvino"
    if store:
        _remember(store, key, {**memory, "rates": {k: round(v, 3) for k, v in rates.items()}})
        _learn(store, memory, rates, label=spec.name)
    return _chosen(best, build, probed, rates, evidence)


def _entry(store: Path | None, key: str, label: str) -> dict:
    """The remembered entry of `key`; a malformed one is said (naming the file) and dropped."""
    raw = _read(store).get(key) if store else None
    memory = _valid(raw) or {}
    if raw is not None and not memory:
        print(f"bench: warning: {str(store / CHOICES_FILE)!r}: the entry for {label} is "
              "malformed; measuring again", file=sys.stderr, flush=True)
    return memory


@dataclass(frozen=True)
class Evidence:
    """What auto knows when it chooses: images still to extract, TensorFlow's steady rate,
    OpenVINO's (None before it was timed on this backbone), the conversion still to pay (0 when
    the converted model is cached or was just made) and OpenVINO's expected speed-up over
    TensorFlow before it was timed."""

    images: int
    tensorflow_rate: float
    openvino_rate: float | None
    conversion_s: float
    speedup: float

    def predicted(self) -> dict[str, float]:
        """Predicted seconds per runtime; OpenVINO's from the expected speed-up until timed."""
        openvino = self.openvino_rate or self.tensorflow_rate * self.speedup
        return {"tensorflow": self.images / self.tensorflow_rate,
                "openvino": self.conversion_s + self.images / openvino}


def decide(evidence: Evidence) -> str:
    """"tensorflow", "openvino", or "probe": convert (unless cached), compile and time
    OpenVINO, then decide again with its rate.

    OpenVINO is tried only where it is predicted clearly faster and its conversion is at most
    REGRET of TensorFlow's extraction; it runs only where, timed, it is predicted clearly
    faster. Both "clearly" are UNCERTAIN: a tie keeps TensorFlow, already loaded.
    """
    predicted = evidence.predicted()
    faster = predicted["openvino"] < (1 - UNCERTAIN) * predicted["tensorflow"]
    if evidence.openvino_rate is not None:
        return "openvino" if faster else "tensorflow"
    if faster and evidence.conversion_s <= REGRET * predicted["tensorflow"]:
        return "probe"
    return "tensorflow"


def conversion_estimate(memory: dict, machine: dict) -> float:
    """Seconds to convert this backbone on this machine: as measured before, else its tracing
    in TensorFlow times the median ratio of conversion to tracing this machine has measured
    (CONVERSION_PER_TRACE before it has measured any)."""
    if memory.get("conversion_s"):
        return float(memory["conversion_s"])
    ratios = machine.get("conversion_per_trace") or [CONVERSION_PER_TRACE]
    return float(memory.get("trace_s") or 0.0) * statistics.median(ratios)


def speedup_estimate(machine: dict, name: str) -> float:
    """OpenVINO's rate over TensorFlow's expected for backbone `name` before timing it here:
    this machine's own measurement, else RECORDED_SPEEDUPS (its median for a backbone not in
    it) times the median ratio of this machine's measurements to the recorded ones."""
    measured = dict(machine.get("speedups") or {})
    if name in measured:
        return float(measured[name])
    recorded = RECORDED_SPEEDUPS.get(name, statistics.median(RECORDED_SPEEDUPS.values()))
    ratios = [float(v) / RECORDED_SPEEDUPS[k] for k, v in measured.items()
              if k in RECORDED_SPEEDUPS]
    return recorded * (statistics.median(ratios) if ratios else 1.0)


def remember(runtime: Runtime, spec: BackboneSpec, config: RunConfig, ident: RunIdentity,
             images: np.ndarray, store: Path | None) -> None:
    """Keeps an extraction's steady rate (and a conversion's seconds) for the next auto choice:
    a whole extraction measures the rate better than the probe's few batches."""
    if not store or not runtime.info.images_per_s or has_gpu():
        return
    key = _choice_key(spec, config, ident.size, tuple(images.shape[1:]), images.dtype.name)
    memory = _valid(_read(store).get(key)) or {}
    memory["rates"] = {**(memory.get("rates") or {}),
                       runtime.info.runtime: round(runtime.info.images_per_s, 3)}
    if getattr(runtime, "conversion_s", None):
        memory["conversion_s"] = round(runtime.conversion_s, 2)
    _remember(store, key, memory)
    _learn(store, memory, memory["rates"], label=spec.name)


@dataclass
class _Probe:
    runtime: Runtime
    features: np.ndarray  # of the first images
    rate: float  # images per second, steady
    first_s: float  # the first call (tracing, warm-up) on a few images
    seconds: float  # everything the probe took, building the runtime included


def _probe(make: Callable[[], Runtime], images: np.ndarray, batch: int,
           warm: int = 2) -> _Probe:
    """Times the runtime `make` builds on the first images: a first call on `warm` images
    (tracing, warm-up), then full batches, the first of which (still allocating for the full
    shape) is left out of the rate when a second follows. Timing goes on until PROBE_SECONDS
    were timed after that first full batch, or stops after it when it alone took more than
    that: a slow backbone (ConvNeXtTiny in TensorFlow, 2.4 s a batch) is timed on one batch."""
    began = time.perf_counter()
    runtime = make()
    tick = time.perf_counter()
    outputs = [runtime(images[:warm])]
    first = time.perf_counter() - tick
    spans, done = [], len(outputs[0])
    while done < len(images):
        steady = sum(s for _, s in spans[1:])
        if steady >= PROBE_SECONDS or (len(spans) == 1 and spans[0][1] >= PROBE_SECONDS * 4):
            break
        tick = time.perf_counter()
        outputs.append(runtime(images[done:done + batch]))
        spans.append((len(outputs[-1]), time.perf_counter() - tick))
        done += len(outputs[-1])
    timed = spans[1:] or spans
    timed_images, seconds = sum(n for n, _ in timed), sum(s for _, s in timed)
    rate = timed_images / seconds if seconds > 0 else warm / first
    return _Probe(runtime, np.concatenate(outputs), rate, first, time.perf_counter() - began)


def _chosen(best: str, build, probed: dict, rates: dict, evidence: Evidence):
    """The chosen runtime, with the features the probes computed (of the first images, in
    order); notes for the row."""
    runtime = probed[best].runtime if best in probed else build(best)
    done = np.concatenate([p.features for p in probed.values()]) if probed else None
    runtime.info.probe_s = sum(p.seconds for name, p in probed.items() if name != best)
    how = "remembered" if not probed else "measured " + " and ".join(probed)
    predicted = evidence.predicted()
    if evidence.openvino_rate is None:
        predicted = {"tensorflow": predicted["tensorflow"]}
        if "openvino" not in probed:
            how += (f"; OpenVINO not tried: converting, predicted {evidence.conversion_s:.0f} s, "
                    f"is more than {REGRET:.0%} of TensorFlow's extraction" if
                    evidence.conversion_s > REGRET * predicted["tensorflow"] else
                    "; OpenVINO not tried: not predicted clearly faster")
    runtime.info.note = (f"auto ({how}): {_rates_text(rates)}; predicted extraction "
                        + ", ".join(f"{name} {s:.0f} s" for name, s in predicted.items()))
    return runtime, done


def remembered(spec: BackboneSpec, config: RunConfig, size: int, shape: tuple[int, ...],
               dtype: str, store: Path) -> dict:
    """What earlier runs of this backbone measured on this machine: {"rates": {runtime:
    images/s}, "trace_s": TensorFlow's tracing, "conversion_s": OpenVINO's conversion}."""
    return _valid(_read(store).get(_choice_key(spec, config, size, shape, dtype))) or {}


def _number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)


def _valid(entry) -> dict | None:
    """A backbone's remembered entry when every field has its type (rates: {runtime:
    images/s}, trace_s and conversion_s: seconds), else None: measured again."""
    if not isinstance(entry, dict):
        return None
    rates = entry.get("rates", {})
    if not isinstance(rates, dict) or not all(
            name in ("tensorflow", "openvino") and _number(v) for name, v in rates.items()):
        return None
    if not all(_number(entry[f]) for f in ("trace_s", "conversion_s") if f in entry):
        return None
    return dict(entry)


def _rates_text(rates: dict) -> str:
    return " vs ".join(f"{name} {rate:.1f} img/s" for name, rate in rates.items())


def _choice_key(spec: BackboneSpec, config: RunConfig, size: int,
                shape: tuple[int, ...], dtype: str) -> str:
    return json.dumps([spec.name, dict(spec.kwargs), size, config.pooling, config.preprocess,
                       list(shape), dtype, config.extract_batch_size, machine_label(),
                       tf.__version__, openvino_backend.version()], default=str)


def machine_label() -> str:
    """This machine as its measurements are keyed: CPU model and usable cores."""
    return f"{cpu_name()} x{usable_cores()}"


def _machine_key() -> str:
    """The entry of what holds for every backbone on this machine and these versions."""
    return json.dumps(["machine", machine_label(), tf.__version__, openvino_backend.version()])


def machine_memory(store: Path | None) -> dict:
    """What this machine has measured across backbones (conversion per tracing, speed-ups)."""
    entry = _read(store).get(_machine_key()) if store else None
    if not isinstance(entry, dict):
        return {}
    ratios, speedups = entry.get("conversion_per_trace", []), entry.get("speedups", {})
    if not (isinstance(ratios, list) and all(_number(r) for r in ratios)
            and isinstance(speedups, dict) and all(_number(v) for v in speedups.values())):
        return {}  # malformed: learnt again
    return dict(entry)


def _learn(store: Path, memory: dict, rates: dict, label: str | None = None) -> None:
    """What one backbone's measurements teach about the machine: its ratio of conversion to
    tracing (when both were measured) and OpenVINO's speed-up over TensorFlow (when both rates
    are known), kept for the estimates of backbones not yet measured."""
    machine = machine_memory(store)
    learnt = False
    if memory.get("conversion_s") and memory.get("trace_s"):
        ratio = round(float(memory["conversion_s"]) / float(memory["trace_s"]), 2)
        ratios = list(machine.get("conversion_per_trace") or [])
        if ratio not in ratios:
            machine["conversion_per_trace"] = (ratios + [ratio])[-20:]
            learnt = True
    if label and rates.get("tensorflow") and rates.get("openvino"):
        speedup = round(float(rates["openvino"]) / float(rates["tensorflow"]), 3)
        machine["speedups"] = {**(machine.get("speedups") or {}), label: speedup}
        learnt = True
    if learnt:
        _remember(store, _machine_key(), machine)


def _read(store: Path) -> dict:
    return read_json_store(store / CHOICES_FILE)


def _remember(store: Path, key: str, value: dict) -> None:
    """Merged into the checksummed file and renamed into place (fsio.remember_json)."""
    remember_json(store / CHOICES_FILE, key, value)
