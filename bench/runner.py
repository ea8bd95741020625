"""run_one(spec, config, data) -> RunResult: one backbone under the lesson protocol."""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import os
import statistics
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import keras
import numpy as np
import tensorflow as tf

from backbones import BackboneSpec
from bench import cache, features, head
from bench.config import RunConfig
from bench.data import Dataset
from bench.result import STATUS_ERROR, STATUS_OK, RunResult


@dataclass(frozen=True)
class RunIdentity:
    """What makes two runs the same run: the basis of resume and of the feature cache."""

    size: int
    weights: features.ResolvedWeights
    weights_id: str  # "random:seed=N", "keras:<file name>" or "sha256:<digest of the file>"
    data_checksum: str
    config_hash: str  # backbone + weights + data + every protocol knob + seed

    def feature_key(self, spec: BackboneSpec, config: RunConfig) -> str:
        return cache.feature_key(
            data=self.data_checksum, backbone=spec.name, kwargs=dict(spec.kwargs),
            weights=self.weights_id, image_size=self.size, preprocess=config.preprocess,
            pooling=config.pooling, resize="resize_with_pad/bilinear",
            keras=keras.__version__,
        )


def identify(spec: BackboneSpec, config: RunConfig, data: Dataset,
             data_checksum: str | None = None) -> RunIdentity:
    """Resolves weights and hashes the run; raises WeightsError/ValueError like run_one would."""
    size = config.size_for(spec.input_size)
    if size < spec.min_size:
        raise ValueError(f"{spec.name} needs an input of at least {spec.min_size}x"
                         f"{spec.min_size}; received --image-size {size}")
    weights = features.resolve_weights(spec, size, config)
    if weights.arg is None:
        # a random backbone is whatever the seed draws: the seed is part of its identity
        weights_id = f"random:seed={config.seed}"
    elif weights.arg == "imagenet":
        weights_id = f"keras:{weights.file_name}"
    else:
        weights_id = f"sha256:{file_sha256(weights.arg)}"
    checksum = data_checksum or data.checksum()
    payload = {"backbone": spec.name, "kwargs": dict(spec.kwargs), "weights": weights_id,
               "data": checksum, **config.protocol(), "image_size": size}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return RunIdentity(size, weights, weights_id, checksum, digest[:16])


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, computed once per process for an unchanged file."""
    st = os.stat(path)
    return _sha256_cached(os.path.abspath(path), st.st_size, st.st_mtime_ns)


def run_one(spec: BackboneSpec, config: RunConfig, data: Dataset,
            data_checksum: str | None = None) -> RunResult:
    """Trains the lesson head on one frozen backbone; any failure becomes an error row.

    Pure in the sense a sweep executor needs: everything it depends on is in its arguments,
    everything it produces is in the returned row (nothing is written to disk).
    """
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    start = time.perf_counter()
    size = config.size_for(spec.input_size)
    common = dict(
        backbone=spec.name,
        family=spec.family,
        image_size=size,
        preprocess=config.preprocess,
        pooling=config.pooling,
        path="end-to-end" if config.end_to_end else "cached",
        seed=config.seed,
        epochs=config.epochs,
        patience=config.patience,
        batch_size=config.batch_size,
        data=data.source,
        n_train=data.n_train,
        n_val=data.n_val,
        n_classes=data.n_classes,
        keras_version=keras.__version__,
        tf_version=tf.__version__,
        started_at=started_at,
    )
    weights_label = config.weights
    config_hash = None
    try:
        ident = identify(spec, config, data, data_checksum)
        weights, weights_label, config_hash = ident.weights, ident.weights.label, ident.config_hash
        if config.end_to_end:
            outcome = _run_end_to_end(spec, size, config, data, weights)
        else:
            outcome = _run_cached(spec, config, data, ident)
    except Exception as err:  # a sweep never dies of one model
        return RunResult(
            status=STATUS_ERROR,
            error=_describe(err),
            weights=weights_label,
            config_hash=config_hash,
            total_s=time.perf_counter() - start,
            **common,
        )
    finally:
        keras.backend.clear_session()
        gc.collect()

    history = outcome["history"]
    val = history["val_accuracy"]
    best = int(np.argmax(val))
    times = outcome["epoch_times"]
    notes = list(data.notes)
    if weights.note:
        notes.append(weights.note)
    if config.preprocess == "lesson":
        notes.append(_lesson_preprocess_warning(spec))
    return RunResult(
        status=STATUS_OK,
        val_accuracy=val[-1],
        best_val_accuracy=val[best],
        best_epoch=best + 1,
        epochs_run=len(val),
        history=history,
        params_total=outcome["params_total"],
        params_trainable=outcome["params_trainable"],
        feature_width=outcome["feature_width"],
        extract_s=outcome["extract_s"],
        epoch_s=statistics.median(times[1:] or times),
        epoch_times=times,
        total_s=time.perf_counter() - start,
        weights=weights.label,
        weights_file=weights.file_name,
        weights_id=ident.weights_id,
        data_checksum=ident.data_checksum,
        config_hash=config_hash,
        features_cached=outcome.get("features_cached", False),
        notes=notes,
        **common,
    )


def _run_cached(spec: BackboneSpec, config: RunConfig, data: Dataset,
                ident: RunIdentity) -> dict:
    """The frozen backbone runs once per split (or not at all, when its features are cached);
    the head trains on the features."""
    store = cache.FeatureCache(config.cache_dir or cache.default_cache_dir()) if config.cache \
        else None
    key = ident.feature_key(spec, config)
    found = store.load(key, spec.name, data.n_train, data.n_val) if store else None
    if found is None:
        keras.utils.set_random_seed(config.seed)
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
        del extractor, backbone
        if store:
            store.save(key, spec.name, found)
        cached = False
    else:
        cached = True

    keras.utils.set_random_seed(config.seed)
    model = head.build_head(data.n_classes)
    model.build((None, found.train.shape[1]))
    outcome = head.train(model, found.train, data.train_labels, found.val, data.val_labels,
                         config)
    # The full model's counts: the frozen backbone contributes only non-trainable parameters.
    return dict(
        history=outcome.history,
        epoch_times=outcome.epoch_times,
        extract_s=found.extract_s,
        features_cached=cached,
        feature_width=int(found.train.shape[1]),
        params_total=found.params_backbone + model.count_params(),
        params_trainable=_count(model.trainable_weights),
    )


def _run_end_to_end(spec: BackboneSpec, size: int, config: RunConfig, data: Dataset,
                    weights: features.ResolvedWeights) -> dict:
    """The episode's way: `model.fit` on images -> resize -> frozen backbone -> head."""
    keras.utils.set_random_seed(config.seed)
    backbone = features.build_backbone(spec, size, config, weights)
    inputs, outputs = features.backbone_graph(
        spec, backbone, size, config, data.image_shape, data.train_images.dtype.name
    )
    keras.utils.set_random_seed(config.seed)
    model_head = head.build_head(data.n_classes)
    model = keras.Model(inputs, model_head(outputs), name=f"{spec.name}_lesson")
    outcome = head.train(model, data.train_images, data.train_labels, data.val_images,
                         data.val_labels, config)
    return dict(
        history=outcome.history,
        epoch_times=outcome.epoch_times,
        extract_s=0.0,
        feature_width=int(outputs.shape[-1]),
        params_total=model.count_params(),
        params_trainable=_count(model.trainable_weights),
    )


def sweep(specs: Iterable[BackboneSpec], config: RunConfig, data: Dataset,
          on_start: Callable[[int, int, BackboneSpec], None] | None = None,
          on_result: Callable[[int, int, RunResult], None] | None = None) -> Iterator[RunResult]:
    """Maps run_one over the specs in order, yielding each row as soon as it exists."""
    specs = list(specs)
    for i, spec in enumerate(specs, 1):
        if on_start:
            on_start(i, len(specs), spec)
        result = run_one(spec, config, data)
        if on_result:
            on_result(i, len(specs), result)
        yield result


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
