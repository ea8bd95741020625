"""The extraction runtimes: OpenVINO computes TensorFlow's features (so the feature cache does
not depend on the runtime), its converted models are cached, and --runtime auto chooses from
measured or remembered rates."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import openvino  # noqa: F401  (the runtime under test; CI installs it, so no skip)
import pytest
import tensorflow as tf
from conftest import assert_features_close, assert_histories_close, read_rows, synthetic_arrays

from backbones import get
from bench.__main__ import main
from bench.cache import OPENVINO_COMPILED_DIR, reset_process_caches
from bench.config import RunConfig
from bench.data import Dataset, from_arrays
from bench.engine import features, openvino_backend, runtime_choice, runtimes
from bench.engine.runner import run_one
from bench.fsio import read_json_store
from bench.identity import file_sha256, identify

ROOT = Path(__file__).resolve().parent.parent
BATCH = 8  # 20 images: two full batches and a short one, which OpenVINO pads


def _data(n_train: int = 20) -> Dataset:
    return from_arrays(*synthetic_arrays(n_train=n_train, n_test=6), source="synthetic")


class _Built:
    """A backbone as routes._extract builds it, and what choose_runtime() needs beside it."""

    def __init__(self, name: str, config: RunConfig, data: Dataset):
        self.spec, self.config, self.data = get(name), config, data
        self.ident = identify(self.spec, config, data)
        keras.utils.set_random_seed(config.effective_backbone_seed)
        self.backbone = features.build_backbone(self.spec, self.ident.size, config,
                                                self.ident.weights)
        inputs, outputs = features.backbone_graph(self.spec, self.backbone, self.ident.size,
                                                  config, data.image_shape, "uint8")
        self.extractor = keras.Model(inputs, outputs)
        self.images = data.train_images

    def runtime(self, name: str, store: Path | None) -> runtimes.Runtime:
        return runtime_choice.make_runtime(name, self.spec, self.backbone, self.extractor,
                                           self.config, self.ident, self.images.shape[1:],
                                           "uint8", store)

    def choose(self, store: Path, n_total: int | None = None):
        return runtime_choice.choose_runtime(self.spec, self.backbone, self.extractor,
                                             self.config, self.ident, self.images,
                                             n_total or len(self.images), store)

    def tf_features(self) -> np.ndarray:
        return runtimes.extract(self.runtime("tensorflow", None), self.images, verbose=0)


def _assert_close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == np.float32 and np.all(np.isfinite(got))
    assert float(np.max(np.abs(want))) > 0
    assert_features_close(got, want)


def _random(size: int = 32, **kw) -> RunConfig:
    return RunConfig(image_size=size, weights="random", extract_batch_size=BATCH, verbose=0,
                     seed=3, **kw)


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    """A store holding the converted random MobileNet_0.25 of _random() (seed 3, size 32):
    converting costs seconds, and the tests that only need it present copy it."""
    store = tmp_path_factory.mktemp("converted")
    built = _Built("MobileNet_0.25", _random(), _data())
    key = runtime_choice.openvino_key(built.spec, built.config, built.ident)
    assert not openvino_backend.converted(built.backbone, key, built.spec.name, store).was_cached
    keras.backend.clear_session()
    return store


def _copy_converted(converted: Path, store: Path) -> None:
    shutil.copytree(converted / "openvino", store / "openvino")


# each converts and compiles a large graph: about 20-30 s apiece on two cores
@pytest.mark.slow
@pytest.mark.parametrize("name", [
    "EfficientNetB0",
    "DenseNet121",
    "ConvNeXtTiny",  # float32 matters here: bf16 moved its features by 1e-2
])
def test_openvino_features_equal_tensorflow_random_weights(name, tmp_path):
    built = _Built(name, _random(), _data())
    ov = built.runtime("openvino", tmp_path)
    got = runtimes.extract(ov, built.images, verbose=0)
    assert ov.info.runtime == "openvino" and ov.info.batch == BATCH
    _assert_close(got, built.tf_features())


# Keras loads the 224 no-top weights for a 32x32 input, as the runner does, and says so
@pytest.mark.filterwarnings("ignore:.*Weights for input shape:UserWarning")
def test_openvino_features_equal_tensorflow_real_mobilenet(tmp_path, real_weights_dir):
    config = RunConfig(image_size=32, weights_dir=str(real_weights_dir), verbose=0,
                       extract_batch_size=BATCH)
    built = _Built("MobileNet_0.25", config, _data())
    assert built.ident.weights.source != "random"
    got = runtimes.extract(built.runtime("openvino", tmp_path), built.images, verbose=0)
    assert got.shape == (20, built.spec.feature_width)
    _assert_close(got, built.tf_features())


def _run(data: Dataset, **kw):
    row = run_one(get("MobileNet_0.25"), _random(epochs=2, **kw), data)
    assert row.status == "ok", row.error
    return row


def test_openvino_and_tensorflow_runs_train_the_same_head(tiny_data):
    rows = {}
    for name in ("openvino", "tensorflow"):
        # the features of the last extraction stay in memory even with the cache off (a K-seed
        # run shares them): without this the second run would reuse the first's
        reset_process_caches()
        rows[name] = _run(tiny_data, runtime=name, cache=False)
    ov, tf_row = rows["openvino"], rows["tensorflow"]
    one_sample = 1 / tiny_data.n_test
    diffs = np.abs(np.subtract(ov.history["test_accuracy"], tf_row.history["test_accuracy"]))
    assert len(diffs) == 2 and np.all(diffs <= one_sample + 1e-9), diffs
    # features within 1e-5 move the head's losses far less than one sample would
    np.testing.assert_allclose(ov.history["test_loss"], tf_row.history["test_loss"], rtol=1e-3)
    assert (ov.runtime, ov.runtime_version) == ("openvino", openvino_backend.version())
    assert (tf_row.runtime, tf_row.runtime_version) == ("tensorflow", tf.__version__)
    for row in rows.values():
        assert row.runtime_batch == BATCH and not row.features_cached
        assert row.runtime_images_per_s > 0 and row.infer_ms > 0
        assert row.runtime_note.startswith(f"--runtime {row.runtime}")
    assert ov.runtime_setup_s > 0  # conversion and compilation


def test_end_to_end_row_says_tensorflow_whatever_the_engine(tiny_data):
    row = run_one(get("MobileNet_0.25"), _random(epochs=1, runtime="openvino", cache=False,
                                                 end_to_end=True), tiny_data)
    assert row.status == "ok", row.error
    assert (row.runtime, row.runtime_version) == ("tensorflow", tf.__version__)
    assert "end to end" in row.runtime_note


@pytest.mark.xdist_group("openvino-converted")
def test_cached_features_are_the_same_whichever_engine_computed_them(tiny_data, tmp_path,
                                                                    converted):
    _copy_converted(converted, tmp_path / "cache")
    cache_dir = str(tmp_path / "cache")
    first = _run(tiny_data, runtime="openvino", cache_dir=cache_dir)
    reset_process_caches()  # the second run reads the disk, not the last extraction in memory
    second = _run(tiny_data, runtime="tensorflow", cache_dir=cache_dir)
    assert not first.features_cached and second.features_cached
    assert first.runtime == second.runtime == "openvino"
    for field in ("runtime_version", "runtime_batch", "runtime_images_per_s", "runtime_note"):
        assert getattr(second, field) == getattr(first, field), field
    # the second run trained on the features the first cached: one computation
    assert_histories_close(second.history, first.history, n=tiny_data.n_test)
    assert "from the cache" in first.runtime_note  # the shared conversion was found


def _one_entry(store: Path) -> Path:
    entries = list((store / "openvino").iterdir())
    assert len(entries) == 1, entries
    return entries[0]


def test_converted_model_is_cached_once_and_keyed_by_the_weights(tmp_path):
    built = _Built("MobileNet_0.25", _random(), _data())
    first = built.runtime("openvino", tmp_path)
    second = built.runtime("openvino", tmp_path)
    assert "converted now" in first.info.note and "from the cache" in second.info.note
    folder = _one_entry(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["checksum.json", "model.bin",
                                                        "model.xml"]
    assert not [p for p in tmp_path.rglob("*.bench-tmp*")]
    # one converted model, compiled twice: the same features (a wrong or damaged model
    # would move them by far more than FEATURE_RTOL)
    assert_features_close(runtimes.extract(second, built.images, verbose=0),
                          runtimes.extract(first, built.images, verbose=0))
    key = runtime_choice.openvino_key(built.spec, built.config, built.ident)
    assert folder.name == f"MobileNet_0.25-{key[:16]}"
    other = replace(built.config, backbone_seed=4)
    other_key = runtime_choice.openvino_key(built.spec, other,
                                            identify(built.spec, other, built.data))
    assert other_key != key
    assert runtime_choice.openvino_key(built.spec, built.config,
                               identify(built.spec, built.config, built.data)) == key


@pytest.fixture
def auto():
    """A random MobileNet_0.25 under --runtime auto (each test says whether a GPU is seen)."""
    return _Built("MobileNet_0.25", _random(runtime="auto"), _data())


def _remember(built: _Built, store: Path, **memory) -> None:
    key = runtime_choice._choice_key(built.spec, built.config, built.ident.size,
                             tuple(built.images.shape[1:]), "uint8")
    runtime_choice._remember(store, key, memory)


def _no_probing(*args, **kwargs):
    raise AssertionError("auto probed although the rates were remembered")


@pytest.mark.xdist_group("openvino-converted")
@pytest.mark.parametrize("rates, want", [
    ({"tensorflow": 10.0, "openvino": 100.0}, runtimes.OpenVinoRuntime),
    ({"tensorflow": 100.0, "openvino": 10.0}, runtimes.TensorFlowRuntime),
])
def test_auto_takes_the_remembered_faster_engine_without_probing(auto, tmp_path, monkeypatch,
                                                                 converted, rates, want):
    monkeypatch.setattr(runtime_choice, "has_gpu", lambda: False)
    monkeypatch.setattr(runtime_choice, "_probe", _no_probing)
    _copy_converted(converted, tmp_path)
    key = runtime_choice.openvino_key(auto.spec, auto.config, auto.ident)
    assert openvino_backend.is_cached(key, auto.spec.name, tmp_path)
    _remember(auto, tmp_path, rates=rates)
    runtime, done = auto.choose(tmp_path, n_total=1000)
    assert type(runtime) is want and done is None
    assert "remembered" in runtime.info.note and runtime.info.probe_s == 0


def test_auto_counts_an_uncached_conversion_against_openvino(auto, tmp_path, monkeypatch):
    monkeypatch.setattr(runtime_choice, "has_gpu", lambda: False)
    monkeypatch.setattr(runtime_choice, "_probe", _no_probing)
    # 10x faster, but converting (60 s remembered) costs more than TensorFlow's 26 images
    _remember(auto, tmp_path, rates={"tensorflow": 10.0, "openvino": 100.0}, conversion_s=60.0)
    runtime, _ = auto.choose(tmp_path)
    assert type(runtime) is runtimes.TensorFlowRuntime and "remembered" in runtime.info.note


def test_auto_on_a_gpu_runs_tensorflow(auto, tmp_path, monkeypatch):
    monkeypatch.setattr(runtime_choice, "has_gpu", lambda: True)
    monkeypatch.setattr(runtime_choice, "_probe", _no_probing)
    runtime, done = auto.choose(tmp_path, n_total=10**6)
    assert type(runtime) is runtimes.TensorFlowRuntime and done is None
    assert "GPU" in runtime.info.note
    assert not (tmp_path / runtime_choice.CHOICES_FILE).exists()


def test_cold_auto_probes_both_remembers_them_and_computes_tensorflows_features(
        auto, tmp_path, monkeypatch):
    monkeypatch.setattr(runtime_choice, "has_gpu", lambda: False)
    # a large dataset: converting pays off, so both runtimes are probed
    runtime, done = auto.choose(tmp_path, n_total=10**6)
    assert "measured tensorflow and openvino" in runtime.info.note, runtime.info.note
    assert done is not None and 0 < len(done) <= len(auto.images)
    got = runtimes.extract(runtime, auto.images, verbose=0, done=done)
    _assert_close(got, auto.tf_features())
    memory = read_json_store(tmp_path / runtime_choice.CHOICES_FILE)
    entry = runtime_choice.remembered(auto.spec, auto.config, auto.ident.size,
                                      tuple(auto.images.shape[1:]), "uint8", tmp_path)
    assert set(entry["rates"]) == {"tensorflow", "openvino"}
    assert all(rate > 0 for rate in entry["rates"].values())
    assert entry["trace_s"] > 0 and entry["conversion_s"] > 0
    # what the machine learnt, for backbones not measured yet: conversion per tracing and
    # this backbone's speed-up
    machine = runtime_choice.machine_memory(tmp_path)
    assert len(memory) == 2 and machine["conversion_per_trace"][0] > 0
    assert machine["speedups"]["MobileNet_0.25"] == pytest.approx(
        entry["rates"]["openvino"] / entry["rates"]["tensorflow"], rel=0.01)
    assert not [p for p in tmp_path.rglob("*.bench-tmp*")]
    monkeypatch.setattr(runtime_choice, "_probe", _no_probing)
    again, _ = auto.choose(tmp_path, n_total=10**6)
    assert type(again) is type(runtime) and "remembered" in again.info.note


def test_an_unknown_engine_is_a_one_line_usage_error(tiny_data_dir, tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "bench", "MobileNet_0.25", "--runtime", "bogus",
                           "--data", str(tiny_data_dir), "--out", str(tmp_path / "out")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "--runtime" in lines[0] and "bogus" in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.xdist_group("openvino-converted")
def test_cli_engine_openvino_row_names_it(tiny_data_dir, tmp_path, converted):
    _copy_converted(converted, Path(os.environ["BENCH_CACHE_DIR"]))
    out = tmp_path / "out"
    assert main(["MobileNet_0.25", "--data", str(tiny_data_dir), "--out", str(out),
                 "--weights", "random", "--image-size", "32", "--seed", "3", "--epochs", "1",
                 "--quiet", "--runtime", "openvino"]) == 0
    (row,) = read_rows(out)
    assert row["status"] == "ok" and row["runtime"] == "openvino"
    assert row["runtime_note"] == "--runtime openvino; f32, converted model from the cache"
    assert row["runtime_version"] == openvino_backend.version()


def test_no_cache_drops_features_only_and_converts_nothing_the_second_time(tiny_data_dir,
                                                                          tmp_path):
    cache = Path(os.environ["BENCH_CACHE_DIR"])
    args = ["MobileNet_0.25", "--data", str(tiny_data_dir), "--weights", "random",
            "--image-size", "32", "--seed", "3", "--epochs", "1", "--quiet",
            "--runtime", "openvino", "--no-cache"]
    rows = []
    for i in range(2):
        reset_process_caches()  # a new process: nothing remembered in memory
        assert main([*args, "--out", str(tmp_path / f"out{i}")]) == 0
        (row,) = read_rows(tmp_path / f"out{i}")
        rows.append(row)
    first, second = rows
    assert "converted now" in first["runtime_note"], first["runtime_note"]
    assert second["runtime_note"] == "--runtime openvino; f32, converted model from the cache"
    assert not list(cache.glob("*.npz"))  # no features were kept
    assert (cache / runtime_choice.CHOICES_FILE).exists()


@pytest.mark.parametrize("damage", ["flip", "truncate", "no checksum"])
def test_a_damaged_converted_model_is_said_removed_and_converted_again(tmp_path, capsys,
                                                                      damage):
    built = _Built("MobileNet_0.25", _random(), _data())
    want = runtimes.extract(built.runtime("openvino", tmp_path), built.images, verbose=0)
    folder = _one_entry(tmp_path)
    weights = folder / "model.bin"
    data = bytearray(weights.read_bytes())
    if damage == "flip":  # 4 KB of the weights inverted: runs, but computes other features
        data[1024:5120] = bytes(255 - b for b in data[1024:5120])
        weights.write_bytes(bytes(data))
    elif damage == "truncate":
        weights.write_bytes(bytes(data[: len(data) // 2]))
    else:
        (folder / "checksum.json").unlink()
    capsys.readouterr()
    again = built.runtime("openvino", tmp_path)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "damaged" in err[0] and "converting it again" in err[0], err
    assert "converted now" in again.info.note
    assert_features_close(runtimes.extract(again, built.images, verbose=0), want)
    third = built.runtime("openvino", tmp_path)  # the new conversion is whole and checked
    assert "from the cache" in third.info.note and not capsys.readouterr().err


# Real weights: a random MobileNet_0.25's features at 64 px are ~1e-16, where a damaged blob
# would not show
@pytest.mark.filterwarnings("ignore:.*Weights for input shape:UserWarning")
@pytest.mark.parametrize("damage", ["flip", "no checksum"])
def test_a_damaged_compiled_blob_is_said_removed_and_compiled_again(tmp_path, capsys, damage,
                                                                   real_weights_dir):
    """OpenVINO computes with a compiled blob whose bytes were flipped (its features moved by
    their whole scale): bench checks the blob's sha256 before OpenVINO reads it."""
    config = RunConfig(image_size=64, weights_dir=str(real_weights_dir), verbose=0,
                       extract_batch_size=BATCH)
    built = _Built("MobileNet_0.25", config, _data())
    want = runtimes.extract(built.runtime("openvino", tmp_path), built.images, verbose=0)
    (folder,) = (tmp_path / OPENVINO_COMPILED_DIR).iterdir()
    (blob,) = folder.glob("*.blob")
    recorded = folder / openvino_backend.COMPILED_CHECKSUM_FILE
    assert json.loads(recorded.read_text()) == {blob.name: file_sha256(blob)}
    if damage == "flip":  # 4 KB in the middle inverted: OpenVINO reads it without an error
        data = bytearray(blob.read_bytes())
        middle = len(data) // 2
        data[middle:middle + 4096] = bytes(255 - b for b in data[middle:middle + 4096])
        blob.chmod(0o644)  # OpenVINO writes its blobs read-only
        blob.write_bytes(bytes(data))
    else:  # a compilation killed before its blob was recorded
        recorded.unlink()
    capsys.readouterr()
    again = built.runtime("openvino", tmp_path)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "compiled model cache" in err[0] and blob.name in err[0], err
    assert "removed, compiling again" in err[0]
    assert_features_close(runtimes.extract(again, built.images, verbose=0), want)
    assert json.loads(recorded.read_text()) == {blob.name: file_sha256(blob)}
    third = built.runtime("openvino", tmp_path)  # the new blob is whole and recorded
    assert not capsys.readouterr().err
    assert_features_close(runtimes.extract(third, built.images, verbose=0), want)


def test_a_killed_conversions_folder_is_removed_by_the_next(tmp_path):
    built = _Built("MobileNet_0.25", _random(), _data())
    parent = tmp_path / "openvino"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = parent / f".{dead}.MobileNet_0.25.x1y2.bench-tmp"
    alive = parent / f".{os.getpid()}.MobileNet_0.25.x3y4.bench-tmp"
    for folder in (stale, alive):
        (folder / "saved_model").mkdir(parents=True)
    built.runtime("openvino", tmp_path)
    assert not stale.exists() and alive.exists()


def test_a_malformed_choices_entry_warns_naming_the_file_and_measures_again(auto, tmp_path,
                                                                           monkeypatch, capsys):
    monkeypatch.setattr(runtime_choice, "has_gpu", lambda: False)
    _remember(auto, tmp_path, rates={"tensorflow": "fast"})
    runtime, _ = auto.choose(tmp_path)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and runtime_choice.CHOICES_FILE in err[0] and "malformed" in err[0]
    assert "measured tensorflow" in runtime.info.note
    entry = runtime_choice.remembered(auto.spec, auto.config, auto.ident.size,
                                      tuple(auto.images.shape[1:]), "uint8", tmp_path)
    assert entry["rates"]["tensorflow"] > 0  # rewritten whole
