"""tfds:NAME[:SPLITS]: a tiny TFDS dataset prepared here, offline, read back by name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import read_rows

from bench.data import DataError, LazyDataset, load_dataset

# one xdist worker runs this file: its module-scoped fixture is set up once
pytestmark = pytest.mark.xdist_group("tfds")

ROOT = Path(__file__).resolve().parent.parent
NAME = "bench_tiny_shapes"


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory) -> Path:
    """bench_tiny_shapes prepared in a folder of its own: 20 train and 10 test images of three
    sizes, two classes (the dominant colour)."""
    tfds = pytest.importorskip("tensorflow_datasets")

    class BenchTinyShapes(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self, supervised_keys=("image", "label"),
                features=tfds.features.FeaturesDict({
                    "image": tfds.features.Image(shape=(None, None, 3)),
                    "label": tfds.features.ClassLabel(names=["red", "green"])}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(20, 0),
                    "test": self._generate_examples(10, 1)}

        def _generate_examples(self, n, seed):
            rng = np.random.default_rng(seed)
            for i in range(n):
                image = rng.integers(0, 60, (8 + i % 3, 10, 3), dtype=np.uint8)
                image[..., i % 2] += 180
                yield i, {"image": image, "label": i % 2}

    folder = tmp_path_factory.mktemp("tfds")
    BenchTinyShapes(data_dir=str(folder)).download_and_prepare()
    return folder


def test_a_prepared_dataset_is_read_by_name(tfds_dir):
    data = load_dataset(f"tfds:{NAME}", tfds_dir=str(tfds_dir), storage_size=16)
    assert isinstance(data, LazyDataset) and not data.decoded
    assert (data.kind, data.class_names, data.image_shape) == ("tfds", ("red", "green"),
                                                               (16, 16, 3))
    assert (data.n_train, data.n_test) == (20, 10)
    identity = data.checksum()
    assert data.train_images.shape == (20, 16, 16, 3) and data.train_images.dtype == np.uint8
    assert sorted(np.bincount(data.train_labels)) == [10, 10]
    # the dominant channel survives the resize: red images are redder than green
    red = data.train_images[data.train_labels == 0][..., :2].mean(axis=(0, 1, 2))
    assert red[0] > red[1]
    assert data.checksum() == identity
    again = load_dataset(f"tfds:{NAME}:train,test", tfds_dir=str(tfds_dir), storage_size=16)
    assert again.checksum() == identity
    other = load_dataset(f"tfds:{NAME}:test,train", tfds_dir=str(tfds_dir), storage_size=16)
    assert other.checksum() != identity and other.n_train == 10


def test_the_cli_runs_a_tfds_dataset(tfds_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3",
           "TFDS_DATA_DIR": str(tfds_dir)}
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "dense", "--epochs", "1", "--quiet", "--timeout-min",
         "10", "--data", f"tfds:{NAME}", "--out", str(tmp_path / "out")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = read_rows(tmp_path / "out")
    assert row["status"] == "ok", row["error"]
    assert (row["data"], row["data_kind"], row["n_train"], row["n_test"]) == (
        f"tfds:{NAME}", "tfds", 20, 10)


def test_a_dataset_not_prepared_is_one_line_and_exit_2(tfds_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3",
           "TFDS_DATA_DIR": str(tmp_path / "empty")}
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "dense", "--data", "tfds:mnist", "--out",
         str(tmp_path / "out")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) <= 3 and "Traceback" not in proc.stderr
    assert "mnist" in lines[-1] and "download_and_prepare" in lines[-1]


def test_an_unknown_split_is_named(tfds_dir):
    with pytest.raises(DataError, match="received 'validation'"):
        load_dataset(f"tfds:{NAME}:train,validation", tfds_dir=str(tfds_dir))


def test_without_tensorflow_datasets_one_line_says_what_to_install(monkeypatch):
    from bench.engine.quiet import import_tensorflow

    import_tensorflow()
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import raises ImportError
    with pytest.raises(DataError, match=r"tfds:mnist: .*not installed: pip install"):
        load_dataset("tfds:mnist")


@pytest.mark.parametrize("text", ["tfds:", "tfds:mnist:train", "tfds:mnist:train,"])
def test_a_malformed_tfds_source_is_refused(text):
    with pytest.raises(DataError, match="expected tfds:NAME or tfds:NAME:TRAIN,EVAL"):
        load_dataset(text)
