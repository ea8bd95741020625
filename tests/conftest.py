"""Tiny synthetic datasets, and the real assets (through environment variables) when present."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

FILES = ("train_images.npy", "train_labels.npy", "test_images.npy", "test_labels.npy")


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


@pytest.fixture(autouse=True)
def _private_feature_cache(tmp_path_factory, monkeypatch):
    """Each test starts with an empty feature cache of its own, never the user's."""
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path_factory.mktemp("feature-cache")))
    import sys

    if "bench.engine.runner" in sys.modules:  # and the in-memory copy of the last extraction
        sys.modules["bench.engine.runner"]._LAST_FEATURES.clear()


@pytest.fixture
def tiny_data():
    from bench.data import from_arrays

    return from_arrays(*synthetic_arrays(), source="synthetic")


@pytest.fixture
def tiny_data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny"
    folder.mkdir()
    for name, array in zip(FILES, synthetic_arrays(), strict=True):
        np.save(folder / name, array)
    return folder


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
