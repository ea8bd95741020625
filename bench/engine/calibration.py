"""This machine's speeds, measured once and remembered: what a dry run predicts a sweep from.

Machines differ (this project's two-core machines alone differ by 1.5x in TensorFlow), so no
speed is a constant: each is measured here, keyed by the machine (CPU, cores), the library
versions and the settings that change it, and kept in the cache folder (CALIBRATIONS_FILE,
kept under --no-cache like every per-machine measurement), so that only the first dry run on
a machine measures anything:

- extraction, per runtime: cost.calibrate (two reference backbones, about ten seconds);
- training: the lesson's head on features, and each from-scratch baseline on images of the
  data's shape, two epochs each (its first, with tracing, and a steady one); a fine-tuning
  step against a forward pass (--fine-tune);
- start-up: what an isolated child process costs beside its run (Python, TensorFlow and
  bench's engine imported, the process torn down), one child timed whole.

Each entry carries the seconds of a fixed reference workload (reference_seconds) timed when
it was measured. The same machine label does not mean the same speed (a cloud machine of one
CPU model can run 1.5x slower than another, or than itself an hour earlier): every dry run
times the reference once, and an entry whose reference differs from now's by more than
REFERENCE_TOLERANCE is measured again, so a prediction rests on this machine's speed now.

The file is checksummed (fsio.read_json_store: a damaged one is one warning, removed and
measured again); a malformed entry is one warning naming the file, and measured again.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from backbones import BaselineSpec, get
from bench.cache import CALIBRATIONS_FILE
from bench.config import RunConfig
from bench.data import Dataset
from bench.engine import cost, features, finetune, head, openvino_backend, routes
from bench.engine.runtime_choice import machine_label
from bench.fsio import read_json_store, remember_json

# Samples the training calibrations time per epoch: enough for a steady epoch of many steps.
HEAD_SAMPLES, HEAD_WIDTH = 2048, 1024
BASELINE_SAMPLES = 256


def _key(*parts) -> str:
    return json.dumps([*parts, machine_label(), tf.__version__, keras.__version__,
                       openvino_backend.version()], default=str)


# A remembered entry whose reference ran this many times faster or slower than now is stale.
REFERENCE_TOLERANCE = 1.15
# The reference: a traced 3x3 convolution (64 to 64 channels) over a batch of 56x56 maps, the
# bulk of a convolutional backbone's work; timed REFERENCE_CALLS times after its first call,
# about half a second on two CPU cores.
REFERENCE_SHAPE, REFERENCE_CALLS = (32, 56, 56, 64), 16


@functools.cache
def reference_seconds() -> float:
    """Seconds per call of the reference workload on this machine now: the mean of
    REFERENCE_CALLS calls after the first (which traces), timed once per process."""
    x = tf.random.stateless_uniform(REFERENCE_SHAPE, seed=(0, 0))
    kernel = tf.random.stateless_uniform((3, 3, REFERENCE_SHAPE[-1], REFERENCE_SHAPE[-1]),
                                         seed=(0, 1))
    forward = tf.function(lambda x: tf.nn.relu(tf.nn.conv2d(x, kernel, 1, "SAME")))
    forward(x).numpy()
    start = time.perf_counter()
    for _ in range(REFERENCE_CALLS):
        forward(x).numpy()
    return (time.perf_counter() - start) / REFERENCE_CALLS


def speed_change(then: float | None, now: float) -> float | None:
    """How many times slower (> 1) or faster (< 1) this machine runs the reference now than
    when an entry was measured (`then`); None when that is within REFERENCE_TOLERANCE. An entry
    without a reference (written before bench timed one) counts as changed: inf."""
    if not isinstance(then, int | float) or isinstance(then, bool) or not then > 0:
        return math.inf
    ratio = now / then
    return None if 1 / REFERENCE_TOLERANCE <= ratio <= REFERENCE_TOLERANCE else ratio


def _numbers(entry, names: tuple[str, ...]) -> bool:
    return isinstance(entry, dict) and all(
        isinstance(entry.get(n), int | float) and not isinstance(entry.get(n), bool)
        and math.isfinite(entry[n]) and entry[n] >= 0 for n in names)


def remembered(store: Path | None, key: str, names: tuple[str, ...],
               measure: Callable[[], dict], what: str) -> tuple[dict, str]:
    """(the entry, how it was found): the stored entry under `key` when its `names` are
    finite numbers >= 0 and its reference time is today's (speed_change), "remembered"; else
    `measure()`'s, stored with today's reference time for the next time: "measured", or
    "measured again: this machine runs 1.45x slower than when it was remembered"."""
    path = Path(store) / CALIBRATIONS_FILE if store else None
    entry = read_json_store(path).get(key)
    how = "measured"
    if entry is not None and not _numbers(entry, names):
        warnings.warn(f"{path}: the {what} calibration is malformed; measured again",
                      stacklevel=2)
    elif entry is not None:
        change = speed_change(entry.get("reference_s"), reference_seconds())
        if change is None:
            return entry, "remembered"
        if math.isfinite(change):
            how = (f"measured again: this machine runs {max(change, 1 / change):.2f}x "
                   f"{'slower' if change > 1 else 'faster'} than when it was remembered")
    entry = measure()
    if path is not None:
        entry = {**entry, "reference_s": reference_seconds()}
        remember_json(path, key, entry)
    return entry, how


def extraction(config: RunConfig, image_shape: tuple[int, ...], runtime: str,
               store: Path | None) -> tuple[cost.Calibration, str]:
    """cost.calibrate's rates for `runtime` at the size, batch and preprocessing `config`
    gives, remembered."""
    key = _key("extraction", runtime, config.image_size, config.extract_batch_size,
               config.pooling, config.preprocess, list(image_shape))
    names = ("seconds_per_gflop", "seconds_per_mvalue", "trace_seconds_per_op",
             "seconds_per_mcalled", "build_seconds_per_op", "build_seconds_per_mparam")
    entry, how = remembered(
        store, key, names, lambda: asdict(cost.calibrate(config, image_shape, runtime=runtime)),
        f"{runtime} extraction")
    fields = {f.name for f in dataclasses.fields(cost.Calibration)} - {"timings"}
    timings = tuple(tuple(t) for t in entry.get("timings") or ())
    return cost.Calibration(**{k: v for k, v in entry.items() if k in fields},
                            timings=timings), how


def head_training(n_classes: int, config: RunConfig, store: Path | None) -> tuple[dict, str]:
    """{first_s, per_value_s}: the head's first epoch (tracing included) and a steady epoch's
    seconds per feature value seen (samples x width, training and watched samples alike)."""
    key = _key("head", n_classes, config.batch_size)

    def measure() -> dict:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((HEAD_SAMPLES, HEAD_WIDTH)).astype(np.float32)
        y = rng.integers(0, n_classes, HEAD_SAMPLES)
        keras.utils.set_random_seed(0)
        model = head.build_head(n_classes)
        model.build((None, HEAD_WIDTH))
        watch = HEAD_SAMPLES // 4
        first, steady = two_epochs(lambda c: head.train(model, x, y, x[:watch], y[:watch], c),
                                   replace(config, end_to_end=False))
        return dict(first_s=first, per_value_s=steady / ((HEAD_SAMPLES + watch) * HEAD_WIDTH))

    return remembered(store, key, ("first_s", "per_value_s"), measure, "head training")


def baseline_training(spec: BaselineSpec, image_shape: tuple[int, ...], n_classes: int,
                      config: RunConfig, store: Path | None) -> tuple[dict, str]:
    """{first_s, per_image_s}: a from-scratch baseline's first epoch and a steady epoch's
    seconds per image (training and watched images alike), on random images of the data's
    shape, as routes.from_scratch trains it."""
    key = _key("baseline", spec.name, list(image_shape), n_classes, config.batch_size)

    def measure() -> dict:
        rng = np.random.default_rng(0)
        n, watch = BASELINE_SAMPLES, BASELINE_SAMPLES // 4
        images = rng.integers(0, 256, (n + watch, *image_shape), dtype=np.uint8)
        labels = rng.integers(0, n_classes, n + watch)
        data = Dataset(images[:n], labels[:n], images[n:], labels[n:],
                       tuple(map(str, range(n_classes))), "calibration", kind="arrays")
        first, steady = two_epochs(lambda c: routes.from_scratch(spec, c, data), config)
        return dict(first_s=first, per_image_s=steady / (n + watch))

    return remembered(store, key, ("first_s", "per_image_s"), measure,
                      f"{spec.name} training")


def fine_tuning(config: RunConfig, image_shape: tuple[int, ...], n_classes: int,
                store: Path | None) -> tuple[dict, str]:
    """{train_per_forward}: what a fine-tuning step costs per image against a forward pass of
    the same backbone (the backward pass through the unfrozen weights), timed on
    MobileNet_0.25 at the run's size: a steady fit epoch against a steady predict."""
    key = _key("fine-tuning", config.image_size, config.batch_size, list(image_shape))

    def measure() -> dict:
        spec = get("MobileNet_0.25")
        size = config.size_for(spec.input_size)
        keras.utils.set_random_seed(0)
        backbone = spec.build(size, pooling=config.pooling, weights=None)
        inputs, outputs = features.backbone_graph(spec, backbone, size, config, image_shape,
                                                  "uint8")
        model = keras.Model(inputs, head.build_head(n_classes)(outputs))
        finetune.unfreeze(backbone)
        head.compile_lesson(model, keras.optimizers.Adam(1e-5))
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (BASELINE_SAMPLES, *image_shape), dtype=np.uint8)
        y = rng.integers(0, n_classes, BASELINE_SAMPLES)
        timings = []
        for step in (lambda: model.fit(x, y, batch_size=config.batch_size, verbose=0),
                     lambda: model.predict(x, batch_size=config.batch_size, verbose=0)):
            step()  # traces
            start = time.perf_counter()
            step()
            timings.append(time.perf_counter() - start)
        return dict(train_per_forward=timings[0] / timings[1])

    return remembered(store, key, ("train_per_forward",), measure, "fine-tuning")


def two_epochs(train: Callable[[RunConfig], object], config: RunConfig) -> tuple[float, float]:
    """(first epoch s, steady epoch s) of `train(config)` run for two epochs."""
    times = train(replace(config, epochs=2, patience=2, verbose=0)).epoch_times
    return float(times[0]), float(times[1])


START_UP_CODE = ("from bench.engine.quiet import import_tensorflow; import_tensorflow(); "
                 "import bench.engine.routes")


def start_up(store: Path | None) -> tuple[dict, str]:
    """{seconds}: what an isolated child costs beside its run: Python started, TensorFlow and
    bench's engine imported, the process torn down at its end; one child, timed whole."""
    def measure() -> dict:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", START_UP_CODE], check=True,
                       capture_output=True)
        return dict(seconds=time.perf_counter() - start)

    return remembered(store, _key("child"), ("seconds",), measure, "start-up")
