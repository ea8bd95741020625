"""Tiny synthetic datasets, dataset folders and runs.jsonl rows for every test file, and the
real assets (through environment variables) when present.

Test files import the plain helpers: `from conftest import read_rows, write_dataset`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from bench.data import FILES  # noqa: E402


def synthetic_arrays(n_train: int = 48, n_val: int = 24, side: int = 32, n_classes: int = 3,
                     seed: int = 0):
    """Images whose class is their dominant colour channel: learnable from almost any feature."""
    rng = np.random.default_rng(seed)

    def split(n):
        labels = np.arange(n) % n_classes
        rng.shuffle(labels)
        images = rng.integers(0, 60, size=(n, side, side, 3))
        images[np.arange(n), :, :, labels % 3] += 180
        return images.astype(np.uint8), labels.astype(np.int64)

    return (*split(n_train), *split(n_val))


def write_dataset(folder: Path, arrays: Sequence[np.ndarray] | None = None,
                  **files: np.ndarray | bytes | None) -> Path:
    """A dataset folder: `arrays` (train images, train labels, test images, test labels;
    default synthetic_arrays()) as the four .npy files, then each of `files`, named by stem
    (train_labels=...): an array is saved as given (object arrays too, so that tests can show
    they are refused), bytes are written raw, None removes the file."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in zip(FILES, synthetic_arrays() if arrays is None else arrays, strict=True):
        np.save(folder / name, array)
    for stem, value in files.items():
        path = folder / f"{stem}.npy"
        if path.name not in FILES:
            raise ValueError(f"{stem} is not one of the dataset files {FILES}")
        if value is None:
            path.unlink()
        elif isinstance(value, bytes):
            path.write_bytes(value)
        else:
            np.save(path, value, allow_pickle=True)
    return folder


def read_rows(out: Path) -> list[dict]:
    """The rows of out/runs.jsonl ([] when there is none); a line torn by a kill is skipped,
    as bench's own reader skips it."""
    path = Path(out) / "runs.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return rows


@pytest.fixture(autouse=True)
def _private_feature_cache(tmp_path_factory, monkeypatch):
    """Each test starts with an empty feature cache of its own, never the user's, and with
    nothing an earlier test left in memory (the last extraction, traced forwards, ...)."""
    from bench.cache import reset_process_caches

    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path_factory.mktemp("feature-cache")))
    reset_process_caches()


@pytest.fixture
def tiny_data():
    from bench.data import from_arrays

    return from_arrays(*synthetic_arrays(), source="synthetic")


@pytest.fixture
def tiny_data_dir(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "tiny")


@pytest.fixture
def real_weights_dir() -> Path:
    value = os.environ.get("BENCH_TEST_WEIGHTS_DIR")
    if not value:
        pytest.skip("BENCH_TEST_WEIGHTS_DIR is unset (.ci/run sets it to ../shared/weights)")
    return Path(value)


@pytest.fixture
def real_data_dir() -> Path:
    value = os.environ.get("BENCH_TEST_DATA")
    if not value:
        pytest.skip("BENCH_TEST_DATA is unset (.ci/run sets it to ../shared/datasets/cifar10-ds10)")
    return Path(value)
