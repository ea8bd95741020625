"""The record one backbone run produces. Pure Python: the reporter reads it without TensorFlow."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

STATUS_OK = "ok"
STATUS_ERROR = "error"


@dataclass(frozen=True)
class RunResult:
    """One backbone under one protocol: what was run, what it scored, what it cost."""

    backbone: str
    status: str  # "ok" | "error"
    error: str | None = None
    family: str | None = None
    val_accuracy: float | None = None  # at the last epoch run, as the lesson reports it
    best_val_accuracy: float | None = None
    best_epoch: int | None = None  # 1-based
    epochs_run: int = 0
    # per epoch: accuracy, val_accuracy, loss, val_loss
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
    path: str | None = None  # "cached" | "end-to-end"
    weights: str | None = None  # what was loaded: "imagenet", "random" or the file's path
    weights_file: str | None = None  # Keras' file name for these weights, when pretrained
    seed: int | None = None
    epochs: int | None = None
    patience: int | None = None
    batch_size: int | None = None
    data: str | None = None
    n_train: int | None = None
    n_val: int | None = None
    n_classes: int | None = None
    keras_version: str | None = None
    tf_version: str | None = None
    started_at: str | None = None  # ISO 8601, UTC
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> RunResult:
        """Builds a result from a jsonl record, ignoring keys this version does not know."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in known})
