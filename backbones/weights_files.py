"""Keras' own names for the no-top ImageNet weights files, family by family.

Transcribed from each keras.applications module's ``file_utils.get_file`` call;
tests/test_registry.py holds them equal to what Keras asks for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _mobilenet_alpha_text(alpha: float) -> str:
    # mobilenet.py maps any alpha it does not know to "2_5"; so do we.
    return {1.0: "1_0", 0.75: "7_5", 0.5: "5_0"}.get(alpha, "2_5")


def no_top_file(family: str, constructor_name: str, kwargs: Mapping[str, Any], side: int) -> str:
    """The file name as the module's source spells it (``side``: the file's resolution)."""
    lower = constructor_name.lower()
    alpha = kwargs.get("alpha", 1.0)
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
        return f"mobilenet_{_mobilenet_alpha_text(alpha)}_{side}_tf_no_top.h5"
    if family == "mobilenet_v2":
        return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{side}_no_top.h5"
    if family == "mobilenet_v3":
        model_type = lower.removeprefix("mobilenetv3")  # "small" | "large"
        minimalistic = "_minimalistic" if kwargs.get("minimalistic") else ""
        return f"weights_mobilenet_v3_{model_type}{minimalistic}_224_{alpha}_float_no_top_v2.h5"
    if family == "nasnet":
        return f"nasnet_{lower.removeprefix('nasnet')}_no_top.h5"
    raise ValueError(f"No weights file rule for family '{family}'")
