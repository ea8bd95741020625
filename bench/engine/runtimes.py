"""Where the frozen backbone runs: TensorFlow's traced graph or OpenVINO's CPU runtime.

An Runtime maps a batch of raw images to features. Resize and preprocessing run in TensorFlow
in both (the Preprocess layer: the lesson's resize_with_pad, exact by definition); only the
frozen backbone moves. Both compute in float32 and agree within 1e-5 of the features' scale
(tests/test_runtimes.py), so the feature cache does not depend on the runtime.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from backbones import BackboneSpec
from bench.config import RunConfig
from bench.engine import features, openvino_backend


@dataclass
class RuntimeInfo:
    """What a row records about the runtime that computed its features."""

    runtime: str  # "tensorflow" or "openvino"
    version: str
    batch: int
    setup_s: float = 0.0  # one-time: conversion (0 when cached) and compilation
    probe_s: float = 0.0  # --runtime auto's timing of the runtimes it did not choose
    images_per_s: float | None = None  # steady extraction, resize and preprocessing included
    note: str = ""  # how it was chosen

    def to_fields(self) -> dict:
        return {f"runtime_{k}" if k != "runtime" else k: v for k, v in asdict(self).items()}


class Runtime:
    """A batch of raw images (uint8 or float, any size) -> float32 features (batch x width)."""

    info: RuntimeInfo

    def __call__(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class TensorFlowRuntime(Runtime):
    """Preprocessing and resize, then the backbone, as traced TensorFlow functions.

    For an extractor of features.backbone_graph the backbone is a function of its own
    (`backbone_function`, batches of float32 size x size x 3 images): OpenVINO's conversion
    freezes that traced function instead of tracing the backbone again. Any other extractor
    runs as one function (features.forward_function).
    """

    def __init__(self, extractor: keras.Model, image_shape: tuple[int, ...], dtype: str,
                 batch_size: int):
        self.extractor = extractor  # forward_function holds it weakly
        self.backbone_function = None
        parts = features.split_extractor(extractor)
        if parts is None:
            self.forward = features.forward_function(extractor, image_shape, dtype)
        else:
            preprocess, backbone = parts
            to_model = tf.function(lambda x: preprocess(x), input_signature=[
                tf.TensorSpec((None, *image_shape), tf.as_dtype(dtype))])
            size = preprocess.size
            self.backbone_function = tf.function(
                lambda x: backbone(x, training=False),
                input_signature=[tf.TensorSpec((None, size, size, 3), "float32")])
            self.forward = lambda x: self.backbone_function(to_model(x))
        self.info = RuntimeInfo("tensorflow", tf.__version__, batch_size, note="graph")

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.forward(images).numpy()


class OpenVinoRuntime(Runtime):
    """Preprocessing and resize traced in TensorFlow, the backbone compiled by OpenVINO."""

    def __init__(self, spec: BackboneSpec, backbone: keras.Model, size: int, config: RunConfig,
                 image_shape: tuple[int, ...], dtype: str, batch_size: int, key: str,
                 store: Path | None, traced=None):
        inputs = keras.Input(shape=image_shape, dtype=dtype, name="images")
        scaled = features.Preprocess(size, config.preprocess, spec.preprocess_input)(inputs)
        self.preprocess_model = keras.Model(inputs, scaled, name=f"{spec.name}_preprocess")
        self.preprocess = features.forward_function(self.preprocess_model, image_shape, dtype)
        # `traced`: TensorFlow's traced backbone function, when TensorFlow ran it already
        found = openvino_backend.converted(backbone, key, spec.name, store, traced)
        self.backbone = openvino_backend.CompiledBackbone(found.xml, batch_size, size, store)
        self.conversion_s = None if found.was_cached else found.seconds
        self.info = RuntimeInfo("openvino", openvino_backend.version(), batch_size,
                               setup_s=found.seconds + self.backbone.compile_s,
                               note="f32, converted model " + (
                                   "from the cache" if found.was_cached
                                   else f"converted now ({found.route})"))

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.backbone(self.preprocess(images).numpy())


def extract(runtime: Runtime, images: np.ndarray, verbose: int = 1,
            timer: features.ForwardTimer | None = None,
            done: np.ndarray | None = None) -> np.ndarray:
    """Runs `runtime` over `images` batch by batch; float32 features (N x width).

    `done` holds the features of the first images, already computed (by auto's probe): the
    extraction starts after them. Only one batch is ever upscaled: memory is the features
    plus a batch, whatever N.
    """
    n, batch_size = len(images), runtime.info.batch
    start = 0 if done is None else len(done)
    progress = keras.utils.Progbar(n, verbose=verbose, unit_name="image") if verbose else None
    out = None
    if done is not None and start:
        out = np.empty((n, done.shape[1]), dtype=np.float32)
        out[:start] = done
        if progress:
            progress.add(start)
    for first in range(start, n, batch_size):
        batch = images[first:first + batch_size]
        began = time.perf_counter()
        result = runtime(batch)
        if timer:
            timer.add(len(batch), time.perf_counter() - began)
        if out is None:
            out = np.empty((n, result.shape[1]), dtype=np.float32)
        out[first:first + len(batch)] = result
        if progress:
            progress.add(len(batch))
    return out if out is not None else np.empty((0, 0), dtype=np.float32)
