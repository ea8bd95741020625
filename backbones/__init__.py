"""The backbone registry: every keras.applications constructor plus MobileNet width variants,
and the from-scratch baselines of the previous episode."""

from backbones.baselines import BASELINES, BaselineSpec
from backbones.registry import (
    REGISTRY,
    BackboneSpec,
    UnknownBackboneError,
    baselines,
    canonical,
    get,
    rows,
    select,
)

__all__ = [
    "BASELINES",
    "BaselineSpec",
    "baselines",
    "REGISTRY",
    "BackboneSpec",
    "UnknownBackboneError",
    "canonical",
    "get",
    "rows",
    "select",
]
