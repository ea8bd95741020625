"""The previous episode's models trained from scratch: what transfer learning has to beat.

The lesson's Dollar Street CNN reaches about 30 % validation accuracy against 64 % for frozen
DenseNet121; these rows put that comparison on the same leaderboard. They train end to end on
the raw images (pixels / 255, no resize) with the same optimizer, loss, batch size, epochs and
early stopping as the backbones' head.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from backbones.spec import Kind, Spec

if TYPE_CHECKING:
    import keras


def scratch_cnn(image_shape: tuple[int, int, int], n_classes: int) -> keras.Model:
    """Conv2D 50 3x3 relu, MaxPooling 2x2, Conv2D 50 3x3 relu, MaxPooling 2x2, Flatten,
    Dense 50 relu, Dense K: the episode "Advanced layer types" CNN."""
    import keras

    inputs = keras.Input(shape=image_shape)
    x = keras.layers.Conv2D(50, (3, 3), activation="relu")(inputs)
    x = keras.layers.MaxPooling2D((2, 2))(x)
    x = keras.layers.Conv2D(50, (3, 3), activation="relu")(x)
    x = keras.layers.MaxPooling2D((2, 2))(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(50, activation="relu")(x)
    outputs = keras.layers.Dense(n_classes)(x)
    return keras.Model(inputs, outputs, name="scratch_cnn")


def dense(image_shape: tuple[int, int, int], n_classes: int) -> keras.Model:
    """Flatten, Dense 50 relu, Dense 50 relu, Dense K: the same episode's dense network."""
    import keras

    inputs = keras.Input(shape=image_shape)
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(50, activation="relu")(x)
    x = keras.layers.Dense(50, activation="relu")(x)
    outputs = keras.layers.Dense(n_classes)(x)
    return keras.Model(inputs, outputs, name="dense")


@dataclass(frozen=True, kw_only=True)
class BaselineSpec(Spec):
    """A model trained from scratch on raw images; selected by name, run by --all."""

    kind: Kind = field(default="baseline", init=False)
    family: str = "baseline"
    canonical: bool = False  # not a keras.applications constructor (--all adds baselines itself)
    top1: float | None = None  # no ImageNet weights
    min_size: int = 1
    builder: Callable[[tuple[int, int, int], int], keras.Model]
    description: str


BASELINES: tuple[BaselineSpec, ...] = (
    BaselineSpec(name="scratch-cnn", builder=scratch_cnn,
                 description="the lesson's CNN trained from scratch"),
    BaselineSpec(name="dense", builder=dense,
                 description="the lesson's dense network trained from scratch"),
)
