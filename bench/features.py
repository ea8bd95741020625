"""The frozen backbone: its input pipeline, its weights, and the features it computes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from backbones import BackboneSpec
from bench.config import RunConfig


class WeightsError(RuntimeError):
    """Pretrained weights could not be had; the message names the file and how to supply it."""


@dataclass(frozen=True)
class ResolvedWeights:
    """What to hand the Keras constructor, and how a result row should describe it."""

    arg: str | None  # the constructor's `weights=`: None, "imagenet" or a file path
    label: str  # "imagenet", "random" or the path of the file loaded
    file_name: str | None  # Keras' own file name for these weights, when pretrained
    note: str | None = None  # e.g. that a nearby resolution's file stands in for the exact one


def resolve_weights(spec: BackboneSpec, size: int, config: RunConfig) -> ResolvedWeights:
    """Decides which weights a backbone is built with; never falls back to random silently."""
    if config.weights == "random":
        return ResolvedWeights(arg=None, label="random", file_name=None)
    if config.weights != "imagenet":
        path = Path(config.weights)
        if not path.is_file():
            raise WeightsError(f"Weights file '{path}' does not exist")
        return ResolvedWeights(arg=str(path), label=str(path), file_name=path.name)

    exact = spec.weights_file(size)
    if config.weights_dir:
        candidates = spec.weights_candidates(size)
        for candidate in candidates:
            path = Path(config.weights_dir) / candidate
            if path.is_file():
                note = None
                if candidate != candidates[0]:
                    note = (f"no '{candidates[0]}' in {config.weights_dir}: used '{candidate}', "
                            f"the nearest resolution found (convolutional weights load at any "
                            f"size)")
                elif candidate != exact:
                    note = (f"used '{candidate}', the nearest resolution to {size}px (Keras "
                            f"itself would load '{exact}')")
                return ResolvedWeights(arg=str(path), label=str(path), file_name=candidate,
                                       note=note)
    # Keras' own loading: its cache (~/.keras/models) first, then the download.
    return ResolvedWeights(arg="imagenet", label="imagenet", file_name=exact)


class Preprocess(keras.layers.Layer):
    """Raw pixels (0-255, any dtype) -> the model's input scale -> resize_with_pad to `size`.

    The lesson scales by 1/255 and then calls `tf.image.resize_with_pad(x, 160, 160,
    method=BILINEAR)`; "native" swaps the scaling for the model's own `preprocess_input`.
    Scaling comes before resizing, as in the lesson, so padding stays zero in model space.
    """

    def __init__(self, size: int, mode: str, preprocess_input=None, **kwargs):
        super().__init__(**kwargs)
        self.size = size
        self.mode = mode
        self.preprocess_input = preprocess_input

    def call(self, x):
        x = tf.cast(x, "float32")
        if self.mode == "lesson":
            x = x / 255.0
        else:
            x = self.preprocess_input(x)
        return tf.image.resize_with_pad(
            x, self.size, self.size, method=tf.image.ResizeMethod.BILINEAR
        )

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.size, self.size, 3)


def build_backbone(spec: BackboneSpec, size: int, config: RunConfig,
                   weights: ResolvedWeights) -> keras.Model:
    """The frozen backbone with the chosen weights; a failed ImageNet load raises WeightsError."""
    try:
        backbone = spec.build(size, pooling=config.pooling, weights=weights.arg)
    except Exception as err:  # Keras raises bare Exceptions for failed downloads
        if weights.arg == "imagenet" and _is_download_failure(err):
            searched = f" (not found in {config.weights_dir})" if config.weights_dir else ""
            raise WeightsError(
                f"ImageNet weights '{weights.file_name}' for {spec.name} could not be downloaded"
                f"{searched}: {_one_line(err)}. Put that file in a folder and pass "
                f"--weights-dir DIR, or run once with network access"
            ) from err
        if weights.arg not in (None, "imagenet"):
            raise WeightsError(
                f"Could not load weights file '{weights.arg}' into {spec.name}: {_one_line(err)}"
            ) from err
        raise
    backbone.trainable = False
    return backbone


def backbone_graph(spec: BackboneSpec, backbone: keras.Model, size: int, config: RunConfig,
                   image_shape: tuple[int, ...], image_dtype: str):
    """Input -> preprocess/resize -> frozen backbone, as (inputs, features) symbolic tensors.

    The backbone is called with training=False, as the Keras transfer-learning guide does, so
    its BatchNorm and dropout stay in inference mode whichever path trains the head: that is what
    makes cached features and the end-to-end model compute the same thing.
    """
    inputs = keras.Input(shape=image_shape, dtype=image_dtype, name="images")
    x = Preprocess(size, config.preprocess, spec.preprocess_input, name="preprocess_resize")(inputs)
    features = backbone(x, training=False)
    return inputs, features


def extract(extractor: keras.Model, images: np.ndarray, batch_size: int,
            verbose: int = 1) -> np.ndarray:
    """Runs the frozen backbone once over `images`; float32 features (N x width)."""
    features = extractor.predict(images, batch_size=batch_size, verbose=verbose)
    return np.asarray(features, dtype=np.float32)


def _is_download_failure(err: Exception) -> bool:
    text = str(err)
    return "URL fetch failure" in text or "HTTP" in text or isinstance(err, OSError)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__
