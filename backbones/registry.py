"""Every keras.applications backbone as one row of a declarative table.

The table holds facts: where each number comes from is said once, here, rather than per row.

- ``input_size``: the side the ImageNet weights were trained at (the constructors'
  ``default_size``; MobileNet/V2 variants use their 224 checkpoints' side).
- ``min_size``: the ``min_size`` each module passes to ``imagenet_utils.obtain_input_shape``
  (MobileNetV3 checks 32 itself); every row builds at exactly that size, and one pixel less
  is refused by Keras (tests/test_registry.py builds all of them).
- ``feature_width`` / ``params``: measured with ``include_top=False, weights=None,
  pooling="max"`` at ``min_size`` under Keras 3.15.1 (neither depends on the input size).
- ``top1``: ImageNet top-1 (%) from the keras.io/api/applications table; MobileNetV3 and
  the MobileNet/V2/V3 width variants from the ImageNet tables in those modules' docstrings
  (224 px rows); ``None`` where Keras publishes none (ConvNeXt).
- weights file names and URLs: transcribed from each module's ``file_utils.get_file`` call.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras

from backbones.baselines import BASELINES, BaselineSpec

_GCS = "https://storage.googleapis.com/tensorflow/keras-applications/"

# Where each family's files live; resnet_v2 shares resnet's folder, and EfficientNet (v1)
# is the one family outside the tensorflow/ bucket prefix.
_WEIGHTS_BASE: dict[str, str] = {
    "convnext": _GCS + "convnext/",
    "densenet": _GCS + "densenet/",
    "efficientnet": "https://storage.googleapis.com/keras-applications/",
    "efficientnet_v2": _GCS + "efficientnet_v2/",
    "inception_resnet_v2": _GCS + "inception_resnet_v2/",
    "inception_v3": _GCS + "inception_v3/",
    "mobilenet": _GCS + "mobilenet/",
    "mobilenet_v2": _GCS + "mobilenet_v2/",
    "mobilenet_v3": _GCS + "mobilenet_v3/",
    "nasnet": _GCS + "nasnet/",
    "resnet": _GCS + "resnet/",
    "resnet_v2": _GCS + "resnet/",
    "vgg16": _GCS + "vgg16/",
    "vgg19": _GCS + "vgg19/",
    "xception": _GCS + "xception/",
}

# NASNet is the one family that caches its file under a different name than it downloads.
_NASNET_URL_NAME = {
    "nasnet_mobile_no_top.h5": "NASNet-mobile-no-top.h5",
    "nasnet_large_no_top.h5": "NASNet-large-no-top.h5",
}


class UnknownBackboneError(ValueError):
    """A name or glob that matches no registry row; the message is one line."""


class FrozenKwargs(Mapping[str, Any]):
    """A read-only, hashable, picklable mapping of constructor keyword arguments.

    ``types.MappingProxyType`` is neither hashable nor picklable, which would break the
    frozen dataclass's ``__hash__`` as well as ``copy.deepcopy``/``dataclasses.asdict``.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, Any] | None = None) -> None:
        object.__setattr__(self, "_items", tuple(sorted(dict(items or {}).items())))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("FrozenKwargs is read-only")

    def __getitem__(self, key: str) -> Any:
        for k, v in self._items:
            if k == key:
                return v
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self._items) == dict(other)
        return NotImplemented

    def __reduce__(self):
        return (FrozenKwargs, (dict(self._items),))

    def __repr__(self) -> str:
        return f"FrozenKwargs({dict(self._items)!r})"


@dataclass(frozen=True)
class BackboneSpec:
    """One keras.applications backbone (or width variant) and the facts a sweep needs."""

    name: str  # keras.applications name verbatim, or Name_<alpha> / Name_minimalistic
    constructor_name: str  # attribute of keras.applications
    family: str  # its keras.applications module ("densenet", "resnet_v2", ...)
    input_size: int  # side the ImageNet weights were trained at
    min_size: int  # smallest input side Keras accepts
    preprocess_mode: str  # "caffe" | "tf" | "torch" | "in-graph"
    feature_width: int  # channels of the pooled no-top output
    params: int  # parameters of the no-top backbone
    top1: float | None  # ImageNet top-1 (%) as Keras publishes it
    kwargs: Mapping[str, Any] = field(default_factory=FrozenKwargs)
    canonical: bool = True  # one of the keras.applications constructors (what --all runs)
    weight_sizes: tuple[int, ...] | None = None  # sides with their own no-top file
    static_shape: bool = False  # NASNet needs a static input shape
    constraints: str = ""
    kind: str = "backbone"  # a frozen pretrained feature extractor; baselines say "baseline"
    # A custom constructor taking keras.applications' arguments, for rows added through
    # $BENCH_EXTRA_BACKBONES; None means keras.applications.<constructor_name>.
    factory: Callable[..., keras.Model] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        # Accept a plain dict from callers but never keep a mutable one.
        if not isinstance(self.kwargs, FrozenKwargs):
            object.__setattr__(self, "kwargs", FrozenKwargs(self.kwargs))

    @property
    def constructor(self) -> Callable[..., keras.Model]:
        """The keras.applications constructor (or the row's own factory)."""
        if self.factory is not None:
            return self.factory
        import keras  # only when a model is built: listing and selecting stay TensorFlow-free

        return getattr(keras.applications, self.constructor_name)

    @property
    def preprocess_input(self) -> Callable:
        """The family's ``preprocess_input`` (identity for in-graph families)."""
        import keras

        return getattr(keras.applications, self.family).preprocess_input

    def weights_side(self, size: int) -> int:
        """The side whose ImageNet file Keras loads for an input of ``size``."""
        if self.weight_sizes is None:
            return self.input_size
        # MobileNet/V2 fall back to their 224 file for any side they have no file for.
        return size if size in self.weight_sizes else 224

    def weights_file(self, size: int) -> str:
        """Keras' own file name for the include_top=False ImageNet weights at ``size``."""
        return _weights_file(self, self.weights_side(size))

    def weights_candidates(self, size: int) -> list[str]:
        """File names to look for in a local weights folder, best first.

        Per-resolution families list every resolution by distance from ``size`` (ties:
        the larger side first), so the exact file comes first when there is one.
        """
        if self.weight_sizes is None:
            return [self.weights_file(size)]
        ordered = sorted(self.weight_sizes, key=lambda s: (abs(s - size), -s))
        return [_weights_file(self, s) for s in ordered]

    def weights_url(self, size: int) -> str:
        """The URL Keras downloads ``weights_file(size)`` from."""
        file_name = self.weights_file(size)
        return _WEIGHTS_BASE[self.family] + _NASNET_URL_NAME.get(file_name, file_name)

    def build(self, size: int, pooling: str | None = "max",
              weights: str | None = None) -> keras.Model:
        """The no-top backbone at ``size`` x ``size``; ``weights`` goes to Keras verbatim."""
        if size < self.min_size:
            raise ValueError(f"{self.name} needs an input of at least {self.min_size}x"
                             f"{self.min_size}; received {size}x{size}")
        return self.constructor(include_top=False, weights=weights, input_shape=(size, size, 3),
                                pooling=pooling, **self.kwargs)


def _mobilenet_alpha_text(alpha: float) -> str:
    # mobilenet.py maps any alpha it does not know to "2_5"; so do we.
    return {1.0: "1_0", 0.75: "7_5", 0.5: "5_0"}.get(alpha, "2_5")


def _weights_file(spec: BackboneSpec, rows: int) -> str:
    """The no-top file name as each module's source spells it (``rows``: the file's side)."""
    family, lower = spec.family, spec.constructor_name.lower()
    alpha = spec.kwargs.get("alpha", 1.0)
    if family == "convnext":  # convnext_tiny_notop.h5
        return f"convnext_{lower.removeprefix('convnext')}_notop.h5"
    if family in ("densenet", "resnet", "resnet_v2"):
        return f"{lower}_weights_tf_dim_ordering_tf_kernels_notop.h5"
    if family == "efficientnet":  # efficientnetb0_notop.h5
        return f"{lower}_notop.h5"
    if family == "efficientnet_v2":  # efficientnetv2-b0_notop.h5, efficientnetv2-s_notop.h5
        return f"efficientnetv2-{lower.removeprefix('efficientnetv2')}_notop.h5"
    if family in ("inception_resnet_v2", "inception_v3", "vgg16", "vgg19", "xception"):
        return f"{family}_weights_tf_dim_ordering_tf_kernels_notop.h5"
    if family == "mobilenet":
        return f"mobilenet_{_mobilenet_alpha_text(alpha)}_{rows}_tf_no_top.h5"
    if family == "mobilenet_v2":
        return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"
    if family == "mobilenet_v3":
        model_type = lower.removeprefix("mobilenetv3")  # "small" | "large"
        minimalistic = "_minimalistic" if spec.kwargs.get("minimalistic") else ""
        return f"weights_mobilenet_v3_{model_type}{minimalistic}_224_{alpha}_float_no_top_v2.h5"
    if family == "nasnet":
        return f"nasnet_{lower.removeprefix('nasnet')}_no_top.h5"
    raise ValueError(f"No weights file rule for family '{family}'")


_MN = (128, 160, 192, 224)  # MobileNet: one ImageNet file per side
_MN2 = (96, 128, 160, 192, 224)  # MobileNetV2
_PER_SIDE = "ImageNet weights only for {} (others use 224's)"
_MN_NOTE = _PER_SIDE.format("128/160/192/224")
_MN2_NOTE = _PER_SIDE.format("96/128/160/192/224")
_V3_NOTE = "one ImageNet file (trained at 224) for every size"
_NASNET_NOTE = "static input shape required to load ImageNet weights"


def _row(name: str, family: str, input_size: int, min_size: int, preprocess: str,
         width: int, params: int, top1: float | None, *, constructor: str | None = None,
         canonical: bool = True, weight_sizes: tuple[int, ...] | None = None,
         static_shape: bool = False, constraints: str = "", **kwargs: Any) -> BackboneSpec:
    """One table row; ``kwargs`` are the constructor's extra keyword arguments."""
    return BackboneSpec(
        name=name, constructor_name=constructor or name, family=family, input_size=input_size,
        min_size=min_size, preprocess_mode=preprocess, feature_width=width, params=params,
        top1=top1, kwargs=FrozenKwargs(kwargs), canonical=canonical, weight_sizes=weight_sizes,
        static_shape=static_shape, constraints=constraints,
    )


def _variant(name: str, constructor: str, family: str, preprocess: str, width: int,
             params: int, top1: float | None, *, weight_sizes: tuple[int, ...] | None = None,
             constraints: str = "", **kwargs: Any) -> BackboneSpec:
    """A width variant: a 224 px checkpoint of ``constructor`` built with ``kwargs``."""
    return _row(name, family, 224, 32, preprocess, width, params, top1, constructor=constructor,
                canonical=False, weight_sizes=weight_sizes, constraints=constraints, **kwargs)


# fmt: off
REGISTRY: tuple[BackboneSpec, ...] = (
    # name                  family                 in   min  preprocess  width  params  top1
    _row("ConvNeXtTiny",      "convnext",           224, 32, "in-graph",  768,  27_820_128, None),
    _row("ConvNeXtSmall",     "convnext",           224, 32, "in-graph",  768,  49_454_688, None),
    _row("ConvNeXtBase",      "convnext",           224, 32, "in-graph", 1024,  87_566_464, None),
    _row("ConvNeXtLarge",     "convnext",           224, 32, "in-graph", 1536, 196_230_336, None),
    _row("ConvNeXtXLarge",    "convnext",           224, 32, "in-graph", 2048, 348_147_968, None),
    _row("DenseNet121",       "densenet",           224, 32, "torch",    1024,   7_037_504, 75.0),
    _row("DenseNet169",       "densenet",           224, 32, "torch",    1664,  12_642_880, 76.2),
    _row("DenseNet201",       "densenet",           224, 32, "torch",    1920,  18_321_984, 77.3),
    _row("EfficientNetB0",    "efficientnet",       224, 32, "in-graph", 1280,   4_049_571, 77.1),
    _row("EfficientNetB1",    "efficientnet",       240, 32, "in-graph", 1280,   6_575_239, 79.1),
    _row("EfficientNetB2",    "efficientnet",       260, 32, "in-graph", 1408,   7_768_569, 80.1),
    _row("EfficientNetB3",    "efficientnet",       300, 32, "in-graph", 1536,  10_783_535, 81.6),
    _row("EfficientNetB4",    "efficientnet",       380, 32, "in-graph", 1792,  17_673_823, 82.9),
    _row("EfficientNetB5",    "efficientnet",       456, 32, "in-graph", 2048,  28_513_527, 83.6),
    _row("EfficientNetB6",    "efficientnet",       528, 32, "in-graph", 2304,  40_960_143, 84.0),
    _row("EfficientNetB7",    "efficientnet",       600, 32, "in-graph", 2560,  64_097_687, 84.3),
    _row("EfficientNetV2B0",  "efficientnet_v2",    224, 32, "in-graph", 1280,   5_919_312, 78.7),
    _row("EfficientNetV2B1",  "efficientnet_v2",    240, 32, "in-graph", 1280,   6_931_124, 79.8),
    _row("EfficientNetV2B2",  "efficientnet_v2",    260, 32, "in-graph", 1408,   8_769_374, 80.5),
    _row("EfficientNetV2B3",  "efficientnet_v2",    300, 32, "in-graph", 1536,  12_930_622, 82.0),
    _row("EfficientNetV2S",   "efficientnet_v2",    384, 32, "in-graph", 1280,  20_331_360, 83.9),
    _row("EfficientNetV2M",   "efficientnet_v2",    480, 32, "in-graph", 1280,  53_150_388, 85.3),
    _row("EfficientNetV2L",   "efficientnet_v2",    480, 32, "in-graph", 1280, 117_746_848, 85.7),
    _row("InceptionResNetV2", "inception_resnet_v2", 299, 75, "tf",      1536,  54_336_736, 80.3),
    _row("InceptionV3",       "inception_v3",       299, 75, "tf",       2048,  21_802_784, 77.9),
    _row("MobileNet",         "mobilenet",          224, 32, "tf",       1024,   3_228_864, 70.4,
         weight_sizes=_MN, constraints=_MN_NOTE),
    _row("MobileNetV2",       "mobilenet_v2",       224, 32, "tf",       1280,   2_257_984, 71.3,
         weight_sizes=_MN2, constraints=_MN2_NOTE),
    _row("MobileNetV3Small",  "mobilenet_v3",       224, 32, "in-graph",  576,     939_120, 68.1,
         constraints=_V3_NOTE),
    _row("MobileNetV3Large",  "mobilenet_v3",       224, 32, "in-graph",  960,   2_996_352, 75.6,
         constraints=_V3_NOTE),
    _row("NASNetMobile",      "nasnet",             224, 32, "tf",       1056,   4_269_716, 74.4,
         static_shape=True, constraints=_NASNET_NOTE + "; not on the torch backend"),
    _row("NASNetLarge",       "nasnet",             331, 32, "tf",       4032,  84_916_818, 82.5,
         static_shape=True, constraints=_NASNET_NOTE),
    _row("ResNet50",          "resnet",             224, 32, "caffe",    2048,  23_587_712, 74.9),
    _row("ResNet101",         "resnet",             224, 32, "caffe",    2048,  42_658_176, 76.4),
    _row("ResNet152",         "resnet",             224, 32, "caffe",    2048,  58_370_944, 76.6),
    _row("ResNet50V2",        "resnet_v2",          224, 32, "tf",       2048,  23_564_800, 76.0),
    _row("ResNet101V2",       "resnet_v2",          224, 32, "tf",       2048,  42_626_560, 77.2),
    _row("ResNet152V2",       "resnet_v2",          224, 32, "tf",       2048,  58_331_648, 78.0),
    _row("VGG16",             "vgg16",              224, 32, "caffe",     512,  14_714_688, 71.3),
    _row("VGG19",             "vgg19",              224, 32, "caffe",     512,  20_024_384, 71.3),
    _row("Xception",          "xception",           299, 71, "tf",       2048,  20_861_480, 79.0),
    # width variants (canonical=False): all 224 px checkpoints, min side 32
    # name                      constructor         family          preprocess width params top1
    _variant("MobileNet_0.25",   "MobileNet",   "mobilenet",    "tf",        256,   218_544, 50.6,
             alpha=0.25, weight_sizes=_MN, constraints=_MN_NOTE),
    _variant("MobileNet_0.5",    "MobileNet",   "mobilenet",    "tf",        512,   829_536, 63.7,
             alpha=0.5, weight_sizes=_MN, constraints=_MN_NOTE),
    _variant("MobileNet_0.75",   "MobileNet",   "mobilenet",    "tf",        768, 1_832_976, 68.4,
             alpha=0.75, weight_sizes=_MN, constraints=_MN_NOTE),
    _variant("MobileNetV2_0.35", "MobileNetV2", "mobilenet_v2", "tf",       1280,   410_208, 60.3,
             alpha=0.35, weight_sizes=_MN2, constraints=_MN2_NOTE),
    _variant("MobileNetV2_0.5",  "MobileNetV2", "mobilenet_v2", "tf",       1280,   706_224, 65.4,
             alpha=0.5, weight_sizes=_MN2, constraints=_MN2_NOTE),
    _variant("MobileNetV2_0.75", "MobileNetV2", "mobilenet_v2", "tf",       1280, 1_382_064, 69.8,
             alpha=0.75, weight_sizes=_MN2, constraints=_MN2_NOTE),
    _variant("MobileNetV2_1.3",  "MobileNetV2", "mobilenet_v2", "tf",       1664, 3_766_048, 74.4,
             alpha=1.3, weight_sizes=_MN2, constraints=_MN2_NOTE),
    _variant("MobileNetV2_1.4",  "MobileNetV2", "mobilenet_v2", "tf",       1792, 4_363_712, 75.0,
             alpha=1.4, weight_sizes=_MN2, constraints=_MN2_NOTE),
    _variant("MobileNetV3Small_0.75", "MobileNetV3Small", "mobilenet_v3", "in-graph",
             432, 583_160, 65.4, alpha=0.75, constraints=_V3_NOTE),
    _variant("MobileNetV3Large_0.75", "MobileNetV3Large", "mobilenet_v3", "in-graph",
             720, 1_808_736, 73.3, alpha=0.75, constraints=_V3_NOTE),
    _variant("MobileNetV3Small_minimalistic", "MobileNetV3Small", "mobilenet_v3", "in-graph",
             576, 441_000, 61.9, minimalistic=True, constraints=_V3_NOTE),
    _variant("MobileNetV3Large_minimalistic", "MobileNetV3Large", "mobilenet_v3", "in-graph",
             960, 1_437_608, 72.3, minimalistic=True, constraints=_V3_NOTE),
)
# fmt: on

EXTRA_ENV = "BENCH_EXTRA_BACKBONES"


def _extra_rows() -> tuple[BackboneSpec, ...]:
    """Rows from the modules named in $BENCH_EXTRA_BACKBONES (comma-separated), each exposing
    BACKBONES: a sequence of BackboneSpec with a `factory`. They are never part of --all.

    An environment variable rather than a call, so child processes of an isolated sweep see
    the same registry as their parent.
    """
    extra: list[BackboneSpec] = []
    for module_name in filter(None, (m.strip() for m in os.environ.get(EXTRA_ENV, "").split(","))):
        module = importlib.import_module(module_name)
        extra.extend(replace(spec, canonical=False) for spec in module.BACKBONES)
    return tuple(extra)


REGISTRY = REGISTRY + _extra_rows()
_SELECTABLE: tuple[BackboneSpec | BaselineSpec, ...] = REGISTRY + BASELINES
_BY_LOWER: dict[str, BackboneSpec | BaselineSpec] = {s.name.lower(): s for s in _SELECTABLE}
assert len(_BY_LOWER) == len(_SELECTABLE), "registry names must be unique, case-insensitively"

_LIST_HINT = "See: python -m bench --list"


def canonical() -> list[BackboneSpec]:
    """The keras.applications constructors themselves, in registry order (what --all runs)."""
    return [spec for spec in REGISTRY if spec.canonical]


def baselines() -> list[BaselineSpec]:
    """The from-scratch models of the previous episode (--all runs them after the backbones)."""
    return list(BASELINES)


def _did_you_mean(text: str) -> str:
    close = difflib.get_close_matches(text.lower(), list(_BY_LOWER), n=3)
    names = [_BY_LOWER[c].name for c in close]
    if not names:
        return ""
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    return f" Did you mean {listed}?"


def _unknown(text: str, what: str = "Unknown backbone") -> UnknownBackboneError:
    return UnknownBackboneError(f"{what} '{text}'.{_did_you_mean(text)} {_LIST_HINT}")


def get(name: str) -> BackboneSpec | BaselineSpec:
    """The row named ``name`` (case-insensitive); raises UnknownBackboneError."""
    spec = _BY_LOWER.get(name.strip().lower())
    if spec is None:
        raise _unknown(name.strip())
    return spec


def _is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def select(patterns: Sequence[str]) -> list[BackboneSpec | BaselineSpec]:
    """Rows for names and globs (case-insensitive), de-duplicated, in first-matched order.

    Globs match every row, canonical or variant, and expand in registry order.
    """
    if isinstance(patterns, str):  # a lone string would otherwise iterate per character
        patterns = [patterns]
    chosen: dict[str, BackboneSpec | BaselineSpec] = {}
    for raw in patterns:
        pattern = raw.strip()
        if _is_glob(pattern):
            matched = [s for s in _SELECTABLE
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
        for spec in REGISTRY
    ] + [
        {"name": b.name, "family": b.family, "canonical": b.canonical, "input_size": None,
         "min_size": None, "preprocess": "pixels/255", "feature_width": None, "params": None,
         "top1": None, "weights_file": None, "constraints": b.description}
        for b in BASELINES
    ]
