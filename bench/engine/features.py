"""The frozen backbone: its input pipeline, its weights, and the features it computes."""

from __future__ import annotations

import weakref

import keras
import numpy as np
import tensorflow as tf

from backbones import BackboneSpec
from bench.cache import process_caches
from bench.config import RunConfig
from bench.weights import ResolvedWeights, WeightsError


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


def extract(extractor: keras.Model, images: np.ndarray, batch_size: int, verbose: int = 1,
            jit_compile: bool = False) -> np.ndarray:
    """Runs the frozen backbone once over `images`; float32 features (N x width).

    Each batch goes into the graph as raw pixels (uint8 when the data is) and is scaled,
    resized and run through the backbone in one traced call, so only one batch is ever
    upscaled: memory is the features plus a batch, whatever N. XLA stays off unless asked
    for: on a CPU it made extraction 8-10x slower, and XLA's bilinear resize disagrees with
    TensorFlow's at some ratios (32->160, 64->192: whole pixel values), which would change
    the features (results/PERF.md).
    """
    forward = _forward(extractor, images.shape[1:], images.dtype, jit_compile)
    n = len(images)
    out = np.empty((n, *extractor.output_shape[1:]), dtype=np.float32)
    progress = keras.utils.Progbar(n, verbose=verbose, unit_name="image") if verbose else None
    for start in range(0, n, batch_size):
        batch = images[start:start + batch_size]
        if jit_compile and len(batch) < batch_size:
            # one static shape: XLA would compile the backbone again for a short last batch
            pad = np.zeros((batch_size - len(batch), *batch.shape[1:]), dtype=batch.dtype)
            out[start:] = forward(np.concatenate([batch, pad]))[:len(batch)]
        else:
            out[start:start + len(batch)] = forward(batch)
        if progress:
            progress.add(len(batch))
    return out


def _forward(extractor: keras.Model, image_shape: tuple[int, ...], dtype: np.dtype,
             jit_compile: bool):
    """One traced forward per extractor and input signature, shared by the train and validation
    calls. It reaches its model through a weak reference, so the cache entry (keyed weakly)
    goes when the runner drops the extractor."""
    key = (tuple(image_shape), np.dtype(dtype).name, jit_compile)
    functions = process_caches().forwards.setdefault(extractor, {})
    if key not in functions:
        model = weakref.ref(extractor)
        spec = tf.TensorSpec((None, *image_shape), tf.as_dtype(dtype))

        def forward(images):
            return model()(images, training=False)

        functions[key] = tf.function(forward, input_signature=[spec], jit_compile=jit_compile)
    return functions[key]


def _is_download_failure(err: Exception) -> bool:
    text = str(err)
    return "URL fetch failure" in text or "HTTP" in text or isinstance(err, OSError)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__
