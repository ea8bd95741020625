"""The record one backbone run produces. Pure Python: the reporter reads it without TensorFlow."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

STATUS_OK = "ok"
STATUS_ERROR = "error"
FINE_TUNED = "fine-tuned"  # the stage (and route) of a fine-tuned row; a frozen row's is None
# The version of a row's fields; bench.runlog.upgrade brings every older row to it where rows
# are read, so nothing else knows an older one.
SCHEMA = 2


@dataclass(frozen=True)
class RunResult:
    """One backbone under one protocol: what was run, what it scored, what it cost."""

    backbone: str
    status: str  # "ok" | "error"
    schema: int = SCHEMA
    error: str | None = None
    family: str | None = None
    # The accuracy on the test file, the one a leaderboard ranks by: under "lesson" at the last
    # epoch run, as the episode reports it; under "holdout" evaluated once, after training.
    test_accuracy: float | None = None
    # "holdout" only: the accuracy on the holdout split at the last epoch run
    holdout_accuracy: float | None = None
    # early stopping's: the watched split's (test under lesson, holdout) accuracy at its best
    best_epoch_accuracy: float | None = None
    best_epoch: int | None = None  # 1-based
    epochs_run: int = 0
    # per epoch: accuracy and loss (training batches), and the watched split's, as
    # test_accuracy, test_loss (lesson) or holdout_accuracy, holdout_loss (holdout)
    history: dict[str, list[float]] = field(default_factory=dict)
    params_total: int | None = None  # full model: input -> resize -> backbone -> head
    params_trainable: int | None = None
    feature_width: int | None = None
    extract_s: float | None = None  # frozen backbone over train + val (0 on the end-to-end path)
    epoch_s: float | None = None  # median seconds per head epoch, first epoch excluded
    epoch_times: list[float] = field(default_factory=list)
    total_s: float | None = None
    image_size: int | None = None
    preprocess: str | None = None
    pooling: str | None = None
    route: str | None = None  # "cached" | "end-to-end" | "from-scratch" | "fine-tuned"
    weights: str | None = None  # what was loaded: "imagenet", "random" or a file name (no path)
    weights_file: str | None = None  # the weights file's name (never a path), when pretrained
    # Keras' own file name for the run's size when another file stood in for it (MobileNet's
    # 224 file at 160, say); None when the exact file was loaded
    weights_substituted_for: str | None = None
    # "random:seed=N:batchnorm=train", "keras:<file>" or "sha256:<file digest>"
    weights_id: str | None = None
    data_checksum: str | None = None  # sha256 of the four arrays
    config_hash: str | None = None  # backbone + weights + data + protocol + seed: the resume key
    features_cached: bool = False  # features came from the on-disk cache (extract_s is theirs)
    seed: int | None = None
    epochs: int | None = None
    patience: int | None = None
    batch_size: int | None = None
    data: str | None = None
    data_kind: str | None = None  # "npy" | "folder" | "tfds" | "arrays" (bench.data.Dataset.kind)
    # corrupt images left out under --skip-bad-images (paths relative to the folder)
    skipped_images: list[str] = field(default_factory=list)
    n_train: int | None = None
    n_test: int | None = None
    n_classes: int | None = None
    keras_version: str | None = None
    tf_version: str | None = None
    started_at: str | None = None  # ISO 8601, UTC
    notes: list[str] = field(default_factory=list)

    # Trustworthy comparisons
    kind: str = "backbone"  # "backbone" (frozen keras.applications model) | "baseline"
    protocol: str = "lesson"  # "lesson": early stopping watches the test file | "holdout"
    # The split the per-class numbers and predictions below refer to: the test file in both
    # protocols (under "lesson" it is also what early stopping watches, as in the episode).
    eval_split: str | None = None
    predictions: list[int] = field(default_factory=list)  # predicted class per test image
    labels: list[int] = field(default_factory=list)  # true class per test image
    one_class: bool = False  # the predictions are one class for every test image
    # holdout only: the epoch (1-based) a stopper watching the test file would have kept (the
    # best of the test accuracies recorded after every epoch, never used) and its predictions:
    # what the lesson protocol's choice of epoch flatters, measured inside this one run
    test_chosen_epoch: int | None = None
    test_chosen_predictions: list[int] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    per_class_accuracy: list[float] = field(default_factory=list)  # recall of each class
    balanced_accuracy: float | None = None  # mean per-class recall
    macro_f1: float | None = None
    imagenet_top1: float | None = None  # the registry's published ImageNet top-1 (%)
    group: str | None = None  # config hash without the seed: rows of one multi-seed run share it
    # Every knob that changes the numbers, but the seed (and the data's checksum): rows with
    # equal configurations are ranked in one table; bench.identity.configuration builds it.
    configuration: dict[str, Any] = field(default_factory=dict)

    # Cost, per image, at the run's input size (frozen backbones only)
    infer_ms: float | None = None  # steady-state forward ms per image (tracing excluded)
    gflops: float | None = None  # FLOPs of one forward pass of the backbone, in billions

    # The runtime that computed the frozen backbone's features (--runtime)
    runtime: str | None = None  # tensorflow or openvino
    runtime_version: str | None = None
    runtime_batch: int | None = None
    runtime_images_per_s: float | None = None  # steady extraction, resize and preprocessing in
    runtime_setup_s: float | None = None  # one-time: conversion (0 when cached), compilation
    runtime_probe_s: float | None = None  # --runtime auto timing the runtime it did not choose
    runtime_note: str | None = None  # how it was chosen

    # Probes on the same frozen features (--probes linear,knn); Kornblith et al. 2019
    probe_linear_accuracy: float | None = None  # multinomial logistic regression, L-BFGS
    probe_linear_s: float | None = None
    probe_knn_accuracy: float | None = None  # k nearest neighbours, cosine distance
    probe_knn_s: float | None = None
    probes: dict[str, Any] = field(default_factory=dict)  # chosen C and k, predictions...

    # The second stage (--fine-tune): "fine-tuned" rows continue a frozen run (None: frozen)
    stage: str | None = None
    frozen_accuracy: float | None = None  # the frozen stage's test accuracy, same seed
    frozen_predictions: list[int] = field(default_factory=list)  # its test predictions
    frozen_config_hash: str | None = None  # the frozen row this one continues
    fine_tune_epoch_s: float | None = None  # median fine-tuning epoch, the first excluded
    fine_tune_images_per_s: float | None = None  # training images per second while fine-tuning

    # Provenance
    peak_memory_mb: float | None = None  # the process's peak resident memory after the run
    python_version: str | None = None
    numpy_version: str | None = None
    device: str | None = None  # CPU model or GPU name
    weights_sha256: str | None = None  # of the weights file loaded, when there is one
    git_commit: str | None = None  # of bench, when run from a checkout

    # The trained head, for export: its .npz file relative to the results folder (ok rows that
    # went to a results folder), and its weights in memory on their way from the runner to the
    # driver that writes that file; the weights are never part of a row's record.
    head_file: str | None = None
    head_weights: list[Any] | None = field(default=None, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    @property
    def watched_accuracy(self) -> float | None:
        """The last epoch's accuracy on the split early stopping watches (holdout or test)."""
        return self.holdout_accuracy if self.protocol == "holdout" else self.test_accuracy

    def to_dict(self) -> dict[str, Any]:
        """The row's record (json types): everything but the head's in-memory weights."""
        record = dataclasses.asdict(dataclasses.replace(self, head_weights=None))
        del record["head_weights"]
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> RunResult:
        """Builds a result from a row of the current schema (bench.runlog.upgrade makes older
        rows one); keys this version does not know, a newer bench's, are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in known})
