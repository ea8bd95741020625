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


# Where Keras downloads each family's files from: the base URL its module joins the file name to.
_ORIGIN_BASE = {
    "efficientnet": "https://storage.googleapis.com/keras-applications/",
    **{family: f"https://storage.googleapis.com/tensorflow/keras-applications/{folder}/"
       for family, folder in (
           ("convnext", "convnext"), ("densenet", "densenet"),
           ("efficientnet_v2", "efficientnet_v2"), ("inception_resnet_v2", "inception_resnet_v2"),
           ("inception_v3", "inception_v3"), ("mobilenet", "mobilenet"),
           ("mobilenet_v2", "mobilenet_v2"), ("mobilenet_v3", "mobilenet_v3"),
           ("nasnet", "nasnet"), ("resnet", "resnet"), ("resnet_v2", "resnet"),
           ("vgg16", "vgg16"), ("vgg19", "vgg19"), ("xception", "xception"))},
}
# nasnet.py downloads these under another name than the one it saves them as
_REMOTE_NAMES = {"nasnet_mobile_no_top.h5": "NASNet-mobile-no-top.h5",
                 "nasnet_large_no_top.h5": "NASNet-large-no-top.h5"}

# The file_hash each module passes to get_file with the no-top file: md5 (32 hex digits) or
# sha256 (64), which get_file tells apart by length, as does file_hash_algorithm below.
# MobileNet and MobileNetV2 publish none.
NO_TOP_HASHES = {
    "convnext_tiny_notop.h5":
        "d547c096cabd03329d7be5562c5e14798aa39ed24b474157cef5e85ab9e49ef1",
    "convnext_small_notop.h5":
        "6fc8009faa2f00c1c1dfce59feea9b0745eb260a7dd11bee65c8e20843da6eab",
    "convnext_base_notop.h5":
        "40a20c5548a5e9202f69735ecc06c990e6b7c9d2de39f0361e27baeb24cb7c45",
    "convnext_large_notop.h5":
        "96f02b6f0753d4f543261bc9d09bed650f24dd6bc02ddde3066135b63d23a1cd",
    "convnext_xlarge_notop.h5":
        "de3f8a54174130e0cecdc71583354753d557fcf1f4487331558e2a16ba0cfe05",
    "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5": "30ee3e1110167f948a6b9946edeeb738",
    "densenet169_weights_tf_dim_ordering_tf_kernels_notop.h5": "b8c4d4c20dd625c148057b9ff1c1176b",
    "densenet201_weights_tf_dim_ordering_tf_kernels_notop.h5": "c13680b51ded0fb44dff2d8f86ac8bb1",
    "efficientnetb0_notop.h5": "50bc09e76180e00e4465e1a485ddc09d",
    "efficientnetb1_notop.h5": "74c4e6b3e1f6a1eea24c589628592432",
    "efficientnetb2_notop.h5": "111f8e2ac8aa800a7a99e3239f7bfb39",
    "efficientnetb3_notop.h5": "af6d107764bb5b1abb91932881670226",
    "efficientnetb4_notop.h5": "ebc24e6d6c33eaebbd558eafbeedf1ba",
    "efficientnetb5_notop.h5": "38879255a25d3c92d5e44e04ae6cec6f",
    "efficientnetb6_notop.h5": "9ecce42647a20130c1f39a5d4cb75743",
    "efficientnetb7_notop.h5": "cbcfe4450ddf6f3ad90b1b398090fe4a",
    "efficientnetv2-b0_notop.h5": "893217f2bb855e2983157299931e43ff",
    "efficientnetv2-b1_notop.h5": "0e80663031ca32d657f9caa404b6ec37",
    "efficientnetv2-b2_notop.h5": "1dfe2e7a5d45b6632553a8961ea609eb",
    "efficientnetv2-b3_notop.h5": "f6abf7b5849ac99a89b50dd3fd532856",
    "efficientnetv2-s_notop.h5": "af0682fb74e8c54910f2d4393339c070",
    "efficientnetv2-m_notop.h5": "1b8dc055df72dde80d614482840fe342",
    "efficientnetv2-l_notop.h5": "b0b66b5c863aef5b46e8608fe1711615",
    "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5":
        "d19885ff4a710c122648d3b5c3b684e4",
    "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5": "bcbd6486424b2319ff4ef7d526e38f63",
    "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5": "d3e8ec802a04aa4fc771ee12a9a9b836",
    "weights_mobilenet_v3_small_224_0.75_float_no_top_v2.h5": "ebdb5cc8e0b497cd13a7c275d475c819",
    "weights_mobilenet_v3_small_minimalistic_224_1.0_float_no_top_v2.h5":
        "cde8136e733e811080d9fcd8a252f7e4",
    "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5": "07fb09a5933dd0c8eaafa16978110389",
    "weights_mobilenet_v3_large_224_0.75_float_no_top_v2.h5": "40af19a13ebea4e2ee0c676887f69a2e",
    "weights_mobilenet_v3_large_minimalistic_224_1.0_float_no_top_v2.h5":
        "ec5221f64a2f6d1ef965a614bdae7973",
    "nasnet_mobile_no_top.h5": "1ed92395b5b598bdda52abe5c0dbfd63",
    "nasnet_large_no_top.h5": "d81d89dc07e6e56530c4e77faddd61b5",
    "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5": "4d473c1dd8becc155b73f8504c6f6626",
    "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5": "88cf7a10940856eca736dc7b7e228a21",
    "resnet152_weights_tf_dim_ordering_tf_kernels_notop.h5": "ee4c566cf9a93f14d82f913c2dc6dd0c",
    "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5": "fac2f116257151a9d068a22e544a4917",
    "resnet101v2_weights_tf_dim_ordering_tf_kernels_notop.h5": "c0ed64b8031c3730f411d2eb4eea35b5",
    "resnet152v2_weights_tf_dim_ordering_tf_kernels_notop.h5": "ed17cf2e0169df9d443503ef94b23b33",
    "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5": "6d6bbae143d832006294945121d1f1fc",
    "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5": "253f8cb515780f3b799900260a226db6",
    "xception_weights_tf_dim_ordering_tf_kernels_notop.h5": "b0042744bf5b25fce3cb969f33bebb97",
}


def no_top_origin(family: str, file_name: str) -> str | None:
    """The URL Keras downloads `file_name` from; None for a family it does not know."""
    base = _ORIGIN_BASE.get(family)
    return base + _REMOTE_NAMES.get(file_name, file_name) if base else None


def no_top_hash(file_name: str) -> str | None:
    """The hash Keras checks `file_name` against (see file_hash_algorithm); None if it has none."""
    return NO_TOP_HASHES.get(file_name)


def file_hash_algorithm(file_hash: str) -> str:
    """"sha256" or "md5", as keras.utils.get_file tells them apart: by the hash's length."""
    return "sha256" if len(file_hash) == 64 else "md5"
