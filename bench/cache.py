"""Frozen-backbone features on disk, keyed by everything that determines them, and what one
process keeps in memory between runs.

A frozen backbone maps the same images to the same features whatever the head's seed, epochs or
patience, so a re-run with another seed only trains the head. Files are written atomically and
verified on every read: a corrupt or truncated file is reported, removed and recomputed, never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.fsio import atomic_path, os_error_line
from bench.resultsdir import safe_name

CACHE_ENV = "BENCH_CACHE_DIR"
# The cache folder's layout: features at its root, one .npz per key (FeatureCache), and what
# the engine remembers per machine beside them.
OPENVINO_DIR = "openvino"  # converted models, one folder each (engine/openvino_backend.py)
OPENVINO_COMPILED_DIR = "openvino-compiled"  # OpenVINO's own compiled-model cache (CACHE_DIR)
CHOICES_FILE = "runtime-choices.json"  # measured rates and conversion times (runtime_choice.py)
GRAPH_STATS_FILE = "graph-stats.json"  # FLOP and op counts per backbone and size (cost.py)
CALIBRATIONS_FILE = "calibrations.json"  # this machine's speeds, for dry runs (calibration.py)
# Part of every key: bump it when the file layout or what the features mean changes, and files
# of the earlier format are never read again. 2: every file records infer_ms and its runtime.
FORMAT_VERSION = 2


def default_cache_dir() -> Path:
    """$BENCH_CACHE_DIR, else the user cache ($XDG_CACHE_HOME or ~/.cache) / bench / features.

    Not beside the data: data folders are often read-only or shared between users, while
    features depend on the Keras version and weights that each user has.
    """
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bench" / "features"


def feature_key(**parts) -> str:
    """sha256 of the parts (JSON, sorted keys): data checksum, backbone, weights, size, ..."""
    text = json.dumps({"format": FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class CachedFeatures:
    train: np.ndarray
    val: np.ndarray
    extract_s: float  # what computing them cost when they were made
    params_backbone: int
    infer_ms: float | None = None  # steady-state forward ms per image measured then
    # the runtime that computed them (runtimes.RuntimeInfo.to_fields())
    runtime: dict = field(default_factory=dict)


@dataclass
class ProcessCaches:
    """Everything this process remembers between runs, in one place (not in module globals), so
    that a test starts from nothing by calling reset_process_caches()."""

    # The last extraction: the K heads of a K-seed run share it even when the disk cache is
    # off. One entry: a sweep moves on to the next backbone and never comes back.
    last_features: dict[str, CachedFeatures] = field(default_factory=dict)
    # extractor -> {input signature: its traced forward}; an entry goes with its extractor
    forwards: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary)
    graph_stats: dict[str, Any] = field(default_factory=dict)  # the cost model's counts
    # sha256 of a file by (path, size, mtime_ns): a weights file is read once while unchanged
    file_digests: dict[tuple[str, int, int], str] = field(default_factory=dict)
    once: dict[str, Any] = field(default_factory=dict)  # fixed for the process: git commit, ...


_PROCESS = ProcessCaches()


def process_caches() -> ProcessCaches:
    """This process's caches (read at each use: a reset replaces them)."""
    return _PROCESS


def reset_process_caches() -> ProcessCaches:
    """Replaces this process's caches with empty ones; returns the new ones."""
    global _PROCESS
    _PROCESS = ProcessCaches()
    return _PROCESS


def array_digest(*arrays: np.ndarray) -> str:
    """sha256 over arrays' shapes, dtypes and bytes, in order."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


class FeatureCache:
    """One .npz per key under `root`; `warn` receives one line per recomputed corrupt file and
    per file that could not be saved or removed."""

    def __init__(self, root: str | os.PathLike, warn=None):
        self.root = Path(root)
        self.warn = warn or (lambda line: print(f"bench: warning: {line}", file=sys.stderr,
                                                flush=True))

    def path(self, key: str, label: str = "") -> Path:
        prefix = f"{safe_name(label)}-" if label else ""
        return self.root / f"{prefix}{key[:32]}.npz"

    def load(self, key: str, label: str, n_train: int, n_test: int) -> CachedFeatures | None:
        path = self.path(key, label)
        if path.exists() and not path.is_file():  # a FIFO would block the read forever
            self.warn(f"Feature cache entry {str(path)!r} is not a regular file; recomputing it"
                      + self._remove(path))
            return None
        try:
            with np.load(path, allow_pickle=False) as f:
                train, val = f["train"], f["val"]
                meta = json.loads(bytes(f["meta"]).decode())
            problem, found = None, None
            if meta.get("key") != key:
                problem = "written for another key"
            elif train.shape[0] != n_train or val.shape[0] != n_test:
                problem = (f"holds {train.shape[0]}/{val.shape[0]} rows, expected "
                           f"{n_train}/{n_test}")
            elif meta.get("digest") != array_digest(train, val):
                problem = "checksum mismatch"
            else:
                found = CachedFeatures(train, val, float(meta["extract_s"]),
                                       int(meta["params_backbone"]), meta["infer_ms"],
                                       dict(meta["runtime"]))
        except FileNotFoundError:
            return None
        except PermissionError as err:  # not damage: the file may be fine for its owner
            self.warn(f"Feature cache file {path} cannot be read ({os_error_line(err)}); "
                      "recomputing the features")
            return None
        except Exception as err:  # zip, npy or json damage all mean the same: recompute
            problem = f"unreadable ({type(err).__name__}: {' '.join(str(err).split())[:120]})"
        if problem:
            self.warn(f"Feature cache file {path} is corrupt ({problem}); recomputing it"
                      + self._remove(path))
            return None
        return found

    @staticmethod
    def _remove(path: Path) -> str:
        """Removes path; what went wrong, as a clause for a warning, or ""."""
        try:
            path.unlink(missing_ok=True)
        except OSError as err:
            return f" (cannot remove it: {os_error_line(err)})"
        return ""

    def save(self, key: str, label: str, features: CachedFeatures) -> Path | None:
        """Writes to a temporary file in the same folder, then renames: readers never see half.

        A folder that cannot take the file (full, read-only, gone) is a warning and None: the
        features are in hand, so the run goes on without caching them.
        """
        path = self.path(key, label)
        meta = {
            "key": key,
            "digest": array_digest(features.train, features.val),
            "extract_s": features.extract_s,
            "params_backbone": features.params_backbone,
            "infer_ms": features.infer_ms,
            "runtime": features.runtime,
        }
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.savez(f, train=features.train, val=features.val,
                         meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
        except OSError as err:
            self.warn(f"Feature cache: cannot save {path} ({os_error_line(err)}); the features "
                      "are used but not cached")
            return None
        return path
