"""run_one(spec, config, data) -> RunResult: one backbone (or baseline) under one protocol."""

from __future__ import annotations

import functools
import os
import platform
import statistics
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from backbones import BackboneSpec, BaselineSpec
from bench import cache, stats
from bench.config import RunConfig
from bench.data import Dataset
from bench.engine import features, head
from bench.identity import (
    RunIdentity,
    file_sha256,
    identify,
    is_baseline,
    path_name,
    size_or_none,
)
from bench.provenance import git_commit
from bench.result import STATUS_ERROR, STATUS_OK, RunResult

Spec = BackboneSpec | BaselineSpec


def holdout_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded (train, holdout) indices: `fraction` of each class, at least one."""
    rng = np.random.default_rng(seed)
    train, held = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = min(max(1, round(fraction * len(idx))), len(idx) - 1)
        held.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held))


@dataclass(frozen=True)
class Splits:
    """What trains, what early stopping watches, and what the reported predictions are on."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_eval: np.ndarray  # the test file, in both protocols
    y_eval: np.ndarray


def make_splits(x_train_all: np.ndarray, x_test: np.ndarray, data: Dataset,
                config: RunConfig) -> Splits:
    """lesson: train on all of train, watch the test file. holdout: watch a stratified part of
    train; the test file is only predicted once at the end (its labels never reach training)."""
    if config.protocol == "holdout":
        tr, va = holdout_split(data.train_labels, config.val_fraction,
                               config.effective_backbone_seed)
        return Splits(x_train_all[tr], data.train_labels[tr], x_train_all[va],
                      data.train_labels[va], x_test, data.val_labels)
    return Splits(x_train_all, data.train_labels, x_test, data.val_labels, x_test,
                  data.val_labels)


def run_one(spec: Spec, config: RunConfig, data: Dataset,
            data_checksum: str | None = None) -> RunResult:
    """Trains the lesson head on one frozen backbone (or a baseline from scratch), one seed.

    Pure in the sense a sweep executor needs: everything it depends on is in its arguments,
    everything it produces is in the returned row (nothing is written but the feature cache).
    Any failure becomes an error row: a sweep never dies of one model.
    """
    if config.seeds != 1:
        raise ValueError("run_one trains one seed; use run_seeds for config.seeds > 1")
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    start = time.perf_counter()
    common = dict(
        backbone=spec.name,
        family=spec.family,
        kind=spec.kind,
        imagenet_top1=spec.top1,
        preprocess="lesson" if is_baseline(spec) else config.preprocess,
        pooling=config.pooling,
        path=path_name(spec, config),
        protocol=config.protocol,
        seed=config.seed,
        epochs=config.epochs,
        patience=config.patience,
        batch_size=config.batch_size,
        data=data.source,
        n_train=data.n_train,
        n_val=data.n_val,
        n_classes=data.n_classes,
        class_names=list(data.class_names),
        keras_version=keras.__version__,
        tf_version=tf.__version__,
        started_at=started_at,
        **provenance(),
    )
    ident = None
    try:
        ident = identify(spec, config, data, data_checksum)
        if is_baseline(spec):
            outcome = _run_baseline(spec, config, data)
        elif config.end_to_end:
            outcome = _run_end_to_end(spec, ident.size, config, data, ident.weights)
        else:
            outcome = _run_cached(spec, config, data, ident)
    except Exception as err:  # a sweep never dies of one model
        return RunResult(
            status=STATUS_ERROR,
            error=_describe(err),
            weights=ident.weights.label if ident else config.weights,
            image_size=ident.size if ident else size_or_none(spec, config),
            config_hash=ident.config_hash if ident else None,
            group=ident.group if ident else None,
            total_s=time.perf_counter() - start,
            **common,
        )
    finally:
        keras.backend.clear_session()  # collects garbage itself (free_memory=True)

    history = outcome["history"]
    val = history["val_accuracy"]
    best = int(np.argmax(val))
    times = outcome["epoch_times"]
    labels, predictions = outcome["labels"], outcome["predictions"]
    notes = list(data.notes)
    if ident.weights.note:
        notes.append(ident.weights.note)
    if config.preprocess == "lesson" and not is_baseline(spec):
        notes.append(_lesson_preprocess_warning(spec))
    per_class = stats.per_class_accuracy(labels, predictions, data.n_classes)
    weights_file = ident.weights.arg if ident.weights.arg not in (None, "imagenet") else None
    return RunResult(
        status=STATUS_OK,
        val_accuracy=val[-1],
        best_val_accuracy=val[best],
        best_epoch=best + 1,
        epochs_run=len(val),
        history=history,
        test_accuracy=float(np.mean(labels == predictions)) if config.protocol == "holdout"
        else None,
        eval_split="test",
        predictions=predictions.tolist(),
        labels=labels.tolist(),
        per_class_accuracy=[None if np.isnan(v) else float(v) for v in per_class],
        balanced_accuracy=stats.balanced_accuracy(labels, predictions, data.n_classes),
        macro_f1=stats.macro_f1(labels, predictions, data.n_classes),
        params_total=outcome["params_total"],
        params_trainable=outcome["params_trainable"],
        feature_width=outcome["feature_width"],
        extract_s=outcome["extract_s"],
        epoch_s=statistics.median(times[1:] or times),
        epoch_times=times,
        total_s=time.perf_counter() - start,
        image_size=ident.size,
        weights=ident.weights.label,
        weights_file=ident.weights.file_name,
        weights_id=ident.weights_id,
        weights_sha256=file_sha256(weights_file) if weights_file else None,
        data_checksum=ident.data_checksum,
        config_hash=ident.config_hash,
        group=ident.group,
        features_cached=outcome.get("features_cached", False),
        notes=notes,
        **common,
    )


def run_seeds(spec: Spec, config: RunConfig, data: Dataset,
              data_checksum: str | None = None) -> list[RunResult]:
    """config.seeds rows: the head trained once per seed on one feature extraction."""
    return [run_one(spec, c, data, data_checksum) for c in config.per_seed()]


# The last extraction, kept in memory so the K heads of a K-seed run share it even when the
# disk cache is off. One entry: a sweep moves on to the next backbone and never comes back.
_LAST_FEATURES: dict[str, cache.CachedFeatures] = {}


def _features(spec: BackboneSpec, config: RunConfig, data: Dataset,
              ident: RunIdentity) -> tuple[cache.CachedFeatures, bool]:
    """(features, whether they came from a cache): memory, then disk, then the backbone."""
    key = ident.feature_key(spec, config)
    if key in _LAST_FEATURES:
        return _LAST_FEATURES[key], True
    store = (cache.FeatureCache(config.cache_dir or cache.default_cache_dir())
             if config.cache else None)
    found = store.load(key, spec.name, data.n_train, data.n_val) if store else None
    cached = found is not None
    if found is None:
        keras.utils.set_random_seed(config.effective_backbone_seed)
        backbone = features.build_backbone(spec, ident.size, config, ident.weights)
        inputs, outputs = features.backbone_graph(
            spec, backbone, ident.size, config, data.image_shape, data.train_images.dtype.name
        )
        extractor = keras.Model(inputs, outputs, name=f"{spec.name}_features")
        t0 = time.perf_counter()
        train_x = features.extract(extractor, data.train_images, config.extract_batch_size,
                                   config.verbose)
        val_x = features.extract(extractor, data.val_images, config.extract_batch_size,
                                 config.verbose)
        found = cache.CachedFeatures(train_x, val_x, time.perf_counter() - t0,
                                     backbone.count_params())
        if store:
            store.save(key, spec.name, found)
    _LAST_FEATURES.clear()
    _LAST_FEATURES[key] = found
    return found, cached


def _fit_and_predict(model: keras.Model, splits: Splits, config: RunConfig,
                     on_features: bool = False) -> dict:
    """The shared training (head.train) and the one evaluation on the test file.

    On cached features the head is called directly: `predict` would trace a function for
    one call on a small matrix, a few tenths of a second for microseconds of arithmetic.
    """
    outcome = head.train(model, splits.x_train, splits.y_train, splits.x_val, splits.y_val,
                         config, restore_best=config.protocol == "holdout")
    if on_features:
        logits = np.concatenate([
            keras.ops.convert_to_numpy(model(splits.x_eval[i:i + 4096], training=False))
            for i in range(0, len(splits.x_eval), 4096)])
    else:
        logits = model.predict(splits.x_eval, batch_size=config.batch_size, verbose=0)
    return dict(history=outcome.history, epoch_times=outcome.epoch_times,
                labels=np.asarray(splits.y_eval), predictions=np.argmax(logits, axis=-1))


def _run_cached(spec: BackboneSpec, config: RunConfig, data: Dataset,
                ident: RunIdentity) -> dict:
    """The frozen backbone runs once per split (or not at all, when its features are cached);
    the head trains on the features."""
    found, cached = _features(spec, config, data, ident)
    keras.utils.set_random_seed(config.seed)
    model = head.build_head(data.n_classes)
    model.build((None, found.train.shape[1]))
    result = _fit_and_predict(model, make_splits(found.train, found.val, data, config), config,
                              on_features=True)
    # The full model's counts: the frozen backbone contributes only non-trainable parameters.
    return dict(
        result,
        extract_s=found.extract_s,
        features_cached=cached,
        feature_width=int(found.train.shape[1]),
        params_total=found.params_backbone + model.count_params(),
        params_trainable=_count(model.trainable_weights),
    )


def _run_end_to_end(spec: BackboneSpec, size: int, config: RunConfig, data: Dataset,
                    weights: features.ResolvedWeights) -> dict:
    """The episode's way: `model.fit` on images -> resize -> frozen backbone -> head."""
    keras.utils.set_random_seed(config.effective_backbone_seed)
    backbone = features.build_backbone(spec, size, config, weights)
    inputs, outputs = features.backbone_graph(
        spec, backbone, size, config, data.image_shape, data.train_images.dtype.name
    )
    keras.utils.set_random_seed(config.seed)
    model_head = head.build_head(data.n_classes)
    model = keras.Model(inputs, model_head(outputs), name=f"{spec.name}_lesson")
    result = _fit_and_predict(model, make_splits(data.train_images, data.val_images, data,
                                                 config), config)
    return dict(
        result,
        extract_s=0.0,
        feature_width=int(outputs.shape[-1]),
        params_total=model.count_params(),
        params_trainable=_count(model.trainable_weights),
    )


def _run_baseline(spec: BaselineSpec, config: RunConfig, data: Dataset) -> dict:
    """The previous episode's models: raw images / 255, every weight trained."""
    keras.utils.set_random_seed(config.seed)
    inputs = keras.Input(shape=data.image_shape, dtype=data.train_images.dtype.name)
    scaled = keras.layers.Rescaling(1 / 255, name="pixels_over_255")(inputs)
    body = spec.builder(data.image_shape, data.n_classes)
    model = keras.Model(inputs, body(scaled), name=spec.name.replace("-", "_"))
    result = _fit_and_predict(model, make_splits(data.train_images, data.val_images, data,
                                                 config), config)
    return dict(
        result,
        extract_s=0.0,
        feature_width=None,
        params_total=model.count_params(),
        params_trainable=_count(model.trainable_weights),
    )


@functools.lru_cache(maxsize=1)
def provenance() -> dict:
    """Where a row was computed: versions, device and bench's git commit."""
    return dict(python_version=platform.python_version(), numpy_version=np.__version__,
                device=_device(), git_commit=git_commit())


def _device() -> str:
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"GPU: {details.get('device_name', gpus[0].name)}" + (
            f" (x{len(gpus)})" if len(gpus) > 1 else "")
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU: {line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"CPU: {platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def _count(weights) -> int:
    return int(sum(np.prod(w.shape) for w in weights))


def _describe(err: BaseException) -> str:
    """One line for the row: the message, or the exception type and where it came from."""
    text = " ".join(str(err).split())
    if isinstance(err, features.WeightsError | ValueError) and text:
        return text
    where = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
    origin = f" (at {where.filename.rsplit('/', 1)[-1]}:{where.lineno})" if where else ""
    return f"{type(err).__name__}: {text}{origin}" if text else f"{type(err).__name__}{origin}"


def _lesson_preprocess_warning(spec: BackboneSpec) -> str:
    expects = {
        "in-graph": "0-255 pixels (it rescales them itself)",
        "caffe": "0-255 BGR pixels minus the ImageNet mean (caffe mode)",
        "torch": "pixels/255 normalised by the ImageNet mean and std (torch mode)",
        "tf": "pixels scaled to -1..1 (tf mode)",
    }.get(spec.preprocess_mode, spec.preprocess_mode)
    return (f"--preprocess lesson feeds pixels/255 to {spec.name}, whose ImageNet weights expect "
            f"{expects}; its accuracy may understate the backbone (compare --preprocess native)")
