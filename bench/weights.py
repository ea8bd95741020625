"""Which weights a backbone is built with, decided without TensorFlow (resume needs it fast)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from backbones import BackboneSpec
from bench.config import RunConfig

WEIGHTS_ENV = "BENCH_WEIGHTS_DIR"


def weights_folder(given: str | None) -> str | None:
    """Where a run and an export look first for Keras' own ImageNet weights files: --weights-dir,
    else $BENCH_WEIGHTS_DIR; then Keras' cache (~/.keras/models), then its download."""
    return given or os.environ.get(WEIGHTS_ENV) or None


class WeightsError(RuntimeError):
    """Pretrained weights could not be had; the message names the file and how to supply it."""


@dataclass(frozen=True)
class ResolvedWeights:
    """Where a backbone's weights come from, and how a result row names them.

    A row names weights by file name, never by a local path: results move between machines.
    """

    # "imagenet": Keras' cache or download; "random": weights=None; "file": `path`; "scratch":
    # a baseline's own weights, trained from scratch
    source: str
    label: str  # the row's `weights`: "imagenet", "random" or the loaded file's name
    file_name: str | None  # Keras' own name for ImageNet weights, or the loaded file's name
    path: str | None = None  # the local file loaded ("file" only; never written to a row)
    # Keras' exact file name when another resolution's file stood in for it (MobileNet's 224
    # file at 160): the row's `weights_substituted_for`
    substituted_for: str | None = None
    note: str | None = None  # the substitution in words, for the row's notes


def weights_label(weights: str) -> str:
    """The row's `weights` for a --weights value: the word itself, or a file's name."""
    return weights if weights in ("imagenet", "random") else Path(weights).name


def resolve_weights(spec: BackboneSpec, size: int, config: RunConfig) -> ResolvedWeights:
    """Decides which weights a backbone is built with; never falls back to random silently."""
    if config.weights == "random":
        return ResolvedWeights(source="random", label="random", file_name=None)
    if config.weights != "imagenet":
        path = Path(config.weights)
        if not path.is_file():
            raise WeightsError(f"Weights file '{path}' does not exist")
        return ResolvedWeights(source="file", label=path.name, file_name=path.name,
                               path=str(path))

    exact = spec.weights_file(size)
    folder = weights_folder(config.weights_dir)
    if folder:
        candidates = spec.weights_candidates(size)
        for candidate in candidates:
            path = Path(folder) / candidate
            if path.is_file():
                return ResolvedWeights(
                    source="file", label=candidate, file_name=candidate, path=str(path),
                    substituted_for=exact if candidate != exact else None,
                    note=_substitution_note(candidates[0], candidate, exact, size))
    # Keras' own loading: its cache (~/.keras/models) first, then the download.
    return ResolvedWeights(source="imagenet", label="imagenet", file_name=exact)


def _substitution_note(nearest: str, used: str, exact: str, size: int) -> str | None:
    if used != nearest:
        return (f"no '{nearest}' in --weights-dir: used '{used}', the nearest resolution "
                f"found (convolutional weights load at any size)")
    if used != exact:
        return (f"used '{used}', the nearest resolution to {size}px (Keras itself would load "
                f"'{exact}')")
    return None
