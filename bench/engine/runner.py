"""run_one(spec, config, data) -> RunResult: one backbone (or baseline) under one protocol."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import time
import traceback
from dataclasses import replace
from datetime import UTC, datetime

import keras
import numpy as np
import tensorflow as tf

from backbones import BackboneSpec, Spec
from bench import stats
from bench.cache import process_caches
from bench.config import RunConfig
from bench.data import Dataset
from bench.engine import cost, finetune, probes, routes
from bench.engine.routes import Outcome
from bench.identity import (
    RunIdentity,
    failed_row,
    file_sha256,
    identify,
    is_baseline,
    known_fields,
    route_name,
)
from bench.provenance import cpu_name, git_commit
from bench.result import STATUS_OK, RunResult
from bench.weights import WeightsError


def run_one(spec: Spec, config: RunConfig, data: Dataset,
            data_checksum: str | None = None) -> RunResult:
    """Trains the lesson head on one frozen backbone (or a baseline from scratch), one seed.

    Pure in the sense a sweep executor needs: everything it depends on is in its arguments,
    everything it produces is in the returned row (nothing is written but the feature cache).
    Any failure becomes an error row: a sweep never dies of one model.
    """
    if config.seeds != 1:
        raise ValueError("run_one trains one seed; call it once per config.per_seed() for "
                         "config.seeds > 1")
    start = time.perf_counter()
    checksum = data_checksum or data.checksum()
    provenance = _run_provenance()
    try:
        ident = identify(spec, config, data, checksum)
        if is_baseline(spec):
            if config.fine_tune:
                raise ValueError(f"{spec.name} is trained from scratch: it has no pretrained "
                                 "backbone to fine-tune")
            outcome = routes.from_scratch(spec, config, data)
        elif config.end_to_end:
            outcome = routes.end_to_end(spec, config, data, ident)
        elif config.fine_tune:
            outcome = _fine_tuned(spec, config, data, checksum, ident)
        else:
            outcome = routes.cached(spec, config, data, ident)
    except Exception as err:  # a sweep never dies of one model
        return failed_row(spec, config, data, _describe(err), time.perf_counter() - start,
                          checksum, **provenance)
    finally:
        keras.backend.clear_session()  # collects garbage itself (free_memory=True)
    common = {**known_fields(spec, config, data, checksum, ident), **provenance}
    return _ok_row(outcome, spec, config, data, ident, common, start)


def _fine_tuned(spec: BackboneSpec, config: RunConfig, data: Dataset, checksum: str,
                ident: RunIdentity) -> Outcome:
    """The frozen stage again (its features from the cache, or from memory after the frozen
    row of the same sweep: the same head, bit for bit, for the same seed), then the second."""
    frozen_config = replace(config.frozen(), probes=())
    frozen_ident = identify(spec, frozen_config, data, checksum)
    frozen = routes.cached(spec, frozen_config, data, frozen_ident)
    return finetune.fine_tune(spec, config, data, ident, frozen, frozen_ident.config_hash)


def _test_history(outcome: Outcome, labels: np.ndarray) -> dict:
    """Holdout: the test file's accuracy after every epoch, recorded and never used."""
    if not outcome.test_predictions_by_epoch:
        return {}
    return {"test_accuracy": [float(np.mean(p == labels))
                              for p in outcome.test_predictions_by_epoch]}


def _test_chosen(outcome: Outcome, labels: np.ndarray) -> dict:
    """Holdout: the epoch a stopper watching the test file would keep (its best, as
    restore_best_weights keeps) among the epochs run, and the predictions it would report."""
    by_epoch = outcome.test_predictions_by_epoch
    if not by_epoch:
        return {}
    best = int(np.argmax([np.mean(p == labels) for p in by_epoch]))
    return {"test_chosen_epoch": best + 1, "test_chosen_predictions": by_epoch[best].tolist()}


def _constant_note(predictions: np.ndarray, n_classes: int) -> list[str]:
    """A head that predicts one class for every test image measured nothing but the class's
    share: said in the row, so no comparison takes it for a model."""
    if n_classes < 2 or len(set(predictions.tolist())) != 1:
        return []
    return [f"predicts one class (class {int(predictions[0])}) for every test image: its "
            "accuracy is that class's share, not what its features tell apart"]


def _history(keras_history: dict, watched: str) -> dict:
    """Keras' history with its val_ keys named by the split early stopping watched."""
    return {k.replace("val_", f"{watched}_", 1) if k.startswith("val_") else k: v
            for k, v in keras_history.items()}


def _run_provenance() -> dict:
    """Where and when a row was computed: versions, device, bench's commit, the start time."""
    return dict(keras_version=keras.__version__, tf_version=tf.__version__,
                started_at=datetime.now(UTC).isoformat(timespec="seconds"), **_provenance())


def _ok_row(outcome: Outcome, spec: Spec, config: RunConfig, data: Dataset,
            ident: RunIdentity, common: dict, start: float) -> RunResult:
    watched = outcome.history["val_accuracy"]  # Keras' name for what early stopping watches
    best = int(np.argmax(watched))
    times = outcome.epoch_times
    labels, predictions = outcome.labels, outcome.predictions
    notes = list(data.notes)
    if ident.weights.note:
        notes.append(ident.weights.note)
    if config.preprocess == "lesson" and not is_baseline(spec):
        notes.append(_lesson_preprocess_warning(spec))
    if config.probes and not outcome.probe_fields:
        notes.append(probes.not_run_note(route_name(spec, config)))
    per_class = stats.per_class_accuracy(labels, predictions, data.n_classes)
    holdout = config.protocol == "holdout"
    return RunResult(
        status=STATUS_OK,
        test_accuracy=float(np.mean(labels == predictions)) if holdout else watched[-1],
        holdout_accuracy=watched[-1] if holdout else None,
        best_epoch_accuracy=watched[best],
        best_epoch=best + 1,
        epochs_run=len(watched),
        history={**_history(outcome.history, "holdout" if holdout else "test"),
                 **_test_history(outcome, labels)},
        **_test_chosen(outcome, labels),
        eval_split="test",
        predictions=predictions.tolist(),
        labels=labels.tolist(),
        per_class_accuracy=[None if np.isnan(v) else float(v) for v in per_class],
        balanced_accuracy=stats.balanced_accuracy(labels, predictions, data.n_classes),
        macro_f1=stats.macro_f1(labels, predictions, data.n_classes),
        params_total=outcome.params_total,
        params_trainable=outcome.params_trainable,
        feature_width=outcome.feature_width,
        extract_s=outcome.extract_s,
        epoch_s=statistics.median(times[1:] or times),
        epoch_times=times,
        total_s=time.perf_counter() - start,
        weights_sha256=file_sha256(ident.weights.path) if ident.weights.path else None,
        features_cached=outcome.features_cached,
        infer_ms=outcome.infer_ms,
        gflops=cost.run_gflops(spec, ident.size, config),
        **outcome.probe_fields,
        **outcome.runtime_fields,
        **outcome.stage_fields,
        peak_memory_mb=_peak_memory_mb(),
        notes=notes + _constant_note(predictions, data.n_classes),
        one_class=bool(len(set(predictions.tolist())) == 1),
        head_weights=outcome.head_weights,
        **common,
    )


def _peak_memory_mb() -> float:
    """This process's peak resident memory so far, in MiB (ru_maxrss: KiB on Linux, bytes on
    macOS): an isolated child's or a Ray task's is its run's; in one process, the sweep's."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20 if sys.platform == "darwin" else 1 << 10)


def _provenance() -> dict:
    """Where a row was computed: versions, device and bench's git commit (once per process)."""
    once = process_caches().once
    if "run_provenance" not in once:
        once["run_provenance"] = dict(python_version=platform.python_version(),
                                      numpy_version=np.__version__, device=_device(),
                                      git_commit=git_commit())
    return once["run_provenance"]


def _device() -> str:
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"GPU: {details.get('device_name', gpus[0].name)}" + (
            f" (x{len(gpus)})" if len(gpus) > 1 else "")
    return f"CPU: {cpu_name()} ({os.cpu_count()} cores)"


def _describe(err: BaseException) -> str:
    """One line for the row: the message, or the exception type and where it came from."""
    text = " ".join(str(err).split())
    if isinstance(err, WeightsError | ValueError) and text:
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
