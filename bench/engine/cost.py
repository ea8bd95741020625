"""What a backbone costs: FLOPs per image (a row's gflops) and, before a sweep runs, its
predicted extraction time.

Each backbone's forward graph for one image gives three numbers: its FLOPs (TensorFlow's own
count, `tf.compat.v1.profiler`: 2 per multiply-add in convolutions and matmuls, plus bias
adds, batch norm, ...), the values its operations write (activations: what memory-bound
layers such as depthwise convolutions and batch norms cost) and its number of operations
(what tracing costs). A short calibration on this machine times two references through the
extraction path a run uses: VGG16, nearly all FLOPs, and MobileNet_0.25, nearly all memory
traffic and per-op overhead. Then

    predicted seconds = ops x trace s/op + images x (GFLOPs x s/GFLOP + M values x s/M values)

per runtime, plus OpenVINO's conversion where auto would convert (predicted from the traced
TensorFlow time as runtime_choice predicts it, and 0 once cached: the dry run's cold and warm
totals). FLOPs alone mispredict by 3x either way across families (ResNet50 runs at a quarter of
MobileNetV2's time per FLOP on two cores); see results/PERF.md for the comparison.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from backbones import BackboneSpec, Spec, get
from backbones.graph_stats import STATS_FILE, STORED_SIDE, stored_sides, stored_stats
from bench import cache
from bench.config import RunConfig
from bench.engine import features, openvino_backend, runtime_choice, runtimes
from bench.engine.runtime_forecast import predict_runtimes
from bench.fsio import read_json_store, remember_json, write_text_atomic
from bench.identity import is_baseline

# Columns of estimate()'s rows, in print order.
COLUMNS = ("backbone", "image_size", "gflops", "runtime", "predicted_extract_s",
           "predicted_warm_s", "predicted_tensorflow_s", "predicted_build_s",
           "tensorflow_images_per_s", "note")

_CALLS = frozenset({"StatefulPartitionedCall", "PartitionedCall"})
# Graph plumbing that moves no data: left out of the activation count.
_NO_DATA = frozenset({"Const", "Identity", "NoOp", "Placeholder", "ReadVariableOp", "Shape",
                      "Reshape", "Squeeze", "ExpandDims", "StopGradient"})


@dataclass(frozen=True)
class GraphStats:
    """One forward pass (training=False) on one input."""

    flops: int
    activations: int  # float values written by the operations that compute something
    ops: int  # operations in the traced graph
    params: int = 0  # weights: what converting to OpenVINO copies and folds
    # values written by nested function calls: Keras' grouped convolutions (ConvNeXt's 7x7
    # depthwise), which its TensorFlow backend runs through XLA, ~100x slower per value on a
    # CPU than the rest of the graph, and which the FLOP count does not see
    called: int = 0

    @property
    def gflops(self) -> float:
        return self.flops / 1e9


def graph_stats(model: keras.Model, input_shape: tuple[int, ...],
                dtype: str = "float32") -> GraphStats:
    """FLOPs, activations and op count of `model` on one input of `input_shape`."""
    forward = tf.function(lambda x: model(x, training=False))
    graph = forward.get_concrete_function(tf.TensorSpec((1, *input_shape), dtype)).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    tf_logger = tf.get_logger()
    level = tf_logger.level
    tf_logger.setLevel(logging.ERROR)  # the v1 API's deprecation notice, not our business
    try:
        flops = int(tf.compat.v1.profiler.profile(graph=graph, options=options).total_float_ops)
    finally:
        tf_logger.setLevel(level)
    operations = graph.get_operations()
    activations = sum(
        int(np.prod(out.shape)) for op in operations if op.type not in _NO_DATA
        for out in op.outputs if out.dtype.is_floating and out.shape.is_fully_defined()
    )
    called = sum(
        int(np.prod(out.shape)) for op in operations if op.type in _CALLS
        for out in op.outputs if out.dtype.is_floating and out.shape.is_fully_defined()
    )
    return GraphStats(flops, activations, len(operations), int(model.count_params()), called)


def backbone_stats(spec: BackboneSpec, size: int, pooling: str = "max",
                   store: str | os.PathLike | None = None) -> GraphStats:
    """GraphStats of the no-top backbone on one size x size image (built with weights=None).

    Building the largest models takes seconds each (their random initialisation), so the
    numbers are kept in memory and, given `store`, in a JSON file there: a second dry run is
    instant.
    """
    key = json.dumps([spec.name, dict(spec.kwargs), size, pooling, keras.__version__, "called"],
                     sort_keys=True, default=str)
    known_stats = cache.process_caches().graph_stats
    if key not in known_stats:
        path = Path(store) / cache.GRAPH_STATS_FILE if store else None
        counts = read_json_store(path).get(key)
        try:
            known_stats[key] = GraphStats(**counts)
        except TypeError:  # not there, or not the fields of GraphStats: counted
            model = spec.build(size, pooling=pooling, weights=None)
            known_stats[key] = graph_stats(model, (size, size, 3))
            del model
            gc.collect()
            remember_json(path, key, known_stats[key].__dict__)
    return known_stats[key]


def estimated_stats(spec: BackboneSpec, size: int, pooling: str = "max",
                    store: str | os.PathLike | None = None) -> GraphStats:
    """The backbone's GraphStats as the registry stores them (backbones/graph_stats.py: no
    model built), else counted by backbone_stats (a row the registry does not store). Raises
    what building would for a size below the backbone's minimum."""
    spec.check_size(size)
    counts = stored_stats(spec.name, size) if spec.factory is None else None
    return GraphStats(**counts) if counts else backbone_stats(spec, size, pooling, store)


def run_gflops(spec: Spec, size: int, config: RunConfig) -> float | None:
    """A row's gflops: one forward pass of the frozen backbone at `size`, counted once per
    backbone and size (kept beside the feature cache). None for a baseline (no frozen
    backbone) and when the count fails: a missing cost never costs a trained row. At a side
    the registry stores (160 px, the native one) its exact count is read, no model built."""
    if is_baseline(spec):
        return None
    if spec.factory is None and size in stored_sides(spec.name):
        return GraphStats(**stored_stats(spec.name, size)).gflops
    try:
        return backbone_stats(spec, size, config.pooling, _store(config)).gflops
    except Exception:  # the row already ran this backbone at this size; only counting failed
        return None


def _store(config: RunConfig) -> Path:
    """Where GRAPH_STATS_FILE lives: the cache folder (kept under --no-cache, which concerns
    features only)."""
    return Path(config.cache_dir or cache.default_cache_dir())


@dataclass(frozen=True)
class Calibration:
    """This machine's extraction speed in one runtime, solved from two timed reference
    backbones."""

    seconds_per_gflop: float
    seconds_per_mvalue: float  # per million activation values written
    trace_seconds_per_op: float  # tracing and the first call, per graph operation
    timings: tuple[tuple[str, int, float, float], ...] = ()  # (name, images, s, first call s)
    runtime: str = "tensorflow"
    # TensorFlow: per million values of nested (XLA-compiled) calls; 0 for OpenVINO, which
    # converts them into plain convolutions
    seconds_per_mcalled: float = 0.0
    # building a backbone (weights=None): per graph operation (layers made and connected) and
    # per million parameters (initialised)
    build_seconds_per_op: float = 0.0
    build_seconds_per_mparam: float = 0.0
    # TensorFlow: re-estimating BatchNormalization (random weights) against inference: per
    # image (the training-mode pass computes every layer's batch moments) and its tracing
    batchnorm_per_forward: float = 1.0
    batchnorm_trace_per_trace: float = 1.0

    def predict_build(self, stats: GraphStats) -> float:
        return stats.ops * self.build_seconds_per_op + stats.params / 1e6 * (
            self.build_seconds_per_mparam)

    def predict(self, stats: GraphStats, n_images: int) -> float:
        """Tracing (or OpenVINO's compiling) and `n_images` images; a conversion is predicted
        apart, as --runtime auto predicts it (runtime_choice.conversion_estimate)."""
        per_image = (stats.gflops * self.seconds_per_gflop
                     + stats.activations / 1e6 * self.seconds_per_mvalue
                     + stats.called / 1e6 * self.seconds_per_mcalled)
        one_time = stats.ops * self.trace_seconds_per_op
        return one_time + n_images * per_image


# (reference, images timed) per runtime: VGG16 is all FLOPs, MobileNet_0.25 all memory
# traffic and ops. Each is timed for about half a second or more on two CPU cores: with 96
# images OpenVINO's MobileNet_0.25 took 0.04-0.18 s, and its noise, amplified by solving for
# the per-activation rate, moved that rate 5x between calibrations minutes apart.
REFERENCES = {"tensorflow": (("VGG16", 16), ("MobileNet_0.25", 192)),
              "openvino": (("VGG16", 16), ("MobileNet_0.25", 512))}


def calibrate(config: RunConfig, image_shape: tuple[int, ...] = (64, 64, 3),
              references: tuple[tuple[str, int], ...] | None = None,
              runtime: str = "tensorflow") -> Calibration:
    """Times the references (random weights, random uint8 images) through the extraction path
    of `runtime` at the size and batch `config` gives; about ten seconds on two CPU cores
    (OpenVINO: plus converting the two into a throw-away folder)."""
    rows, timings, first_call, builds, batchnorm = [], [], [], [], []
    for name, n_images in references or REFERENCES[runtime]:
        spec = get(name)
        size = config.size_for(spec.input_size)
        keras.utils.set_random_seed(0)
        start = time.perf_counter()
        backbone = spec.build(size, pooling=config.pooling, weights=None)
        built = time.perf_counter() - start
        bs = min(config.extract_batch_size, n_images)
        run = _reference_runtime(runtime, spec, backbone, size, config, image_shape, bs)
        images = np.random.default_rng(0).integers(0, 256, (n_images, *image_shape),
                                                   dtype=np.uint8)
        start = time.perf_counter()
        runtimes.extract(run, images[:bs], verbose=0)  # tracing + one batch
        first = time.perf_counter() - start
        start = time.perf_counter()
        runtimes.extract(run, images, verbose=0)
        seconds = time.perf_counter() - start
        stats = graph_stats(backbone, (size, size, 3))
        rows.append((stats.gflops, stats.activations / 1e6, seconds / n_images))
        builds.append((stats.ops, stats.params / 1e6, built))
        first_call.append((stats.ops, max(first - seconds * bs / n_images, 0.0)))
        if runtime == "tensorflow" and spec.family not in NO_BATCHNORM:
            batchnorm.append(_batchnorm_pass(spec, backbone, size, config, images,
                                             seconds / n_images, first_call[-1][1]))
        timings.append((name, n_images, seconds, first))
        del run, backbone
        gc.collect()
    (g1, a1, t1), (g2, a2, t2) = rows[:2]
    per_gflop, per_mvalue = np.linalg.solve([[g1, a1], [g2, a2]], [t1, t2])
    ops, first = max(first_call)  # the reference with the most ops sets the tracing rate
    (o1, p1, b1), (o2, p2, b2) = builds[:2]
    per_op, per_mparam = np.linalg.solve([[o1, p1], [o2, p2]], [b1, b2])
    return Calibration(max(float(per_gflop), 0.0), max(float(per_mvalue), 0.0), first / ops,
                       tuple(timings), runtime,
                       grouped_conv_seconds_per_mvalue() if runtime == "tensorflow" else 0.0,
                       max(float(per_op), 0.0), max(float(per_mparam), 0.0),
                       *(batchnorm[0] if batchnorm else (1.0, 1.0)))


def _batchnorm_pass(spec: BackboneSpec, backbone: keras.Model, size: int, config: RunConfig,
                    images: np.ndarray, forward_s: float, trace_s: float) -> tuple[float, float]:
    """Re-estimating BatchNormalization (features.batchnorm_pass, the training-mode step
    reestimate_batchnorm runs) against inference: (its steady seconds per image over an
    inference pass's `forward_s`, its first call's tracing over the inference pass's
    `trace_s`), each at least 1: the training-mode graph is the inference one and more."""
    batch = features.BATCHNORM_BATCH
    with features.batchnorm_pass(backbone, spec, size, config) as (step, _):
        start = time.perf_counter()
        step(images[:batch])  # traces
        first = time.perf_counter() - start
        start = time.perf_counter()
        for done in range(0, len(images), batch):
            step(images[done:done + batch])
        per_image = (time.perf_counter() - start) / len(images)
    traced = max(first - per_image * batch, 0.0)
    return max(per_image / forward_s, 1.0), max(traced / max(trace_s, 1e-9), 1.0)


def grouped_conv_seconds_per_mvalue(shape: tuple[int, ...] = (16, 40, 40, 96)) -> float:
    """Seconds per million output values of a Keras grouped convolution in TensorFlow: a
    7x7 depthwise Conv2D(groups=channels) as in ConvNeXt's first stage at 160 px."""
    layer = keras.layers.Conv2D(shape[-1], 7, padding="same", groups=shape[-1])
    x = tf.random.uniform(shape)
    forward = tf.function(lambda x: layer(x))
    forward(x).numpy()  # builds, traces, compiles
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        forward(x).numpy()
        best = min(best, time.perf_counter() - start)
    return best / (np.prod(shape) / 1e6)


def _reference_runtime(runtime: str, spec: BackboneSpec, backbone: keras.Model, size: int,
                      config: RunConfig, image_shape: tuple[int, ...], batch: int):
    if runtime == "openvino":
        # store None: converted into a temporary folder, so the conversion is timed each time
        return runtimes.OpenVinoRuntime(spec, backbone, size, config, image_shape, "uint8",
                                      batch, key=f"calibration-{spec.name}", store=None)
    inputs, outputs = features.backbone_graph(spec, backbone, size, config, image_shape,
                                              "uint8")
    return runtimes.TensorFlowRuntime(keras.Model(inputs, outputs), image_shape, "uint8", batch)


def runtimes_to_calibrate(config: RunConfig) -> tuple[str, ...]:
    """The runtimes --runtime can choose among on this machine."""
    if config.runtime != "auto":
        return (config.runtime,)

    if runtime_choice.has_gpu() or openvino_backend.version() is None:
        return ("tensorflow",)
    return ("tensorflow", "openvino")


# Families whose backbones hold no BatchNormalization: nothing to re-estimate for random weights
# (ConvNeXt normalises with LayerNormalization).
NO_BATCHNORM = frozenset({"vgg16", "vgg19", "convnext"})


def estimate(specs: Iterable[Spec], config: RunConfig, n_images: int,
             calibration: Calibration | dict[str, Calibration] | None = None,
             image_shape: tuple[int, ...] = (64, 64, 3),
             progress: Callable[[int, int, str], None] | None = None,
             n_train: int | None = None) -> list[dict]:
    """One row per backbone (COLUMNS): GFLOPs per image at the size `config` gives it, the
    runtime --runtime would choose, and the predicted seconds of a run's extract_s on this
    machine for `n_images` images (`n_train` of them for training, default all): building
    the backbone, re-estimating its BatchNormalization statistics for random weights, tracing,
    OpenVINO's conversion where it pays and the batches; with nothing cached, with the
    conversion cached (warm), and in TensorFlow alone. `tensorflow_images_per_s` is
    TensorFlow's steady rate (what the end-to-end route pays per image and epoch).

    Each runtime's rate is the one measured on an earlier run of this backbone (remembered
    beside the feature cache) when there is one, else the calibration's model; FLOPs and
    activations are the registry's stored counts (backbones/graph_stats.py). A backbone
    that cannot be built at that size gets None and a note, as a sweep row would; a
    from-scratch baseline has no extraction. Calibrates TensorFlow and every runtime
    --runtime can choose unless given calibrations. `progress(i, n, name)` is called before
    each backbone.
    """
    if isinstance(calibration, Calibration):
        calibration = {calibration.runtime: calibration}
    calibrations = calibration or {
        name: calibrate(config, image_shape, runtime=name)
        for name in dict.fromkeys(("tensorflow", *runtimes_to_calibrate(config)))}
    choices = {k: calibrations[k] for k in runtimes_to_calibrate(config) if k in calibrations}
    reference = calibrations.get("tensorflow") or next(iter(calibrations.values()))
    store = _store(config)
    specs = list(specs)
    rows = []
    for i, spec in enumerate(specs, 1):
        if progress:
            progress(i, len(specs), spec.name)
        if is_baseline(spec):
            rows.append(dict(dict.fromkeys(COLUMNS), backbone=spec.name,
                             predicted_extract_s=0.0, predicted_warm_s=0.0,
                             predicted_tensorflow_s=0.0,
                             note="trained from scratch on the raw images: no extraction"))
            continue
        size = config.size_for(spec.input_size)
        row = dict(dict.fromkeys(COLUMNS), backbone=spec.name, image_size=size, note="")
        try:
            stats = estimated_stats(spec, size, config.pooling, store)
        except Exception as err:  # one backbone never stops the estimate
            row["note"] = " ".join(str(err).split()) or type(err).__name__
        else:
            memory = _remembered(spec, config, size, image_shape, store)
            row.update(predict_runtimes(spec.name, stats, n_images, choices or calibrations,
                                        memory, runtime_choice.machine_memory(store)),
                       gflops=stats.gflops)
            row.update(_with_setup(row, spec, stats, config, reference, memory,
                                   n_images if n_train is None else n_train))
        rows.append(row)
    return rows


def _with_setup(row: dict, spec: BackboneSpec, stats: GraphStats, config: RunConfig,
                reference: Calibration, memory: dict, n_train: int) -> dict:
    """The row's extraction seconds with building the backbone (and, for random weights,
    re-estimating its BatchNormalization statistics: one traced training-mode pass in
    TensorFlow over at most features.BATCHNORM_IMAGES training images, its tracing and each
    image costing what the calibration measured against inference) added; TensorFlow's steady
    rate."""
    tf_rate = (memory.get("rates") or {}).get("tensorflow") or 1 / max(
        reference.predict(stats, 1) - reference.predict(stats, 0), 1e-9)
    setup = reference.predict_build(stats)
    if config.weights == "random" and spec.family not in NO_BATCHNORM:
        setup += (reference.predict(stats, 0) * reference.batchnorm_trace_per_trace
                  + min(n_train, features.BATCHNORM_IMAGES) * (
                      reference.batchnorm_per_forward / tf_rate))
    out = {k: row[k] + setup for k in ("predicted_extract_s", "predicted_warm_s",
                                       "predicted_tensorflow_s") if row.get(k) is not None}
    return dict(out, predicted_build_s=setup, tensorflow_images_per_s=float(tf_rate))


def _remembered(spec: BackboneSpec, config: RunConfig, size: int,
                image_shape: tuple[int, ...], store: Path) -> dict:
    """What earlier runs of this backbone measured on this machine: rates, tracing, conversion."""
    return runtime_choice.remembered(spec, config, size, image_shape, "uint8", store)


def write_stored_stats(path: Path = STATS_FILE, names: Iterable[str] | None = None) -> None:
    """Counts every registry backbone (or those named) at 160 px and at its native side, as
    backbones/graph_stats.py reads them, and writes the table to `path`."""
    from backbones.registry import rows

    wanted = names or [r["name"] for r in rows() if r["family"] != "baseline"]
    specs = [get(name) for name in sorted(set(wanted))]
    table = json.loads(path.read_text()) if path.exists() else {}
    for spec in specs:
        for side in sorted({STORED_SIDE, spec.input_size}):
            model = spec.build(side, pooling="max", weights=None)
            stats = graph_stats(model, (side, side, 3))
            table.setdefault(spec.name, {})[str(side)] = stats.__dict__
            del model
            gc.collect()
        print(f"{spec.name}: {', '.join(table[spec.name])}", flush=True)
    write_text_atomic(path, json.dumps(table, indent=0, sort_keys=True))


if __name__ == "__main__":  # python -m bench.engine.cost --write-stats [NAME ...]
    import sys

    if sys.argv[1:2] != ["--write-stats"]:
        sys.exit("usage: python -m bench.engine.cost --write-stats [NAME ...]")
    write_stored_stats(names=sys.argv[2:] or None)
