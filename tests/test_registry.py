"""The backbone registry against the installed Keras: names, facts, weights files, selection."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import pickle
from pathlib import Path

import keras
import numpy as np
import pytest
from keras.src.utils import file_utils

from backbones import (
    BASELINES,
    REGISTRY,
    BackboneSpec,
    Spec,
    UnknownBackboneError,
    canonical,
    get,
    load_extras,
    registry,
    rows,
    select,
)


def _name(spec: BackboneSpec) -> str:
    return spec.name


every_row = pytest.mark.parametrize("spec", REGISTRY, ids=_name)


@pytest.fixture(autouse=True)
def _no_extra_rows(monkeypatch):
    """The registry as it ships, whatever extra rows an earlier test loaded in this process."""
    monkeypatch.setattr(registry, "EXTRAS", {})
    monkeypatch.delenv("BENCH_EXTRA_BACKBONES", raising=False)


@pytest.fixture(autouse=True)
def _fresh_keras_session(request):
    """Builds pile up in Keras' global state; clearing it keeps memory bounded.

    The garbage-collection pass (about 0.2 s) only runs after the slow tests, whose models
    are big enough to matter; the small builds of the fast tests just reset the state.
    """
    yield
    keras.backend.clear_session(free_memory=request.node.get_closest_marker("slow") is not None)


# --- the table against keras.applications -------------------------------------------------


def test_canonical_rows_are_exactly_the_public_keras_constructors():
    # Fails when a Keras upgrade adds (or drops) a constructor the registry lacks.
    public = {n for n in dir(keras.applications)
              if n[:1].isupper() and callable(getattr(keras.applications, n))}
    assert {s.constructor_name for s in canonical()} == public
    assert len(canonical()) == 40
    assert all(s.name == s.constructor_name and not s.kwargs for s in canonical())


def test_names_are_unique_and_canonical_rows_come_first():
    names = [s.name.lower() for s in (*REGISTRY, *BASELINES)]
    assert len(names) == len(set(names))
    flags = [s.canonical for s in REGISTRY]
    assert flags == sorted(flags, reverse=True)
    assert len(REGISTRY) == 40 + 12


@every_row
def test_row_is_consistent_with_its_keras_module(spec: BackboneSpec):
    constructor = spec.constructor
    assert constructor is getattr(keras.applications, spec.constructor_name)
    assert constructor.__module__ == f"keras.src.applications.{spec.family}"
    assert callable(spec.preprocess_input)
    assert spec.preprocess_mode in {"caffe", "tf", "torch", "in-graph"}
    assert spec.min_size <= spec.input_size
    assert set(spec.kwargs) <= set(inspect.signature(constructor).parameters)
    if not spec.canonical:
        assert spec.name.startswith(spec.constructor_name + "_") and spec.kwargs
    if spec.weight_sizes is not None:
        assert spec.input_size in spec.weight_sizes
    assert spec.top1 is None or 40.0 < spec.top1 < 90.0


def test_top1_is_published_for_every_row():
    assert [s.name for s in REGISTRY if s.top1 is None] == []
    assert get("DenseNet121").top1 == 75.0 and get("MobileNet_0.25").top1 == 50.6
    assert get("ConvNeXtTiny").top1 == 81.3 and get("ConvNeXtXLarge").top1 == 86.7  # keras.io


def test_native_input_sizes():
    sizes = {s.name: s.input_size for s in canonical()}
    effnet = dict(zip("01234567", (224, 240, 260, 300, 380, 456, 528, 600), strict=True))
    assert {f"EfficientNetB{k}": sizes[f"EfficientNetB{k}"] for k in effnet} == {
        f"EfficientNetB{k}": v for k, v in effnet.items()}
    assert [sizes[f"EfficientNetV2{k}"] for k in ("B0", "B1", "B2", "B3", "S", "M", "L")] == [
        224, 240, 260, 300, 384, 480, 480]
    assert sizes["NASNetLarge"] == 331
    assert sizes["Xception"] == sizes["InceptionV3"] == sizes["InceptionResNetV2"] == 299


@every_row
def test_preprocess_mode_matches_the_family_preprocess_input(spec: BackboneSpec):
    x = np.random.default_rng(0).uniform(0, 255, size=(2, 4, 4, 3)).astype("float32")
    got = np.asarray(spec.preprocess_input(x.copy()))
    if spec.preprocess_mode == "in-graph":
        np.testing.assert_array_equal(got, x)
    else:
        expected = keras.applications.imagenet_utils.preprocess_input(
            x.copy(), mode=spec.preprocess_mode)
        np.testing.assert_allclose(got, expected, rtol=1e-6)


@every_row
def test_keras_refuses_one_pixel_below_min_size(spec: BackboneSpec):
    # Keras validates the shape before building anything, so this is cheap for every row.
    below = spec.min_size - 1
    with pytest.raises(ValueError, match=f"at least {spec.min_size}x{spec.min_size}"):
        spec.constructor(include_top=False, weights=None, input_shape=(below, below, 3),
                         **spec.kwargs)


def test_build_below_min_size_raises_naming_the_minimum():
    with pytest.raises(ValueError) as info:
        get("Xception").build(70)
    assert str(info.value) == "Xception needs an input of at least 71x71; received 70x70"


# --- weights files ------------------------------------------------------------------------

KNOWN_FILES = [
    ("DenseNet121", 224, "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    ("MobileNet_0.25", 160, "mobilenet_2_5_160_tf_no_top.h5"),
    ("MobileNet_0.25", 150, "mobilenet_2_5_224_tf_no_top.h5"),
    ("MobileNet_0.75", 128, "mobilenet_7_5_128_tf_no_top.h5"),
    ("MobileNet", 192, "mobilenet_1_0_192_tf_no_top.h5"),
    ("MobileNetV2_0.35", 96, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5"),
    ("MobileNetV2", 100, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"),
    ("MobileNetV3Small", 224, "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"),
    ("MobileNetV3Small_0.75", 96, "weights_mobilenet_v3_small_224_0.75_float_no_top_v2.h5"),
    ("MobileNetV3Large_minimalistic", 224,
     "weights_mobilenet_v3_large_minimalistic_224_1.0_float_no_top_v2.h5"),
    ("EfficientNetB0", 224, "efficientnetb0_notop.h5"),
    ("EfficientNetV2S", 384, "efficientnetv2-s_notop.h5"),
    ("EfficientNetV2B3", 300, "efficientnetv2-b3_notop.h5"),
    ("ConvNeXtTiny", 224, "convnext_tiny_notop.h5"),
    ("NASNetMobile", 224, "nasnet_mobile_no_top.h5"),
    ("NASNetLarge", 331, "nasnet_large_no_top.h5"),
    ("ResNet50", 224, "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    ("ResNet50V2", 224, "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    ("InceptionResNetV2", 299, "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    ("VGG19", 224, "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    ("Xception", 299, "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"),
]


@pytest.mark.parametrize(("name", "size", "expected"), KNOWN_FILES,
                         ids=[f"{n}@{s}" for n, s, _ in KNOWN_FILES])
def test_weights_file_known_cases(name: str, size: int, expected: str):
    assert get(name).weights_file(size) == expected


def test_weights_candidates_order_by_distance_then_larger_first():
    spec = get("MobileNet_0.25")
    assert spec.weights_candidates(150) == [f"mobilenet_2_5_{s}_tf_no_top.h5"
                                            for s in (160, 128, 192, 224)]
    assert spec.weights_candidates(224) == [f"mobilenet_2_5_{s}_tf_no_top.h5"
                                            for s in (224, 192, 160, 128)]
    assert spec.weights_candidates(144)[:2] == [f"mobilenet_2_5_{s}_tf_no_top.h5"
                                                for s in (160, 128)]  # a tie: larger first
    assert get("MobileNetV2").weights_candidates(32)[0].endswith("_1.0_96_no_top.h5")
    assert get("DenseNet121").weights_candidates(97) == [get("DenseNet121").weights_file(97)]


class _Intercepted(Exception):
    """Raised by the fake get_file so that nothing is downloaded."""


@pytest.fixture
def keras_request(monkeypatch):
    """Builds a row with weights='imagenet' and returns the (fname, origin) Keras asks for."""
    asked: list[tuple[str, str]] = []

    def fake_get_file(fname=None, origin=None, *args, **kwargs):
        asked.append((fname, origin))
        raise _Intercepted

    # Every application module calls `file_utils.get_file` through the module attribute.
    monkeypatch.setattr(file_utils, "get_file", fake_get_file)

    def request(spec: BackboneSpec, size: int) -> tuple[str, str]:
        asked.clear()
        with pytest.raises(_Intercepted):
            spec.build(size, weights="imagenet")
        assert len(asked) == 1
        return asked[0]

    return request


def _check_against_keras(keras_request, spec: BackboneSpec, size: int) -> None:
    fname, _ = keras_request(spec, size)
    assert spec.weights_file(size) == fname
    if spec.weight_sizes is None or size in spec.weight_sizes:
        assert spec.weights_candidates(size)[0] == fname


FAST_KERAS_CHECKS = [
    ("DenseNet121", 32),
    ("MobileNet_0.25", 160),
    ("MobileNet_0.25", 150),  # no file for 150: Keras falls back to 224's
    ("MobileNetV2_0.35", 128),
    ("MobileNetV3Small_0.75", 32),
    ("MobileNetV3Large_minimalistic", 32),
    ("EfficientNetB0", 32),
    ("EfficientNetV2B0", 32),
    ("ConvNeXtTiny", 32),
    ("ResNet50", 32),
    ("ResNet50V2", 32),
    ("VGG16", 32),
    ("Xception", 71),
]


@pytest.mark.parametrize(("name", "size"), FAST_KERAS_CHECKS,
                         ids=[f"{n}@{s}" for n, s in FAST_KERAS_CHECKS])
def test_weights_file_is_what_keras_downloads(keras_request, name: str, size: int):
    _check_against_keras(keras_request, get(name), size)


@pytest.mark.slow
@pytest.mark.parametrize("spec", [s for s in REGISTRY if s.weight_sizes is not None], ids=_name)
def test_weights_file_is_what_keras_downloads_at_a_side_with_a_file(keras_request,
                                                                     spec: BackboneSpec):
    # min_size, where most rows fall back to another side's file, is checked with every row's
    # build from a file (tests/test_weights_files.py); here, a side that has a file of its own
    _check_against_keras(keras_request, spec, min(spec.weight_sizes))


def test_real_weights_file_loads(real_weights_dir: Path):
    # The shared folder holds Keras' own files; any that a row names must load into it.
    known = {spec.weights_file(s): spec for spec in REGISTRY
             for s in (spec.weight_sizes or (spec.input_size,))}
    files = sorted(p for p in real_weights_dir.glob("*.h5") if p.name in known)
    if not files:
        pytest.skip(f"no registry weights file in {real_weights_dir}")
    small = [p for p in files if known[p.name].params < 30_000_000]  # keep it quick
    if not small:
        pytest.skip(f"only large backbones' weights in {real_weights_dir}")
    for path in small:
        spec = known[path.name]
        model = spec.build(spec.min_size, weights=str(path))
        assert model.output_shape == (None, spec.feature_width)


# --- building -----------------------------------------------------------------------------


def _check_build(spec: BackboneSpec, size: int) -> None:
    model = spec.build(size, pooling="max", weights=None)
    assert model.output_shape == (None, spec.feature_width)
    assert model.count_params() == spec.params


@pytest.mark.parametrize("name", ["MobileNet_0.25", "MobileNetV3Small", "EfficientNetB0",
                                  "DenseNet121"])
def test_small_rows_build_with_the_recorded_width_and_params(name: str):
    _check_build(get(name), 32)


def test_build_passes_kwargs_and_pooling_through():
    model = get("MobileNetV3Small_minimalistic").build(48, pooling=None)
    assert model.output_shape[-1] == 576 and len(model.output_shape) == 4
    assert not any("squeeze_excite" in layer.name for layer in model.layers)  # minimalistic


# --- lookup and selection -----------------------------------------------------------------


def test_get_is_exact_and_case_insensitive():
    assert get("densenet121") is get("DenseNet121")
    assert get("MOBILENET_0.25").kwargs == {"alpha": 0.25}
    with pytest.raises(UnknownBackboneError):
        get("DenseNet")


def test_select_names_case_insensitively_and_dedupes():
    got = select(["densenet121", "DenseNet121", "mobilenet_0.5", "DENSENET121"])
    assert [s.name for s in got] == ["DenseNet121", "MobileNet_0.5"]


def test_select_globs_expand_in_registry_order():
    effnets = [s.name for s in select(["EfficientNet*"])]
    assert effnets == [f"EfficientNetB{i}" for i in range(8)] + [
        f"EfficientNetV2{k}" for k in ("B0", "B1", "B2", "B3", "S", "M", "L")]
    assert [s.name for s in select(["mobilenet_*"])] == [
        "MobileNet_0.25", "MobileNet_0.5", "MobileNet_0.75"]
    assert [s.name for s in select(["MobileNetV3*_minimalistic"])] == [
        "MobileNetV3Small_minimalistic", "MobileNetV3Large_minimalistic"]


def test_select_keeps_first_match_order_across_patterns():
    got = [s.name for s in select(["VGG19", "vgg*", "ResNet50", "resnet50*"])]
    assert got == ["VGG19", "VGG16", "ResNet50", "ResNet50V2"]


def test_unknown_name_suggests_close_matches_on_one_line():
    with pytest.raises(UnknownBackboneError) as info:
        select(["densenet12"])
    message = str(info.value)
    assert message.startswith("Unknown backbone 'densenet12'. Did you mean DenseNet121")
    assert message.endswith("See: python -m bench --list")
    assert "\n" not in message
    assert isinstance(info.value, ValueError)


def test_unknown_name_without_close_matches_omits_the_suggestion():
    with pytest.raises(UnknownBackboneError) as info:
        select(["zzzzzz"])
    assert str(info.value) == "Unknown backbone 'zzzzzz'. See: python -m bench --list"


def test_glob_matching_nothing_raises():
    with pytest.raises(UnknownBackboneError, match="No backbone matches 'vit\\*'"):
        select(["vit*"])


# --- the spec as a value ------------------------------------------------------------------


def test_specs_are_frozen_hashable_and_picklable():
    spec = get("MobileNetV2_1.4")
    assert {spec: 1}[spec] == 1
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert copy.deepcopy(spec) == spec
    with pytest.raises(AttributeError):
        spec.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.kwargs["alpha"] = 2.0  # type: ignore[index]


def test_backbones_and_baselines_are_one_spec_type_told_apart_by_kind():
    specs = select(["*"])
    assert all(isinstance(s, Spec) for s in specs) and len(specs) == len(REGISTRY) + 2
    assert {s.name: s.kind for s in specs if s.kind == "baseline"} == {
        "scratch-cnn": "baseline", "dense": "baseline"}
    with pytest.raises(TypeError):
        BackboneSpec(**{**_fields(get("VGG16")), "kind": "baseline"})  # a backbone's kind is fixed


def _fields(spec: BackboneSpec) -> dict:
    return {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec) if f.init}


def test_rows_describe_every_spec_for_listing():
    table = rows()
    assert len(table) == len(REGISTRY) + 2  # the scratch-cnn and dense baselines
    assert [r["name"] for r in table[-2:]] == ["scratch-cnn", "dense"]
    assert list(table[0]) == ["name", "family", "canonical", "input_size", "min_size",
                              "preprocess", "feature_width", "params", "top1", "weights_file",
                              "constraints"]
    by_name = {r["name"]: r for r in table}
    assert by_name["MobileNet_0.25"]["weights_file"] == "mobilenet_2_5_224_tf_no_top.h5"
    assert by_name["NASNetLarge"]["weights_file"] == "nasnet_large_no_top.h5"
    assert sum(r["canonical"] for r in table) == 40


# --- extra rows ($BENCH_EXTRA_BACKBONES) --------------------------------------------------

EXTRA_MODULE = '''
from backbones import BackboneSpec

BACKBONES = [
    BackboneSpec(name="Extra_tiny", constructor_name="MobileNet", family="mobilenet",
                 input_size=224, min_size=32, preprocess_mode="tf", feature_width=256,
                 params=218_544, top1=None, kwargs={"alpha": 0.25}),
]
'''


@pytest.fixture
def extra_module(tmp_path, monkeypatch):
    """A module of extra rows on sys.path, named in $BENCH_EXTRA_BACKBONES."""

    def write(name: str, text: str = EXTRA_MODULE) -> None:
        (tmp_path / f"{name}.py").write_text(text)
        monkeypatch.setenv("BENCH_EXTRA_BACKBONES", f" {name} ,")

    monkeypatch.syspath_prepend(str(tmp_path))
    return write


def test_extra_rows_are_loaded_on_request_once_and_never_canonical(extra_module):
    extra_module("bench_extra_rows")
    with pytest.raises(UnknownBackboneError):
        get("Extra_tiny")  # nothing is loaded until asked
    (loaded,) = load_extras()
    assert load_extras() == (loaded,)  # a module is loaded once
    assert get("extra_TINY") is loaded and not loaded.canonical
    assert loaded.kind == "backbone" and loaded.kwargs == {"alpha": 0.25}
    assert [s.name for s in select(["extra_*"])] == ["Extra_tiny"]
    assert [r["name"] for r in rows()].count("Extra_tiny") == 1
    assert rows()[-3]["name"] == "Extra_tiny"  # after the table, before the baselines
    assert loaded not in canonical() and loaded not in REGISTRY


def test_an_extra_row_may_not_take_a_registry_name(extra_module):
    extra_module("bench_extra_clash", EXTRA_MODULE.replace("Extra_tiny", "densenet121"))
    with pytest.raises(ValueError, match="'densenet121', a name the registry already has"):
        load_extras()
    assert get("DenseNet121").family == "densenet"
