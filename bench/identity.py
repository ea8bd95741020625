"""What makes two runs the same run, computed without TensorFlow.

The config hash (resume) and the feature-cache key both come from here; a sweep whose every
run is already done decides so in a second, without importing TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from importlib.metadata import version

from backbones import BackboneSpec, Spec
from bench import cache
from bench.config import RunConfig
from bench.data import Dataset
from bench.result import FINE_TUNED, STATUS_ERROR, RunResult
from bench.weights import ResolvedWeights, resolve_weights, weights_label

KERAS_VERSION = version("keras")  # features depend on it; importing keras would cost seconds

# Baselines start from random weights and train them all: no pretrained file to name.
SCRATCH = ResolvedWeights(source="scratch", label="none (trained from scratch)", file_name=None)


def is_baseline(spec: Spec) -> bool:
    """Trained from scratch on the raw images (no frozen backbone, no pretrained weights)."""
    return spec.kind == "baseline"


@dataclass(frozen=True)
class RunIdentity:
    """What makes two runs the same run: the basis of resume and of the feature cache."""

    size: int
    weights: ResolvedWeights
    # "random:seed=N:batchnorm=train", "keras:<file name>", "sha256:<file digest>", "scratch"
    weights_id: str
    data_checksum: str
    config_hash: str  # backbone + weights + data + every protocol knob + seed (+ holdout split)
    group: str  # the same without the head seed: the rows of one K-seed run share it

    def feature_key(self, spec: BackboneSpec, config: RunConfig) -> str:
        return cache.feature_key(
            data=self.data_checksum, backbone=spec.name, kwargs=dict(spec.kwargs),
            weights=self.weights_id, image_size=self.size, preprocess=config.preprocess,
            pooling=config.pooling, resize="resize_with_pad/bilinear",
            keras=KERAS_VERSION,
        )


def _hash(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def run_hashes(payload: dict) -> tuple[str, str]:
    """(config hash, group) of a run described by `payload` (backbone, kwargs, weights, data,
    every identity knob, the size): the group is the hash without the head seed."""
    return _hash(payload), _hash({**payload, "seed": None})


def identify(spec: Spec, config: RunConfig, data: Dataset,
             data_checksum: str | None = None) -> RunIdentity:
    """Resolves weights and hashes the run; raises WeightsError/ValueError like run_one would."""
    checksum = data_checksum or data.checksum()
    if is_baseline(spec):
        size, weights, weights_id = data.image_shape[0], SCRATCH, "scratch"
    else:
        size = config.size_for(spec.input_size)
        if size < spec.min_size:
            raise ValueError(f"{spec.name} needs an input of at least {spec.min_size}x"
                             f"{spec.min_size}; received --image-size {size}")
        weights = resolve_weights(spec, size, config)
        if weights.source == "random":
            # a random backbone is whatever its seed draws: the seed is part of its identity
            # and its BatchNormalization statistics, re-estimated on the training images
            # (features.reestimate_batchnorm); rows of random backbones before that lack
            # ":batchnorm=train" and are other runs
            weights_id = f"random:seed={config.effective_backbone_seed}:batchnorm=train"
        elif weights.source == "imagenet":
            weights_id = f"keras:{weights.file_name}"
        else:
            weights_id = f"sha256:{file_sha256(weights.path)}"
    kwargs = {} if is_baseline(spec) else dict(spec.kwargs)
    payload = {"backbone": spec.name, "kwargs": kwargs, "weights": weights_id, "data": checksum,
               **config.knobs(), "image_size": size}
    if config.protocol == "holdout":
        # The held-out split is drawn from the backbone seed (one split for the K heads of a
        # K-seed run), which the knobs lack: seed 3 of `--seeds 3` and a later `--seed 3` hold
        # out different images, so they must not share a hash.
        payload["holdout_split_seed"] = config.effective_backbone_seed
    config_hash, group = run_hashes(payload)
    return RunIdentity(size, weights, weights_id, checksum, config_hash, group)


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, computed once per process for an unchanged file."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    digests = cache.process_caches().file_digests
    if key not in digests:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        digests[key] = digest.hexdigest()
    return digests[key]


def route_name(spec: Spec, config: RunConfig) -> str:
    """How a run trains: from scratch (a baseline), end to end, on cached features, or
    fine-tuned after a frozen stage on cached features."""
    if is_baseline(spec):
        return "from-scratch"
    if config.fine_tune:
        return FINE_TUNED
    return "end-to-end" if config.end_to_end else "cached"


def size_or_none(spec: Spec, config: RunConfig) -> int | None:
    return None if is_baseline(spec) else config.size_for(spec.input_size)


def configuration(config: RunConfig, data_checksum: str) -> dict:
    """Every knob that changes the numbers but the seed, and the data: the rows of one
    leaderboard table share it. The weights are not in it: ImageNet and random weights of one
    backbone are two entries of one table."""
    return {**config.configuration(), "data_checksum": data_checksum}


def known_fields(spec: Spec, config: RunConfig, data: Dataset, data_checksum: str,
                 ident: RunIdentity | None) -> dict:
    """The fields of a row known before it runs, whether it succeeds or not: what it is (and
    so which row it replaces in runs.jsonl), not what it measured. `ident` None: the run could
    not be identified (its weights cannot be had, its size is too small)."""
    return dict(
        configuration=configuration(config, data_checksum),
        backbone=spec.name,
        family=spec.family,
        kind=spec.kind,
        imagenet_top1=getattr(spec, "top1", None),
        preprocess="lesson" if is_baseline(spec) else config.preprocess,
        pooling=config.pooling,
        route=route_name(spec, config),
        protocol=config.protocol,
        seed=config.seed,
        epochs=config.epochs,
        patience=config.patience,
        batch_size=config.batch_size,
        **data.source_fields(),
        n_train=data.n_train,
        n_test=data.n_test,
        n_classes=data.n_classes,
        class_names=list(data.class_names),
        image_size=ident.size if ident else size_or_none(spec, config),
        weights=ident.weights.label if ident else weights_label(config.weights),
        weights_file=ident.weights.file_name if ident else None,
        weights_substituted_for=ident.weights.substituted_for if ident else None,
        weights_id=ident.weights_id if ident else None,
        data_checksum=data_checksum,
        config_hash=ident.config_hash if ident else None,
        group=ident.group if ident else None,
    )


def failed_row(spec: Spec, config: RunConfig, data: Dataset, reason: str, seconds: float,
               data_checksum: str | None = None, **extra) -> RunResult:
    """The row of a run that produced no result (an exception, a crash, a kill, a timeout, a
    lost worker): the same identity and config hash as the ok row it stands for, so that a
    later ok run of the same run replaces it."""
    checksum = data_checksum or data.checksum()
    try:
        ident = identify(spec, config, data, checksum)
    except Exception:  # an unidentifiable run still gets its row
        ident = None
    fields = known_fields(spec, config, data, checksum, ident)
    if ident is None:  # what is known names it: the same failure again replaces this row
        config_hash, group = run_hashes({"backbone": spec.name, "weights": fields["weights"],
                                         "data": checksum, **config.knobs()})
        fields.update(config_hash=f"unidentified-{config_hash}", group=f"unidentified-{group}")
    return RunResult(status=STATUS_ERROR, error=reason, total_s=seconds, **fields, **extra)
