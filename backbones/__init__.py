"""The backbone registry: every keras.applications constructor plus MobileNet width variants."""

from backbones.registry import (
    REGISTRY,
    BackboneSpec,
    UnknownBackboneError,
    canonical,
    get,
    rows,
    select,
)

__all__ = [
    "REGISTRY",
    "BackboneSpec",
    "UnknownBackboneError",
    "canonical",
    "get",
    "rows",
    "select",
]
