"""Which weights a backbone is built with, decided without TensorFlow (resume needs it fast)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from backbones import BackboneSpec
from bench.config import RunConfig


class WeightsError(RuntimeError):
    """Pretrained weights could not be had; the message names the file and how to supply it."""


@dataclass(frozen=True)
class ResolvedWeights:
    """What to hand the Keras constructor, and how a result row should describe it."""

    arg: str | None  # the constructor's `weights=`: None, "imagenet" or a file path
    label: str  # "imagenet", "random" or the path of the file loaded
    file_name: str | None  # Keras' own file name for these weights, when pretrained
    note: str | None = None  # e.g. that a nearby resolution's file stands in for the exact one


def resolve_weights(spec: BackboneSpec, size: int, config: RunConfig) -> ResolvedWeights:
    """Decides which weights a backbone is built with; never falls back to random silently."""
    if config.weights == "random":
        return ResolvedWeights(arg=None, label="random", file_name=None)
    if config.weights != "imagenet":
        path = Path(config.weights)
        if not path.is_file():
            raise WeightsError(f"Weights file '{path}' does not exist")
        return ResolvedWeights(arg=str(path), label=str(path), file_name=path.name)

    exact = spec.weights_file(size)
    if config.weights_dir:
        candidates = spec.weights_candidates(size)
        for candidate in candidates:
            path = Path(config.weights_dir) / candidate
            if path.is_file():
                note = None
                if candidate != candidates[0]:
                    note = (f"no '{candidates[0]}' in {config.weights_dir}: used '{candidate}', "
                            f"the nearest resolution found (convolutional weights load at any "
                            f"size)")
                elif candidate != exact:
                    note = (f"used '{candidate}', the nearest resolution to {size}px (Keras "
                            f"itself would load '{exact}')")
                return ResolvedWeights(arg=str(path), label=str(path), file_name=candidate,
                                       note=note)
    # Keras' own loading: its cache (~/.keras/models) first, then the download.
    return ResolvedWeights(arg="imagenet", label="imagenet", file_name=exact)
