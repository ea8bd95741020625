"""The three ways a run trains: on cached features, end to end, and a baseline from scratch.

Each returns an Outcome; the runner turns it into a result row.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from backbones import BackboneSpec, BaselineSpec
from bench.cache import CachedFeatures, FeatureCache, default_cache_dir, process_caches
from bench.config import RunConfig
from bench.data import Dataset
from bench.engine import features, head, probes, runtime_choice, runtimes
from bench.engine.splits import Splits, make_splits
from bench.identity import RunIdentity


@dataclass(frozen=True)
class Outcome:
    """What one path produced: its training, its predictions on the test file, its size."""

    history: dict[str, list[float]]  # accuracy, val_accuracy, loss, val_loss per epoch
    epoch_times: list[float]
    labels: np.ndarray  # of the test file
    predictions: np.ndarray  # on the test file
    params_total: int  # of the full model: backbone and head
    params_trainable: int
    feature_width: int | None  # None: a baseline has no frozen features
    extract_s: float = 0.0  # what extracting the features cost (0: the backbone ran in fit)
    features_cached: bool = False
    # steady-state forward ms per image of the frozen backbone, measured while extracting
    # (None: no extraction, or an old cache file that did not keep it)
    infer_ms: float | None = None
    # the RunResult fields of the runtime that computed the features (runtimes.RuntimeInfo)
    runtime_fields: dict[str, Any] = field(default_factory=dict)
    # the RunResult fields of the --probes run on the cached features ({} when none ran)
    probe_fields: dict[str, Any] = field(default_factory=dict)
    # what export rebuilds the model from: the head's weights (a baseline's: the whole
    # model's) as they were when the test file was predicted, in get_weights() order
    head_weights: list[np.ndarray] | None = None
    # holdout only: the test file's predictions after every epoch, recorded and never used
    # to train or to stop (what choosing the epoch on the test file would have reported)
    test_predictions_by_epoch: list[np.ndarray] = field(default_factory=list)
    # the RunResult fields of a second stage (engine/finetune.py; {} for a frozen run)
    stage_fields: dict[str, Any] = field(default_factory=dict)


def cached(spec: BackboneSpec, config: RunConfig, data: Dataset,
           ident: RunIdentity) -> Outcome:
    """The frozen backbone runs once per split (or not at all, when its features are cached);
    the head trains on the features."""
    found, was_cached = _features(spec, config, data, ident)
    splits = make_splits(found.train, found.val, data, config)
    keras.utils.set_random_seed(config.seed)
    model = head.build_head(data.n_classes)
    model.build((None, found.train.shape[1]))
    # The full model's counts: the frozen backbone contributes only non-trainable parameters.
    trained = train(model, splits, config, feature_width=int(found.train.shape[1]),
                     on_features=True, params_backbone=found.params_backbone,
                     extract_s=found.extract_s, features_cached=was_cached)
    # the probes see what the head saw: its training split, then the test file's images
    return replace(trained, infer_ms=found.infer_ms, runtime_fields=dict(found.runtime),
                   probe_fields=probes.run(config.probes, splits, config.seed))


def end_to_end(spec: BackboneSpec, config: RunConfig, data: Dataset,
               ident: RunIdentity) -> Outcome:
    """The episode's way: `model.fit` on images -> resize -> frozen backbone -> head."""
    _, inputs, outputs = frozen_backbone(spec, config, data, ident)
    keras.utils.set_random_seed(config.seed)
    model_head = head.build_head(data.n_classes)
    model = keras.Model(inputs, model_head(outputs), name=f"{spec.name}_lesson")
    trained = _train_on_images(model, config, data, feature_width=int(outputs.shape[-1]),
                               head_model=model_head)
    # the backbone ran inside Keras' fit: TensorFlow, whatever --runtime says
    info = runtimes.RuntimeInfo("tensorflow", tf.__version__, config.batch_size,
                              note="end to end: the backbone runs inside model.fit")
    return replace(trained, runtime_fields=info.to_fields())


def from_scratch(spec: BaselineSpec, config: RunConfig, data: Dataset) -> Outcome:
    """The previous episode's models: raw images / 255, every weight trained."""
    keras.utils.set_random_seed(config.seed)
    inputs = keras.Input(shape=data.image_shape, dtype=data.train_images.dtype.name)
    scaled = keras.layers.Rescaling(1 / 255, name="pixels_over_255")(inputs)
    body = spec.builder(data.image_shape, data.n_classes)
    model = keras.Model(inputs, body(scaled), name=spec.name.replace("-", "_"))
    return _train_on_images(model, config, data, feature_width=None)


def frozen_backbone(spec: BackboneSpec, config: RunConfig, data: Dataset,
                     ident: RunIdentity) -> tuple[keras.Model, keras.KerasTensor,
                                                  keras.KerasTensor]:
    """(backbone, images input, features): the backbone drawn from the backbone seed."""
    keras.utils.set_random_seed(config.effective_backbone_seed)
    backbone = features.build_backbone(spec, ident.size, config, ident.weights)
    if ident.weights.source == "random":
        features.reestimate_batchnorm(backbone, spec, ident.size, config, data.train_images)
    inputs, outputs = features.backbone_graph(
        spec, backbone, ident.size, config, data.image_shape, data.train_images.dtype.name
    )
    return backbone, inputs, outputs


def _features(spec: BackboneSpec, config: RunConfig, data: Dataset,
              ident: RunIdentity) -> tuple[CachedFeatures, bool]:
    """(features, whether they came from a cache): memory, then disk, then the backbone."""
    key = ident.feature_key(spec, config)
    memory = process_caches().last_features
    if key in memory:
        return memory[key], True
    store = FeatureCache(config.cache_dir or default_cache_dir()) if config.cache else None
    found = store.load(key, spec.name, data.n_train, data.n_test) if store else None
    was_cached = found is not None
    if found is None:
        found = _extract(spec, config, data, ident)
        if store:
            store.save(key, spec.name, found)
    memory.clear()  # one entry: a sweep moves on to the next backbone and never comes back
    memory[key] = found
    return found, was_cached


def _extract(spec: BackboneSpec, config: RunConfig, data: Dataset,
             ident: RunIdentity) -> CachedFeatures:
    """extract_s counts everything: conversion, auto's probing, tracing and the batches;
    the runtime's images/s only the batches after the first (steady state)."""
    start = time.perf_counter()
    backbone, inputs, outputs = frozen_backbone(spec, config, data, ident)
    extractor = keras.Model(inputs, outputs, name=f"{spec.name}_features")
    # converted models and measured rates are kept under --no-cache too: they do not depend on
    # the data, and a conversion is paid once per machine
    store = Path(config.cache_dir or default_cache_dir())
    runtime, done = runtime_choice.choose_runtime(spec, backbone, extractor, config, ident,
                                                  data.train_images, data.n_train + data.n_test,
                                                  store)
    timer = features.ForwardTimer()  # one timer: the validation split's batches count too
    if done is not None:
        timer.batches_seen = 1  # the probe's first call (tracing, warm-up) is behind us
    train_x = runtimes.extract(runtime, data.train_images, config.verbose, timer, done=done)
    val_x = runtimes.extract(runtime, data.test_images, config.verbose, timer)
    if timer.ms_per_image:
        runtime.info.images_per_s = 1000 / timer.ms_per_image
        runtime_choice.remember(runtime, spec, config, ident, data.train_images, store)
    return CachedFeatures(train_x, val_x, time.perf_counter() - start, backbone.count_params(),
                          timer.ms_per_image, runtime.info.to_fields())


def _train_on_images(model: keras.Model, config: RunConfig, data: Dataset,
                     feature_width: int | None, head_model: keras.Model | None = None,
                     ) -> Outcome:
    splits = make_splits(data.train_images, data.test_images, data, config)
    return train(model, splits, config, feature_width=feature_width, head_model=head_model)


def train(model: keras.Model, splits: Splits, config: RunConfig, *, feature_width: int | None,
          on_features: bool = False, params_backbone: int = 0, extract_s: float = 0.0,
          features_cached: bool = False, head_model: keras.Model | None = None,
          optimizer: keras.optimizers.Optimizer | None = None) -> Outcome:
    """The shared training (head.train) and the one prediction on the test file.

    `head_model` is the part whose weights export needs (default: all of `model`);
    `optimizer` replaces the lesson's Adam (head.train).
    """
    by_epoch: list[np.ndarray] = []

    def record(m: keras.Model) -> None:
        by_epoch.append(np.argmax(_predict(m, splits.x_test, config, on_features), axis=-1))

    holdout = config.protocol == "holdout"
    trained = head.train(model, splits.x_train, splits.y_train, splits.x_watch, splits.y_watch,
                         config, restore_best=holdout, observe=record if holdout else None,
                         optimizer=optimizer)
    return Outcome(
        test_predictions_by_epoch=by_epoch,
        history=trained.history, epoch_times=trained.epoch_times,
        labels=np.asarray(splits.y_test),
        predictions=np.argmax(_predict(model, splits.x_test, config, on_features), axis=-1),
        params_total=params_backbone + model.count_params(),
        params_trainable=int(sum(np.prod(w.shape) for w in model.trainable_weights)),
        feature_width=feature_width, extract_s=extract_s, features_cached=features_cached,
        head_weights=(head_model or model).get_weights(),
    )


def _predict(model: keras.Model, x: np.ndarray, config: RunConfig,
             on_features: bool) -> np.ndarray:
    """Logits. On cached features the head is called directly: `predict` would trace a function
    for one call on a small matrix, a few tenths of a second for microseconds of arithmetic."""
    if on_features:
        return np.concatenate([keras.ops.convert_to_numpy(model(x[i:i + 4096], training=False))
                               for i in range(0, len(x), 4096)])
    return model.predict(x, batch_size=config.batch_size, verbose=0)
