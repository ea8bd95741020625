"""The frozen backbone: its input pipeline, its weights, and the features it computes."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
from keras.src.utils import file_utils

from backbones import BackboneSpec
from bench.cache import process_caches
from bench.config import RunConfig
from bench.weights import ResolvedWeights, WeightsError, weights_folder


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
    """The frozen backbone with the chosen weights; a failed load raises WeightsError."""
    try:
        if weights.source == "file" and spec.factory is None:
            backbone = _build_from_file(spec, size, config.pooling, weights.path)
        else:
            # a row's own factory gets the file verbatim: bench cannot know its ImageNet route
            arg = {"imagenet": "imagenet", "file": weights.path}.get(weights.source)
            backbone = spec.build(size, pooling=config.pooling, weights=arg)
    except Exception as err:  # Keras raises bare Exceptions for failed downloads
        if weights.source == "imagenet" and _is_download_failure(err):
            folder = weights_folder(config.weights_dir)
            searched = f" (not found in {folder})" if folder else ""
            raise WeightsError(
                f"ImageNet weights '{weights.file_name}' for {spec.name} could not be downloaded"
                f"{searched}: {_one_line(err)}. Put that file in a folder and pass "
                f"--weights-dir DIR (or set $BENCH_WEIGHTS_DIR), or run once with network "
                f"access"
            ) from err
        if weights.source == "file":
            raise WeightsError(
                f"Could not load weights file '{weights.path}' into {spec.name}: "
                f"{_one_line(err)}"
            ) from err
        raise
    backbone.trainable = False
    return backbone


# Images per batch when BatchNormalization statistics are re-estimated, and how many training
# images (evenly spaced, so every part of a class-sorted folder counts): fixed, so that a run
# and an export of it compute the same statistics. 256 images settle a channel's mean and
# variance to about 1/16 of its spread; a pass over all of DenseNet121's 878 took 29 s.
BATCHNORM_BATCH = 32
BATCHNORM_IMAGES = 256


def reestimate_batchnorm(backbone: keras.Model, spec: BackboneSpec, size: int,
                         config: RunConfig, images: np.ndarray) -> int:
    """Random weights: every BatchNormalization layer's moving mean and variance, still their
    initial 0 and 1 (so deep activations collapse and the head sees constant features), become
    the average of its batch statistics over `images`: one pass in training mode, each batch
    weighted equally (torch.optim.swa_utils.update_bn does the same). The usual random-features
    baseline; weights are untouched. At most BATCHNORM_IMAGES images are used, evenly spaced.
    Returns how many layers it re-estimated."""
    with batchnorm_pass(backbone, spec, size, config) as (step, layers):
        if not layers:
            return 0
        stats = [layer.moving_mean for layer in layers] + [
            layer.moving_variance for layer in layers]
        if len(images) > BATCHNORM_IMAGES:
            images = images[np.linspace(0, len(images) - 1, BATCHNORM_IMAGES).astype(int)]
        sums, batches = None, 0
        for start in range(0, len(images), BATCHNORM_BATCH):
            step(images[start:start + BATCHNORM_BATCH])
            values = [keras.ops.convert_to_numpy(v) for v in stats]
            sums = values if sums is None else [s + v for s, v in zip(sums, values, strict=True)]
            batches += 1
        for variable, total in zip(stats, sums, strict=True):
            variable.assign(total / batches)
    return len(layers)


@contextlib.contextmanager
def batchnorm_pass(backbone: keras.Model, spec: BackboneSpec, size: int, config: RunConfig):
    """(step, layers): a traced training-mode forward pass of raw images through the backbone,
    which leaves each batch's own statistics in the moving ones of its BatchNormalization
    `layers` (momentum 0), as reestimate_batchnorm runs it (cost.calibrate times it too).

    Keras runs a non-trainable BatchNormalization in inference mode whatever `training` says:
    the frozen backbone thaws inside the block (no weight moves: nothing is optimised) and is
    frozen again, its momentums restored, when the block ends."""
    layers = [layer for layer in backbone._flatten_layers(include_self=False)
              if isinstance(layer, keras.layers.BatchNormalization)]
    preprocess = Preprocess(size, config.preprocess, spec.preprocess_input)
    momentum = [layer.momentum for layer in layers]
    backbone.trainable = True
    for layer in layers:
        layer.momentum = 0.0
    try:
        yield tf.function(lambda x: backbone(preprocess(x), training=True)), layers
    finally:
        backbone.trainable = False
        for layer, value in zip(layers, momentum, strict=True):
            layer.momentum = value


def _build_from_file(spec: BackboneSpec, size: int, pooling: str, path: str) -> keras.Model:
    """The network Keras builds for weights="imagenet", loaded from `path`.

    Handing Keras the path instead would build another network: EfficientNet adds its stem
    Rescaling(1/sqrt(stddev)) only for weights="imagenet", and the ImageNet weights assume it.
    """
    with _keras_download_answered_by(path) as asked:
        backbone = spec.build(size, pooling=pooling, weights="imagenet")
    if not asked:
        raise WeightsError(f"{spec.name} loaded no weights file through Keras' download")
    return backbone


@contextlib.contextmanager
def _keras_download_answered_by(path: str) -> Iterator[list[str]]:
    """Every keras.applications module fetches its weights with `file_utils.get_file`: answer
    that call with the local file (nothing is downloaded); yields the names Keras asked for."""
    asked: list[str] = []

    def get_file(fname=None, origin=None, *args, **kwargs) -> str:
        asked.append(fname)
        return path

    original = file_utils.get_file
    file_utils.get_file = get_file
    try:
        yield asked
    finally:
        file_utils.get_file = original


class FrozenBackbone(keras.layers.Layer):
    """Calls the backbone in inference mode, whatever mode the outer model runs in.

    Keras 3 passes an outer `fit`'s training=True to every layer of a functional graph,
    overriding the training=False recorded when the backbone was called; dropout inside a
    frozen EfficientNet (stochastic depth) would then run end to end but not during
    extraction. An explicit argument of the inner call wins over an outer one.
    """

    def __init__(self, backbone: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone

    def call(self, x, training=None):  # the outer mode is ignored: see the docstring
        return self.backbone(x, training=False)

    def compute_output_shape(self, input_shape):
        return self.backbone.compute_output_shape(input_shape)


def backbone_graph(spec: BackboneSpec, backbone: keras.Model, size: int, config: RunConfig,
                   image_shape: tuple[int, ...], image_dtype: str):
    """Input -> preprocess/resize -> frozen backbone, as (inputs, features) symbolic tensors.

    The backbone runs in inference mode (FrozenBackbone), as a fixed feature extractor: its
    BatchNorm and dropout behave the same whichever path trains the head, which is what makes
    cached features and the end-to-end model compute the same thing.
    """
    inputs = keras.Input(shape=image_shape, dtype=image_dtype, name="images")
    x = augmentation(config.seed)(inputs) if config.augment else inputs
    x = Preprocess(size, config.preprocess, spec.preprocess_input, name="preprocess_resize")(x)
    features = FrozenBackbone(backbone, name=f"frozen_{backbone.name}")(x)
    return inputs, features


def augmentation(seed: int) -> keras.Sequential:
    """--augment: a random horizontal flip, rotation by up to 5 % of a turn and zoom by up to
    10 % of the raw images, in training only (Keras' preprocessing layers are the identity at
    inference), drawn from the run's seed."""
    return keras.Sequential([keras.layers.RandomFlip("horizontal", seed=seed),
                             keras.layers.RandomRotation(0.05, seed=seed + 1),
                             keras.layers.RandomZoom(0.1, seed=seed + 2)], name="augment")


def split_extractor(extractor: keras.Model) -> tuple[Preprocess, keras.Model] | None:
    """(its Preprocess layer, the frozen backbone) of an extractor backbone_graph built, else
    None."""
    layers = [layer for layer in extractor.layers if not isinstance(layer, keras.layers.InputLayer)]
    if (len(layers) == 2 and isinstance(layers[0], Preprocess)
            and isinstance(layers[1], FrozenBackbone)):
        return layers[0], layers[1].backbone
    return None


@dataclass
class ForwardTimer:
    """Steady-state inference time over one or more runtimes.extract() calls: the first batch
    it sees (tracing, memory allocation) is left out, as is everything outside the forward
    calls."""

    seconds: float = 0.0
    images: int = 0
    batches_seen: int = 0

    def add(self, images: int, seconds: float) -> None:
        self.batches_seen += 1
        if self.batches_seen > 1:
            self.seconds += seconds
            self.images += images

    @property
    def ms_per_image(self) -> float | None:
        """None when nothing but the first batch ran."""
        return 1000 * self.seconds / self.images if self.images else None


def forward_function(extractor: keras.Model, image_shape: tuple[int, ...], dtype):
    """One traced forward per extractor and input signature, shared by the train and test
    calls. It reaches its model through a weak reference, so the cache entry (keyed weakly)
    goes when the runner drops the extractor. XLA stays off: on a CPU it made extraction 8-10x
    slower, and XLA's bilinear resize disagrees with TensorFlow's at some ratios (32->160,
    64->192: whole pixel values), which would change the features (results/PERF.md)."""
    key = (tuple(image_shape), np.dtype(dtype).name)
    functions = process_caches().forwards.setdefault(extractor, {})
    if key not in functions:
        model = weakref.ref(extractor)
        spec = tf.TensorSpec((None, *image_shape), tf.as_dtype(dtype))

        def forward(images):
            return model()(images, training=False)

        functions[key] = tf.function(forward, input_signature=[spec])
    return functions[key]


def _is_download_failure(err: Exception) -> bool:
    text = str(err)
    return "URL fetch failure" in text or "HTTP" in text or isinstance(err, OSError)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__
