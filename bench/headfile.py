"""A trained head's weights on disk, beside runs.jsonl: one .npz per ok row, read without pickle.

Pure numpy: the driver writes the file the row names, an isolated child hands its heads over in
the same format, and export reads it back.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bench.cache import array_digest
from bench.fsio import atomic_path
from bench.result import RunResult
from bench.resultsdir import head_file_name

_WEIGHT = "weight_"  # np.savez keys: weight_000, weight_001, ... in get_weights() order
_DIGEST = "digest"  # sha256 of everything else in the file, checked on every load


@dataclass(frozen=True)
class HeadFile:
    """What a head file holds: the weights in the model's get_weights() order, and what the
    model they fit was trained on."""

    weights: list[np.ndarray]
    class_names: list[str]
    image_shape: tuple[int, ...] | None  # the training images' shape (a baseline's input)


def save_head(path: Path, weights: Sequence[np.ndarray], class_names: Sequence[str] = (),
              image_shape: Sequence[int] | None = None) -> None:
    """Writes the file whole or not at all: a kill mid-write leaves no half file to load."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"{_WEIGHT}{i:03d}": np.asarray(w) for i, w in enumerate(weights)}
    arrays["class_names"] = np.asarray(list(class_names), dtype=np.str_)
    if image_shape is not None:
        arrays["image_shape"] = np.asarray(image_shape, dtype=np.int64)
    arrays[_DIGEST] = np.asarray(_digest(arrays))
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _digest(arrays: dict[str, np.ndarray]) -> str:
    return array_digest(*(arrays[k] for k in sorted(arrays) if k != _DIGEST))


def load_head(path: Path) -> HeadFile:
    """The head file's contents; OSError when it is missing or cannot be read, ValueError
    when it is not a head file or is damaged (its checksum does not match). Files written
    before heads had a checksum load unchecked."""
    if Path(path).exists() and not Path(path).is_file():
        raise ValueError("not a regular file")
    try:
        with np.load(path, allow_pickle=False) as found:
            arrays = {k: found[k] for k in found.files}
    except (zipfile.BadZipFile, EOFError) as err:
        raise ValueError(f"damaged: {type(err).__name__}") from err
    if _DIGEST in arrays and str(arrays[_DIGEST]) != _digest(arrays):
        raise ValueError("damaged: checksum mismatch")
    keys = sorted(k for k in arrays if k.startswith(_WEIGHT))
    shape = tuple(int(s) for s in arrays["image_shape"]) if "image_shape" in arrays else None
    return HeadFile([arrays[k] for k in keys], [str(c) for c in arrays["class_names"]], shape)


def child_head_path(folder: Path, index: int) -> Path:
    """Where a worker process leaves the head of its `index`-th row for the driver."""
    return Path(folder) / f"head-{index:03d}.npz"


def with_head_file(out: Path, result: RunResult, image_shape: Sequence[int] | None = None,
                   ) -> RunResult:
    """Writes an ok row's head under `out` and returns the row naming it (other rows as they
    are). The weights stay in memory on the returned row; they never go into runs.jsonl."""
    if not result.ok or result.head_weights is None or not result.config_hash:
        return result
    name = head_file_name(result.backbone, result.config_hash)
    save_head(Path(out) / name, result.head_weights, result.class_names, image_shape)
    return replace(result, head_file=name)
