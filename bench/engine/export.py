"""One Keras model from a result row: raw uint8 images of any size -> preprocessing -> resize ->
frozen backbone -> trained head -> class logits. A fine-tuned row's model is the same chain
with its fine-tuned backbone and head.

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

The same model goes out in three formats (FORMATS): the .keras file; OpenVINO IR, converted
as bench converts its backbones (openvino_backend.save_ir) from a twin of the model whose
Resizing is PadThenResize, the same arithmetic without Keras' tf.cond (OpenVINO 2026.4
computed the first inferences of a converted tf.cond on CPU wrong: NaN or garbage logits);
and a TensorFlow SavedModel (`model.export`, its `serve` endpoint).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from backbones import BackboneSpec, Spec
from bench.config import RunConfig
from bench.engine import features, finetune, head, openvino_backend
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
    run did), then the saved head is loaded onto it. A fine-tuned row (`row_config` fine-tunes
    for at least one epoch) saved its whole model's weights: that model is rebuilt as
    finetune.build_model built it (augmentation included), the weights loaded, and its backbone
    and head go on as a frozen row's; augmentation, the identity at inference, is left out.
    A baseline (`weights` None) is its whole trained model behind the resize to its training
    images' shape.
    """
    if isinstance(spec, BackboneSpec):
        size = row_config.size_for(spec.input_size)
        keras.utils.set_random_seed(backbone_seed)  # before any other layer draws a number
        body = features.build_backbone(spec, size, row_config, weights)
        if row_config.fine_tune and row_config.fine_tune_epochs:
            trained = _fine_tuned_head(spec, body, size, row_config, head_weights, n_classes)
        else:
            if batchnorm_images is not None:
                features.reestimate_batchnorm(body, spec, size, row_config, batchnorm_images)
            trained = head.build_head(n_classes)
            trained.build((None, *body.output_shape[1:]))
            _load_weights(trained, head_weights, spec.name)
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


def _fine_tuned_head(spec: BackboneSpec, body: keras.Model, size: int, row_config: RunConfig,
                     weights: Sequence[np.ndarray], n_classes: int) -> keras.Model:
    """The fine-tuned model's head; its weights, and `body`'s, set to the saved ones. Every
    weight is replaced, BatchNormalization's statistics too: nothing is re-estimated."""
    # the weights do not depend on the images' shape: any size, as the export takes
    inputs, outputs = features.backbone_graph(spec, body, size, row_config, (None, None, 3),
                                              "uint8")
    whole, trained = finetune.build_model(spec, inputs, outputs, n_classes, row_config.seed)
    _load_weights(whole, weights, spec.name)
    return trained


def _load_weights(model: keras.Model, weights: Sequence[np.ndarray], name: str) -> None:
    expected = [tuple(w.shape) for w in model.weights]
    found = [tuple(w.shape) for w in weights]
    if expected != found:  # a whole fine-tuned model has hundreds: the first that differs
        at = next((i for i, (a, b) in enumerate(zip(expected, found, strict=False))
                   if a != b), min(len(expected), len(found)))
        raise ExportError(f"the head file of {name} holds {len(found)} weights, its model "
                          f"{len(expected)}; weight {at} has the shape "
                          f"{found[at] if at < len(found) else 'none'} in the file, "
                          f"{expected[at] if at < len(expected) else 'none'} in the model")
    model.set_weights(list(weights))


def keras_name(name: str) -> str:
    """A model name Keras accepts: letters, digits and underscores."""
    return "".join(c if c.isalnum() else "_" for c in name) + "_classifier"


class PadThenResize(keras.layers.Layer):
    """Keras' Resizing(height, width, pad_to_aspect_ratio=True), bilinear, on the TensorFlow
    backend, computed without its tf.cond: the same symmetric zero padding (an empty padding
    where Resizing concatenates nothing) and the same tf.image.resize."""

    def __init__(self, height: int, width: int, **kwargs):
        super().__init__(**kwargs)
        self.height, self.width = height, width

    def call(self, images):
        shape = tf.shape(images)
        height, width = shape[1], shape[2]

        def half_of_excess(side, other, target, other_target):  # Resizing's int32 arithmetic
            padded = tf.maximum(side, tf.cast(
                tf.cast(other * target, "float32") / other_target, "int32"))
            return tf.cast(tf.cast(padded - side, "float32") / 2, "int32")

        top = half_of_excess(height, width, self.height, self.width)
        left = half_of_excess(width, height, self.width, self.height)
        padded = tf.pad(images, [[0, 0], [top, top], [left, left], [0, 0]])
        return tf.image.resize(padded, (self.height, self.width), method="bilinear")


def openvino_twin(model: keras.Model) -> keras.Model:
    """`model` (of build_model: a chain of layers) with its Resizing replaced by PadThenResize,
    sharing every other layer and weight."""
    x = inputs = keras.Input(shape=(None, None, 3), dtype="uint8", name="images")
    for layer in model.layers[1:]:
        if isinstance(layer, keras.layers.Resizing):
            x = PadThenResize(layer.height, layer.width, name=layer.name)(x)
        else:
            x = layer(x)
    return keras.Model(inputs, x, name=model.name)


def save_openvino(model: keras.Model, xml: Path) -> None:
    """`model` as float32 OpenVINO IR: `xml` and the .bin beside it, in a dynamic shape
    (batch, height, width, 3) of uint8."""
    work = Path(tempfile.mkdtemp(prefix=".openvino-", dir=xml.parent))
    try:
        openvino_backend.save_ir(openvino_twin(model), xml, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def save_saved_model(model: keras.Model, folder: Path) -> None:
    """`model` as a TensorFlow SavedModel folder; its `serve` endpoint maps uint8 images to
    logits."""
    model.export(str(folder), format="tf_saved_model", verbose=False)
