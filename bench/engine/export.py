"""One Keras model from a result row: raw uint8 images of any size -> preprocessing -> resize ->
frozen backbone -> trained head -> class logits.

Built from Keras' own layers only (no Lambda, no layer of bench's), so the saved file loads with
`keras.models.load_model` where bench is not installed.

The resize is `keras.layers.Resizing(pad_to_aspect_ratio=True)`, bilinear, where training used
`tf.image.resize_with_pad` (bilinear). On square images both compute the same values (the
same bilinear resize, no padding), with one exception: resize_with_pad computes the resized
side in float32 as floor(side / (side / target)), which falls one pixel short for some pairs
(32 -> 224, 16 -> 224, 75 -> 299, 5 -> 300, ...; none for targets 32, 64, 96, 128, 160, 192,
256, 384, 512): it then resizes to target - 1 and pads one zero row and column, where Resizing
fills the target. On other shapes they differ near the padding: Resizing pads to the target's
aspect ratio first and resizes the padded image, so the image's edge pixels blend with the
padding, where resize_with_pad resizes the image alone and pads after. No built-in layer
resizes to a size computed from each input's shape, which resize_with_pad needs.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from backbones import BackboneSpec, Spec
from bench.config import RunConfig
from bench.engine import features, head
from bench.weights import ResolvedWeights

# keras.applications.imagenet_utils' constants: caffe's BGR mean, torch's RGB mean and std
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)


class ExportError(ValueError):
    """The row's model cannot be built from Keras' layers: one line."""


def preprocessing_layers(spec: Spec, preprocess: str) -> list[keras.layers.Layer]:
    """Keras layers computing `preprocess` ("lesson": pixels / 255, "native": the family's
    preprocess_input) on 0-255 pixels of any dtype; the first one casts to float32."""
    if preprocess == "lesson" or spec.kind == "baseline":
        return [keras.layers.Rescaling(1 / 255, name="pixels_over_255")]
    mode = spec.preprocess_mode
    if mode == "tf":
        return [keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="pixels_to_pm1")]
    if mode == "torch":
        return [keras.layers.Rescaling(1 / 255, name="pixels_over_255"),
                keras.layers.Normalization(mean=list(TORCH_MEAN),
                                           variance=[s * s for s in TORCH_STD],
                                           name="imagenet_normalization")]
    if mode == "caffe":
        return [keras.layers.Rescaling(1.0, name="pixels_as_float"), _caffe_layer()]
    if mode == "in-graph":  # the backbone rescales 0-255 pixels itself
        return [keras.layers.Rescaling(1.0, name="pixels_as_float")]
    raise ExportError(f"{spec.name}'s preprocessing mode {mode!r} has no Keras-layer "
                      f"equivalent in bench's export (known: tf, torch, caffe, in-graph)")


def _caffe_layer() -> keras.layers.Conv2D:
    """RGB -> BGR minus the ImageNet mean as a fixed 1x1 convolution: a permutation (products
    with 1 and 0, exact) and a bias."""
    layer = keras.layers.Conv2D(3, 1, trainable=False, name="rgb_to_bgr_minus_mean")
    layer.build((None, None, None, 3))
    flip = np.eye(3, dtype=np.float32)[::-1].reshape(1, 1, 3, 3)
    layer.set_weights([flip, -np.asarray(CAFFE_MEAN_BGR, dtype=np.float32)])
    return layer


def build_model(spec: Spec, row_config: RunConfig, weights: ResolvedWeights | None,
                backbone_seed: int, head_weights: Sequence[np.ndarray], n_classes: int,
                image_shape: Sequence[int] | None = None,
                batchnorm_images: np.ndarray | None = None) -> keras.Model:
    """The row's classifier on raw uint8 images of any size (see the module's docstring).

    A frozen backbone is rebuilt as the run built it (seeded first: random weights are what
    the seed draws, its BatchNormalization statistics re-estimated on `batchnorm_images` as the
    run did), then the saved head is loaded onto it. A baseline (`weights` None) is its whole
    trained model behind the resize to its training images' shape.
    """
    if isinstance(spec, BackboneSpec):
        size = row_config.size_for(spec.input_size)
        keras.utils.set_random_seed(backbone_seed)  # before any other layer draws a number
        body = features.build_backbone(spec, size, row_config, weights)
        if batchnorm_images is not None:
            features.reestimate_batchnorm(body, spec, size, row_config, batchnorm_images)
        trained = head.build_head(n_classes)
        trained.build((None, *body.output_shape[1:]))
        side = (size, size)
    else:
        if not image_shape:
            raise ExportError(f"{spec.name}'s head file does not say its images' shape")
        body = trained = spec.builder(tuple(image_shape), n_classes)
        side = tuple(image_shape[:2])
    _load_weights(trained, head_weights, spec.name)
    inputs = keras.Input(shape=(None, None, 3), dtype="uint8", name="images")
    x = inputs
    for layer in preprocessing_layers(spec, row_config.preprocess):
        x = layer(x)
    x = keras.layers.Resizing(*side, interpolation="bilinear", pad_to_aspect_ratio=True,
                              name="resize_with_pad")(x)
    if trained is body:
        logits = body(x)
    else:
        logits = trained(body(x, training=False))
    return keras.Model(inputs, logits, name=keras_name(spec.name))


def _load_weights(model: keras.Model, weights: Sequence[np.ndarray], name: str) -> None:
    expected = [tuple(w.shape) for w in model.weights]
    found = [tuple(w.shape) for w in weights]
    if expected != found:
        raise ExportError(f"the head file of {name} holds weights of shapes {found}; its "
                          f"model has {expected}")
    model.set_weights(list(weights))


def keras_name(name: str) -> str:
    """A model name Keras accepts: letters, digits and underscores."""
    return "".join(c if c.isalnum() else "_" for c in name) + "_classifier"
