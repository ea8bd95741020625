"""Every keras.applications backbone as one row of a declarative table.

The table holds facts: where each number comes from is said once, here, rather than per row.

- ``input_size``: the side the ImageNet weights were trained at (the constructors'
  ``default_size``; MobileNet/V2 variants use their 224 checkpoints' side).
- ``min_size``: the ``min_size`` each module passes to ``imagenet_utils.obtain_input_shape``
  (MobileNetV3 checks 32 itself); every row builds at exactly that size, and one pixel less
  is refused by Keras (tests/test_registry.py builds all of them).
- ``width`` / ``params``: measured with ``include_top=False, weights=None,
  pooling="max"`` at ``min_size`` under Keras 3.15.1 (neither depends on the input size).
- ``top1``: ImageNet top-1 (%) from the "Available models" table of keras.io/api/applications
  (ConvNeXt included: Keras' own figures for its weights, which for Base, Large and XLarge were
  pre-trained on ImageNet-21k before ImageNet-1k, so they sit above the paper's 1k-only ones);
  MobileNetV3 and the MobileNet/V2/V3 width variants from the ImageNet tables in those modules'
  docstrings (224 px rows).
- ``min_size``, preprocessing, weights sides and constraints are facts of a family: one
  small table each, beside the rows.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from backbones.baselines import BASELINES, BaselineSpec
from backbones.spec import BackboneSpec, FrozenKwargs, Spec


class UnknownBackboneError(ValueError):
    """A name or glob that matches no registry row; the message is one line."""


# What each family's preprocess_input does (imagenet_utils modes; "in-graph": the model
# rescales its own 0-255 input).
_PREPROCESS: dict[str, str] = {
    "convnext": "in-graph", "densenet": "torch", "efficientnet": "in-graph",
    "efficientnet_v2": "in-graph", "inception_resnet_v2": "tf", "inception_v3": "tf",
    "mobilenet": "tf", "mobilenet_v2": "tf", "mobilenet_v3": "in-graph", "nasnet": "tf",
    "resnet": "caffe", "resnet_v2": "tf", "vgg16": "caffe", "vgg19": "caffe", "xception": "tf",
}
# The smallest side each family's module accepts; 32 for the others.
_MIN_SIZE: dict[str, int] = {"inception_resnet_v2": 75, "inception_v3": 75, "xception": 71}
# Families with one ImageNet file per input side; every other family has one file.
_WEIGHT_SIZES: dict[str, tuple[int, ...]] = {
    "mobilenet": (128, 160, 192, 224),
    "mobilenet_v2": (96, 128, 160, 192, 224),
}
_PER_SIDE = "ImageNet weights only for {} (others use 224's)"
_NASNET_NOTE = "static input shape required to load ImageNet weights"
_CONSTRAINTS: dict[str, str] = {
    "mobilenet": _PER_SIDE.format("128/160/192/224"),
    "mobilenet_v2": _PER_SIDE.format("96/128/160/192/224"),
    "mobilenet_v3": "one ImageNet file (trained at 224) for every size",
    "nasnet": _NASNET_NOTE,
}


def _row(name: str, family: str, *, input_size: int, width: int, params: int,
         top1: float | None, constraints: str | None = None) -> BackboneSpec:
    """One keras.applications constructor, its family's facts filled in."""
    if constraints is None:
        constraints = _CONSTRAINTS.get(family, "")
    return BackboneSpec(
        name=name, constructor_name=name, family=family, input_size=input_size,
        min_size=_MIN_SIZE.get(family, 32), preprocess_mode=_PREPROCESS[family],
        feature_width=width, params=params, top1=top1, weight_sizes=_WEIGHT_SIZES.get(family),
        constraints=constraints,
    )


_CANONICAL: tuple[BackboneSpec, ...] = (
    _row("ConvNeXtTiny", "convnext", input_size=224,
         width=768, params=27_820_128, top1=81.3),
    _row("ConvNeXtSmall", "convnext", input_size=224,
         width=768, params=49_454_688, top1=82.3),
    _row("ConvNeXtBase", "convnext", input_size=224,
         width=1024, params=87_566_464, top1=85.3),
    _row("ConvNeXtLarge", "convnext", input_size=224,
         width=1536, params=196_230_336, top1=86.3),
    _row("ConvNeXtXLarge", "convnext", input_size=224,
         width=2048, params=348_147_968, top1=86.7),
    _row("DenseNet121", "densenet", input_size=224,
         width=1024, params=7_037_504, top1=75.0),
    _row("DenseNet169", "densenet", input_size=224,
         width=1664, params=12_642_880, top1=76.2),
    _row("DenseNet201", "densenet", input_size=224,
         width=1920, params=18_321_984, top1=77.3),
    _row("EfficientNetB0", "efficientnet", input_size=224,
         width=1280, params=4_049_571, top1=77.1),
    _row("EfficientNetB1", "efficientnet", input_size=240,
         width=1280, params=6_575_239, top1=79.1),
    _row("EfficientNetB2", "efficientnet", input_size=260,
         width=1408, params=7_768_569, top1=80.1),
    _row("EfficientNetB3", "efficientnet", input_size=300,
         width=1536, params=10_783_535, top1=81.6),
    _row("EfficientNetB4", "efficientnet", input_size=380,
         width=1792, params=17_673_823, top1=82.9),
    _row("EfficientNetB5", "efficientnet", input_size=456,
         width=2048, params=28_513_527, top1=83.6),
    _row("EfficientNetB6", "efficientnet", input_size=528,
         width=2304, params=40_960_143, top1=84.0),
    _row("EfficientNetB7", "efficientnet", input_size=600,
         width=2560, params=64_097_687, top1=84.3),
    _row("EfficientNetV2B0", "efficientnet_v2", input_size=224,
         width=1280, params=5_919_312, top1=78.7),
    _row("EfficientNetV2B1", "efficientnet_v2", input_size=240,
         width=1280, params=6_931_124, top1=79.8),
    _row("EfficientNetV2B2", "efficientnet_v2", input_size=260,
         width=1408, params=8_769_374, top1=80.5),
    _row("EfficientNetV2B3", "efficientnet_v2", input_size=300,
         width=1536, params=12_930_622, top1=82.0),
    _row("EfficientNetV2S", "efficientnet_v2", input_size=384,
         width=1280, params=20_331_360, top1=83.9),
    _row("EfficientNetV2M", "efficientnet_v2", input_size=480,
         width=1280, params=53_150_388, top1=85.3),
    _row("EfficientNetV2L", "efficientnet_v2", input_size=480,
         width=1280, params=117_746_848, top1=85.7),
    _row("InceptionResNetV2", "inception_resnet_v2", input_size=299,
         width=1536, params=54_336_736, top1=80.3),
    _row("InceptionV3", "inception_v3", input_size=299,
         width=2048, params=21_802_784, top1=77.9),
    _row("MobileNet", "mobilenet", input_size=224,
         width=1024, params=3_228_864, top1=70.4),
    _row("MobileNetV2", "mobilenet_v2", input_size=224,
         width=1280, params=2_257_984, top1=71.3),
    _row("MobileNetV3Small", "mobilenet_v3", input_size=224,
         width=576, params=939_120, top1=68.1),
    _row("MobileNetV3Large", "mobilenet_v3", input_size=224,
         width=960, params=2_996_352, top1=75.6),
    _row("NASNetMobile", "nasnet", input_size=224,
         width=1056, params=4_269_716, top1=74.4,
         constraints=_NASNET_NOTE + "; not on the torch backend"),
    _row("NASNetLarge", "nasnet", input_size=331,
         width=4032, params=84_916_818, top1=82.5),
    _row("ResNet50", "resnet", input_size=224,
         width=2048, params=23_587_712, top1=74.9),
    _row("ResNet101", "resnet", input_size=224,
         width=2048, params=42_658_176, top1=76.4),
    _row("ResNet152", "resnet", input_size=224,
         width=2048, params=58_370_944, top1=76.6),
    _row("ResNet50V2", "resnet_v2", input_size=224,
         width=2048, params=23_564_800, top1=76.0),
    _row("ResNet101V2", "resnet_v2", input_size=224,
         width=2048, params=42_626_560, top1=77.2),
    _row("ResNet152V2", "resnet_v2", input_size=224,
         width=2048, params=58_331_648, top1=78.0),
    _row("VGG16", "vgg16", input_size=224,
         width=512, params=14_714_688, top1=71.3),
    _row("VGG19", "vgg19", input_size=224,
         width=512, params=20_024_384, top1=71.3),
    _row("Xception", "xception", input_size=299,
         width=2048, params=20_861_480, top1=79.0),
)

_BY_CONSTRUCTOR = {spec.name: spec for spec in _CANONICAL}


def _variant(constructor: str, suffix: str, kwargs: Mapping[str, Any], *, width: int,
             params: int, top1: float | None) -> BackboneSpec:
    """``constructor``'s row built with ``kwargs`` (a 224 px checkpoint), named
    ``<constructor>_<suffix>``."""
    return replace(_BY_CONSTRUCTOR[constructor], name=f"{constructor}_{suffix}",
                   kwargs=FrozenKwargs(kwargs), feature_width=width, params=params, top1=top1,
                   canonical=False)


# The rows above, then the width variants (canonical=False: --all leaves them out).
REGISTRY: tuple[BackboneSpec, ...] = _CANONICAL + (
    _variant("MobileNet", "0.25", {"alpha": 0.25}, width=256, params=218_544, top1=50.6),
    _variant("MobileNet", "0.5", {"alpha": 0.5}, width=512, params=829_536, top1=63.7),
    _variant("MobileNet", "0.75", {"alpha": 0.75}, width=768, params=1_832_976, top1=68.4),
    _variant("MobileNetV2", "0.35", {"alpha": 0.35}, width=1280, params=410_208, top1=60.3),
    _variant("MobileNetV2", "0.5", {"alpha": 0.5}, width=1280, params=706_224, top1=65.4),
    _variant("MobileNetV2", "0.75", {"alpha": 0.75}, width=1280, params=1_382_064, top1=69.8),
    _variant("MobileNetV2", "1.3", {"alpha": 1.3}, width=1664, params=3_766_048, top1=74.4),
    _variant("MobileNetV2", "1.4", {"alpha": 1.4}, width=1792, params=4_363_712, top1=75.0),
    _variant("MobileNetV3Small", "0.75", {"alpha": 0.75}, width=432, params=583_160, top1=65.4),
    _variant("MobileNetV3Large", "0.75", {"alpha": 0.75}, width=720, params=1_808_736, top1=73.3),
    _variant("MobileNetV3Small", "minimalistic", {"minimalistic": True},
             width=576, params=441_000, top1=61.9),
    _variant("MobileNetV3Large", "minimalistic", {"minimalistic": True},
             width=960, params=1_437_608, top1=72.3),
)

EXTRA_ENV = "BENCH_EXTRA_BACKBONES"

# module name -> the rows it added; filled by load_extras(), read by every lookup below
EXTRAS: dict[str, tuple[BackboneSpec, ...]] = {}

_LIST_HINT = "See: python -m bench --list"


def load_extras() -> tuple[BackboneSpec, ...]:
    """Adds the rows of the modules named in $BENCH_EXTRA_BACKBONES (comma-separated), each
    exposing BACKBONES: a sequence of BackboneSpec with a `factory`; returns every extra row.

    Each module is imported once, however often this is called. Extra rows are never
    canonical (never part of --all). An environment variable rather than an argument, so the
    child processes and workers of a sweep load the same rows as their driver.
    """
    names = (m.strip() for m in os.environ.get(EXTRA_ENV, "").split(","))
    for module_name in filter(None, names):
        if module_name in EXTRAS:
            continue
        module = importlib.import_module(module_name)
        taken = set(_by_lower())
        for spec in module.BACKBONES:
            if spec.name.lower() in taken:
                raise ValueError(f"{EXTRA_ENV}: {module_name} adds '{spec.name}', a name the "
                                 f"registry already has (names are case-insensitive)")
            taken.add(spec.name.lower())
        EXTRAS[module_name] = tuple(replace(spec, canonical=False) for spec in module.BACKBONES)
    return _extra_rows()


def _extra_rows() -> tuple[BackboneSpec, ...]:
    return tuple(spec for specs in EXTRAS.values() for spec in specs)


def _backbones() -> tuple[BackboneSpec, ...]:
    return REGISTRY + _extra_rows()


def _selectable() -> tuple[Spec, ...]:
    return _backbones() + BASELINES


def _by_lower() -> dict[str, Spec]:
    return {spec.name.lower(): spec for spec in _selectable()}


def canonical() -> list[BackboneSpec]:
    """The keras.applications constructors themselves, in registry order (what --all runs)."""
    return [spec for spec in REGISTRY if spec.canonical]


def baselines() -> list[BaselineSpec]:
    """The from-scratch models of the previous episode (--all runs them after the backbones)."""
    return list(BASELINES)


def _did_you_mean(text: str) -> str:
    by_lower = _by_lower()
    close = difflib.get_close_matches(text.lower(), list(by_lower), n=3)
    names = [by_lower[c].name for c in close]
    if not names:
        return ""
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    return f" Did you mean {listed}?"


def _unknown(text: str, what: str = "Unknown backbone") -> UnknownBackboneError:
    return UnknownBackboneError(f"{what} '{text}'.{_did_you_mean(text)} {_LIST_HINT}")


def get(name: str) -> Spec:
    """The row named ``name`` (case-insensitive); raises UnknownBackboneError."""
    spec = _by_lower().get(name.strip().lower())
    if spec is None:
        raise _unknown(name.strip())
    return spec


def _is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def select(patterns: Sequence[str]) -> list[Spec]:
    """Rows for names and globs (case-insensitive), de-duplicated, in first-matched order.

    Globs match every row, canonical or variant, and expand in registry order.
    """
    if isinstance(patterns, str):  # a lone string would otherwise iterate per character
        patterns = [patterns]
    chosen: dict[str, Spec] = {}
    for raw in patterns:
        pattern = raw.strip()
        if _is_glob(pattern):
            matched = [s for s in _selectable()
                       if fnmatch.fnmatchcase(s.name.lower(), pattern.lower())]
            if not matched:
                raise _unknown(pattern, "No backbone matches")
        else:
            matched = [get(pattern)]
        for spec in matched:
            chosen.setdefault(spec.name, spec)
    return list(chosen.values())


def rows() -> list[dict]:
    """One plain dict per row, for printing ``--list``."""
    return [
        {
            "name": spec.name,
            "family": spec.family,
            "canonical": spec.canonical,
            "input_size": spec.input_size,
            "min_size": spec.min_size,
            "preprocess": spec.preprocess_mode,
            "feature_width": spec.feature_width,
            "params": spec.params,
            "top1": spec.top1,
            "weights_file": spec.weights_file(spec.input_size),
            "constraints": spec.constraints,
        }
        for spec in _backbones()
    ] + [
        {"name": b.name, "family": b.family, "canonical": b.canonical, "input_size": None,
         "min_size": None, "preprocess": "pixels/255", "feature_width": None, "params": None,
         "top1": None, "weights_file": None, "constraints": b.description}
        for b in BASELINES
    ]
