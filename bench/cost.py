"""What a sweep will cost before it runs: FLOPs per image and predicted extraction time.

FLOPs are TensorFlow's own count (`tf.compat.v1.profiler`, the statistics each op registers:
2 per multiply-add for convolutions and matmuls, plus bias adds, batch norm, ...) over one
image's forward graph, so they follow whatever the model really computes. The time per GFLOP
comes from a short calibration on this machine: a small reference backbone through the same
extraction path (`features.extract`) that a run uses.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from backbones import BackboneSpec, get
from bench import cache, features
from bench.config import RunConfig

# Columns of estimate()'s rows, in print order.
COLUMNS = ("backbone", "image_size", "gflops", "predicted_extract_s", "note")


def model_flops(model: keras.Model, input_shape: tuple[int, ...],
                dtype: str = "float32") -> int:
    """Floating-point operations of one forward pass (training=False) on one input."""
    forward = tf.function(lambda x: model(x, training=False))
    graph = forward.get_concrete_function(tf.TensorSpec((1, *input_shape), dtype)).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    tf_logger = tf.get_logger()
    level = tf_logger.level
    tf_logger.setLevel(logging.ERROR)  # the v1 API's deprecation notice, not our business
    try:
        return int(tf.compat.v1.profiler.profile(graph=graph, options=options).total_float_ops)
    finally:
        tf_logger.setLevel(level)


def backbone_flops(spec: BackboneSpec, size: int, pooling: str = "max",
                   store: str | os.PathLike | None = None) -> int:
    """FLOPs of the no-top backbone on one size x size image (built with weights=None).

    Building the largest models takes seconds each (their random initialisation), so counts
    are kept in memory and, given `store`, in a JSON file there: a second dry run is instant.
    """
    key = json.dumps([spec.name, dict(spec.kwargs), size, pooling, keras.__version__],
                     sort_keys=True, default=str)
    if key in _FLOPS:
        return _FLOPS[key]
    path = Path(store) / "flops.json" if store else None
    known = _read_json(path) if path else {}
    if key not in known:
        model = spec.build(size, pooling=pooling, weights=None)
        known[key] = model_flops(model, (size, size, 3))
        del model
        gc.collect()
        if path:
            _write_json(path, {**_read_json(path), key: known[key]})
    _FLOPS[key] = int(known[key])
    return _FLOPS[key]


_FLOPS: dict[str, int] = {}


def _read_json(path: Path) -> dict:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):  # absent or damaged: counted again
        return {}


def _write_json(path: Path, data: dict) -> None:
    """Atomically (a temporary file renamed), so a concurrent reader never sees half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=0, sort_keys=True)
    os.replace(tmp, path)


@dataclass(frozen=True)
class Calibration:
    """How fast this machine extracts features, measured on a reference backbone."""

    reference: str
    image_size: int
    images: int  # timed (after one warm-up batch that absorbs tracing)
    seconds: float
    gflops_per_image: float

    @property
    def seconds_per_gflop(self) -> float:
        return self.seconds / (self.images * self.gflops_per_image)


def calibrate(config: RunConfig, image_shape: tuple[int, ...] = (64, 64, 3),
              reference: str = "MobileNetV2", n_images: int = 96) -> Calibration:
    """Times `reference` (random weights) on random uint8 images through features.extract.

    The reference is mid-way in compute per byte among the keras.applications families:
    MobileNet_0.25 spends most of its time outside its FLOPs (memory-bound depthwise layers),
    VGG almost none. A few seconds on two CPU cores.
    """
    spec = get(reference)
    size = config.size_for(spec.input_size)
    keras.utils.set_random_seed(0)
    backbone = spec.build(size, pooling=config.pooling, weights=None)
    inputs, outputs = features.backbone_graph(spec, backbone, size, config, image_shape,
                                              "uint8")
    extractor = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n_images, *image_shape), dtype=np.uint8)
    bs = config.extract_batch_size
    features.extract(extractor, images[:bs], bs, verbose=0)  # warm-up: tracing, allocation
    start = time.perf_counter()
    features.extract(extractor, images, bs, verbose=0)
    seconds = time.perf_counter() - start
    gflops = backbone_flops(spec, size, config.pooling) / 1e9
    del extractor, backbone
    gc.collect()
    return Calibration(reference, size, n_images, seconds, gflops)


def estimate(specs: Iterable[BackboneSpec], config: RunConfig, n_images: int,
             calibration: Calibration | None = None,
             image_shape: tuple[int, ...] = (64, 64, 3)) -> list[dict]:
    """One row per backbone (COLUMNS): GFLOPs per image at the size `config` gives it, and
    the predicted seconds to extract features of `n_images` images on this machine.

    A backbone that cannot be built at that size gets None and a note, as a sweep row would.
    Calibrates first unless `calibration` is given.
    """
    calibration = calibration or calibrate(config, image_shape)
    store = (config.cache_dir or cache.default_cache_dir()) if config.cache else None
    rows = []
    for spec in specs:
        if getattr(spec, "kind", "backbone") == "baseline":
            rows.append(dict(backbone=spec.name, image_size=None, gflops=None,
                             predicted_extract_s=0.0,
                             note="trained from scratch on the raw images: no extraction"))
            continue
        size = config.size_for(spec.input_size)
        row = dict(backbone=spec.name, image_size=size, gflops=None, predicted_extract_s=None,
                   note="")
        try:
            gflops = backbone_flops(spec, size, config.pooling, store) / 1e9
        except Exception as err:  # one backbone never stops the estimate
            row["note"] = " ".join(str(err).split()) or type(err).__name__
        else:
            row["gflops"] = gflops
            row["predicted_extract_s"] = n_images * gflops * calibration.seconds_per_gflop
        rows.append(row)
    return rows
