"""The backbone registry: every keras.applications constructor plus MobileNet width variants,
and the from-scratch baselines of the previous episode."""

from backbones.baselines import BASELINES, BaselineSpec
from backbones.registry import (
    REGISTRY,
    UnknownBackboneError,
    baselines,
    canonical,
    get,
    load_extras,
    rows,
    select,
)
from backbones.spec import BackboneSpec, Spec

__all__ = [
    "BASELINES",
    "BaselineSpec",
    "baselines",
    "REGISTRY",
    "BackboneSpec",
    "Spec",
    "UnknownBackboneError",
    "canonical",
    "get",
    "load_extras",
    "rows",
    "select",
]
