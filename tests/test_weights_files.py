"""A backbone built from a weights file is the network Keras builds for weights="imagenet"."""

from __future__ import annotations

from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format
from keras.src.utils import file_utils

from backbones import REGISTRY, BackboneSpec, get, weights_files
from bench.config import RunConfig
from bench.engine import features
from bench.weights import WeightsError, resolve_weights


def _name(spec: BackboneSpec) -> str:
    return spec.name


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    """Each build starts from fresh layer names, so that two builds' names can be compared."""
    keras.backend.clear_session()
    yield
    keras.backend.clear_session(free_memory=True)


def _save_as_keras_does(model: keras.Model, path: Path) -> Path:
    """The legacy HDF5 layout of Keras' own downloads (save_weights writes only .weights.h5)."""
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    return path


def _layers(model: keras.Model) -> list[tuple[str, str]]:
    return [(type(layer).__name__, layer.name) for layer in model.layers]


def _fingerprint(model: keras.Model) -> list[float]:
    return [float(np.sum(w, dtype=np.float64)) for w in model.get_weights()]


def _from_file(spec: BackboneSpec, size: int, path: Path) -> keras.Model:
    config = RunConfig(image_size=size, weights=str(path), verbose=0)
    return features.build_backbone(spec, size, config, resolve_weights(spec, size, config))


def _keras_imagenet_build(spec: BackboneSpec, size: int, path: Path,
                          monkeypatch: pytest.MonkeyPatch) -> tuple[keras.Model, list[str]]:
    """Keras' own weights="imagenet" build, its download answered with `path`; with the file
    names it asked for."""
    asked: list[str] = []

    def get_file(fname=None, *args, **kwargs) -> str:
        asked.append(fname)
        return str(path)

    with monkeypatch.context() as patch:
        patch.setattr(file_utils, "get_file", get_file)
        return spec.build(size, weights="imagenet"), asked


def _check_file_route(spec: BackboneSpec, tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    """One build of each kind, three facts: the row's recorded width and parameter count, the
    file name Keras asks for, and bench's build from that file being Keras' network with the
    file's weights."""
    size = spec.min_size
    saved = spec.build(size, weights=None)
    assert saved.output_shape == (None, spec.feature_width)
    assert saved.count_params() == spec.params
    expected_weights = _fingerprint(saved)
    path = _save_as_keras_does(saved, tmp_path / spec.weights_file(size))
    del saved
    keras.backend.clear_session()
    bench_model = _from_file(spec, size, path)
    bench_layers, bench_weights = _layers(bench_model), _fingerprint(bench_model)
    del bench_model
    keras.backend.clear_session()
    keras_model, asked = _keras_imagenet_build(spec, size, path, monkeypatch)
    keras_layers = _layers(keras_model)
    del keras_model
    path.unlink()  # pytest keeps recent tmp_paths, and the largest files are gigabytes
    assert asked == [spec.weights_file(size)]
    assert bench_layers == keras_layers
    assert bench_weights == expected_weights  # and the file's weights are what it holds


@pytest.mark.parametrize("name", ["EfficientNetB0", "EfficientNetV2B0", "MobileNet_0.25"])
def test_small_rows_from_a_file_are_keras_imagenet_network(name, tmp_path, monkeypatch):
    _check_file_route(get(name), tmp_path, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("spec", REGISTRY, ids=_name)
def test_every_row_from_a_file_is_keras_imagenet_network(spec, tmp_path, monkeypatch):
    """Every row at its min_size, through a real file (ConvNeXtXLarge's is 1.4 GB); also the
    row's width, parameter count and weights file name, so that each row is built only here."""
    _check_file_route(spec, tmp_path, monkeypatch)


def test_efficientnet_from_a_file_has_the_stem_rescaling_after_normalization(tmp_path):
    spec = get("EfficientNetB0")
    path = _save_as_keras_does(spec.build(32, weights=None), tmp_path / "efficientnetb0_notop.h5")
    kinds = [type(layer).__name__ for layer in _from_file(spec, 32, path).layers]
    assert kinds[kinds.index("Normalization") + 1] == "Rescaling"
    # Keras' own route for a path lacks it: the network bench must not build
    kinds = [type(layer).__name__ for layer in spec.build(32, weights=str(path)).layers]
    assert kinds[kinds.index("Normalization") + 1] != "Rescaling"


def test_a_bad_file_is_one_line_naming_it_and_the_download_is_restored(tmp_path):
    original = file_utils.get_file
    bad = tmp_path / "efficientnetb0_notop.h5"
    bad.write_bytes(b"not an hdf5 file" * 64)
    with pytest.raises(WeightsError, match="EfficientNetB0") as caught:
        _from_file(get("EfficientNetB0"), 32, bad)
    assert str(bad) in str(caught.value) and "\n" not in str(caught.value)
    assert file_utils.get_file is original


# --- where Keras downloads each file from, and the hash it checks ------------------------------
class _Asked(Exception):
    """Raised by the fake get_file: nothing is downloaded."""


def _keras_download(spec: BackboneSpec, size: int, monkeypatch: pytest.MonkeyPatch) -> tuple:
    """(file name, URL, file_hash) Keras' weights="imagenet" build asks get_file for."""
    asked = []

    def get_file(fname=None, origin=None, *args, **kwargs):
        asked.append((fname, origin, kwargs.get("file_hash")))
        raise _Asked

    with monkeypatch.context() as patch:
        patch.setattr(file_utils, "get_file", get_file)
        with pytest.raises(_Asked):
            spec.build(size, weights="imagenet")
    return asked[0]


def _check_origin_and_hash(spec: BackboneSpec, size: int, monkeypatch) -> None:
    name = spec.weights_file(size)
    assert _keras_download(spec, size, monkeypatch) == (
        name, weights_files.no_top_origin(spec.family, name), weights_files.no_top_hash(name))


# one row of each family, at sides that build fast
ONE_PER_FAMILY = [("ConvNeXtTiny", 32), ("DenseNet121", 32), ("EfficientNetB0", 32),
                  ("EfficientNetV2B0", 32), ("InceptionV3", 75), ("MobileNet_0.25", 128),
                  ("MobileNetV2_0.35", 96), ("MobileNetV3Large_minimalistic", 32),
                  ("NASNetMobile", 32), ("ResNet50", 32), ("ResNet50V2", 32), ("VGG16", 32),
                  ("Xception", 71)]


@pytest.mark.parametrize(("name", "size"), ONE_PER_FAMILY, ids=[n for n, _ in ONE_PER_FAMILY])
def test_origin_and_hash_are_what_keras_asks_for(name, size, monkeypatch):
    _check_origin_and_hash(get(name), size, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("spec", [s for s in REGISTRY if s.kind == "backbone"], ids=_name)
def test_every_rows_origin_and_hash_are_what_keras_asks_for(spec, monkeypatch):
    for side in spec.weight_sizes or (spec.input_size,):
        _check_origin_and_hash(spec, max(side, spec.min_size), monkeypatch)
        keras.backend.clear_session()


def test_every_hash_names_a_registry_file_and_says_its_algorithm():
    names = {spec.weights_file(side) for spec in REGISTRY if spec.kind == "backbone"
             for side in spec.weight_sizes or (spec.input_size,)}
    assert set(weights_files.NO_TOP_HASHES) <= names
    for value in weights_files.NO_TOP_HASHES.values():
        assert weights_files.file_hash_algorithm(value) == {32: "md5", 64: "sha256"}[len(value)]
        int(value, 16)
