"""--runtime auto: which runtime runs a backbone's extraction, chosen by measurement, remembered.

On a CUDA GPU TensorFlow runs it (OpenVINO here is a CPU runtime). On a CPU with OpenVINO
installed, auto times a few batches of the real images in each runtime, adds the one-time
conversion to OpenVINO (0 when the converted model is cached), predicts each runtime's whole
extraction of the dataset, and takes the fastest. The probe batches of the chosen runtime are
the first batches of its extraction; only the other runtime's probe is extra work. The choice
and the measured rates are remembered per backbone, size, input and machine in
runtime-choices.json beside the feature cache: the next run of that backbone probes nothing.
"""

from __future__ import annotations

import json
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
from bench.fsio import write_text_atomic
from bench.identity import KERAS_VERSION, RunIdentity
from bench.provenance import cpu_name, usable_cores

PROBE_SECONDS = 0.25  # of timed calls per runtime, after a first call that traces / warms up


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
                dtype: str, store: Path | None) -> Runtime:
    """The named runtime ("tensorflow" or "openvino") for this backbone."""
    batch = config.extract_batch_size
    if name == "tensorflow":
        return TensorFlowRuntime(extractor, image_shape, dtype, batch)
    return OpenVinoRuntime(spec, backbone, ident.size, config, image_shape, dtype, batch,
                          openvino_key(spec, config, ident), store)


def choose_runtime(spec: BackboneSpec, backbone: keras.Model, extractor: keras.Model,
           config: RunConfig, ident: RunIdentity, images: np.ndarray, n_total: int,
           store: Path | None) -> tuple[Runtime, np.ndarray | None]:
    """(runtime, features of images[:k] it already computed, or None) for config.runtime."""
    shape, dtype = tuple(images.shape[1:]), images.dtype.name

    def build(name: str) -> Runtime:
        return make_runtime(name, spec, backbone, extractor, config, ident, shape, dtype, store)

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
    memory = dict(_read(store).get(key) or {}) if store else {}
    rates = {k: float(v) for k, v in (memory.get("rates") or {}).items()}
    cached = openvino_backend.is_cached(openvino_key(spec, config, ident), spec.name, store)
    conversion = 0.0 if cached else float(
        memory.get("conversion_s") or CONVERSION_S_PER_LAYER * len(backbone.layers))
    probed = {}
    if "tensorflow" not in rates:
        probed["tensorflow"] = _probe(lambda: build("tensorflow"), images,
                                      config.extract_batch_size, warm=2, first_timed=4)
        rates["tensorflow"] = probed["tensorflow"].rate
    if "openvino" not in rates and worth_converting(conversion, n_total / rates["tensorflow"]):
        probed["openvino"] = _probe(lambda: build("openvino"), images,
                                    config.extract_batch_size, warm=config.extract_batch_size,
                                    first_timed=config.extract_batch_size)
        rates["openvino"] = probed["openvino"].rate
        conversion = 0.0  # paid
        memory["conversion_s"] = round(probed["openvino"].runtime.info.setup_s, 2)
    predicted = {name: (conversion if name == "openvino" else 0.0) + n_total / rate
                 for name, rate in rates.items()}
    best = min(predicted, key=predicted.get)
    if store:
        _remember(store, key, {**memory, "rates": {k: round(v, 3) for k, v in rates.items()}})
    return _chosen(best, build, probed, rates, predicted)


def remember(runtime: Runtime, spec: BackboneSpec, config: RunConfig, ident: RunIdentity,
             images: np.ndarray, store: Path | None) -> None:
    """Keeps an extraction's steady rate (and a conversion's seconds) for the next auto choice:
    a whole extraction measures the rate better than the probe's few batches."""
    if not store or not runtime.info.images_per_s or has_gpu():
        return
    key = _choice_key(spec, config, ident.size, tuple(images.shape[1:]), images.dtype.name)
    memory = dict(_read(store).get(key) or {})
    memory["rates"] = {**(memory.get("rates") or {}),
                       runtime.info.runtime: round(runtime.info.images_per_s, 3)}
    if getattr(runtime, "conversion_s", None):
        memory["conversion_s"] = round(runtime.conversion_s, 2)
    _remember(store, key, memory)


def worth_converting(conversion_s: float, tensorflow_s: float) -> bool:
    """Whether trying OpenVINO can pay: it would have to be twice as fast as TensorFlow to save
    a conversion that costs half of TensorFlow's whole extraction."""
    return conversion_s < 0.5 * tensorflow_s


# What converting a backbone costs before it was ever measured on this machine: 8-34 s for
# the models of results/PERF.md, about 0.04 s per Keras layer; then measured and remembered.
CONVERSION_S_PER_LAYER = 0.04


@dataclass
class _Probe:
    runtime: Runtime
    features: np.ndarray  # of the first images
    rate: float  # images per second, steady
    seconds: float  # everything the probe took, building the runtime included


def _probe(make: Callable[[], Runtime], images: np.ndarray, batch: int, warm: int,
           first_timed: int) -> _Probe:
    """Times the runtime `make` builds on the first images: a first call on `warm` images
    (tracing, warm-up), a timed call on `first_timed`, then full batches until PROBE_SECONDS
    of timing. A slow backbone is timed on a few images only: for ConvNeXtTiny in TensorFlow
    (4 img/s) a batch of 16 would cost as much as 10 % of its OpenVINO extraction."""
    began = time.perf_counter()
    runtime = make()
    outputs = [runtime(images[:warm])]
    first = time.perf_counter() - began
    spans, done = [], len(outputs[0])
    while done < len(images) and (not spans or sum(s for _, s in spans) < PROBE_SECONDS):
        size = first_timed if not spans else batch
        tick = time.perf_counter()
        outputs.append(runtime(images[done:done + size]))
        spans.append((len(outputs[-1]), time.perf_counter() - tick))
        done += len(outputs[-1])
    # full batches measure the rate an extraction runs at, when there are any
    full = spans[1:] or spans
    timed_images, timed = sum(n for n, _ in full), sum(s for _, s in full)
    rate = timed_images / timed if timed > 0 else warm / first
    return _Probe(runtime, np.concatenate(outputs), rate, time.perf_counter() - began)


def _chosen(best: str, build, probed: dict, rates: dict, predicted: dict):
    """The chosen runtime, with the features its probe computed; notes for the row."""
    if best in probed:
        runtime, done = probed[best].runtime, probed[best].features
    else:
        runtime, done = build(best), None
    runtime.info.probe_s = sum(p.seconds for name, p in probed.items() if name != best)
    how = "remembered" if not probed else "measured " + " and ".join(probed)
    runtime.info.note = (f"auto ({how}): {_rates_text(rates)}; predicted extraction "
                        + ", ".join(f"{name} {s:.0f} s" for name, s in predicted.items()))
    return runtime, done


def remembered_rates(spec: BackboneSpec, config: RunConfig, size: int,
                     shape: tuple[int, ...], dtype: str, store: Path) -> dict[str, float]:
    """{runtime: images/s} measured by earlier runs of this backbone on this machine."""
    memory = _read(store).get(_choice_key(spec, config, size, shape, dtype)) or {}
    return {k: float(v) for k, v in (memory.get("rates") or {}).items() if v}


def _rates_text(rates: dict) -> str:
    return " vs ".join(f"{name} {rate:.1f} img/s" for name, rate in rates.items())


def _choice_key(spec: BackboneSpec, config: RunConfig, size: int,
                shape: tuple[int, ...], dtype: str) -> str:
    return json.dumps([spec.name, dict(spec.kwargs), size, config.pooling, config.preprocess,
                       list(shape), dtype, config.extract_batch_size, _machine(),
                       tf.__version__, openvino_backend.version()], default=str)


def _machine() -> str:
    return f"{cpu_name()} x{usable_cores()}"


def _read(store: Path) -> dict:
    try:
        return dict(json.loads((store / CHOICES_FILE).read_text()))
    except (OSError, ValueError, TypeError):  # absent or damaged: probed again
        return {}


def _remember(store: Path, key: str, value: dict) -> None:
    """Merged into the file and renamed into place; a cache that cannot be written only means
    the next run probes again."""
    try:
        store.mkdir(parents=True, exist_ok=True)
        write_text_atomic(store / CHOICES_FILE, json.dumps({**_read(store), key: value},
                                                           indent=0))
    except OSError:
        pass
