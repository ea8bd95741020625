"""The lesson's head and its training: one code path for cached features and the full model."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from bench.config import RunConfig


def build_head(n_classes: int, name: str = "head") -> keras.Sequential:
    """Flatten -> BatchNormalization -> Dense(50, relu) -> Dropout(0.5) -> Dense(K), as the lesson.

    Call right after `keras.utils.set_random_seed(seed)`: initializers and the dropout seed are
    drawn when the layers are created, so the same seed gives the same head on either path.
    """
    return keras.Sequential(
        [
            keras.layers.Flatten(),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(50, activation="relu"),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(n_classes),  # logits: the loss has from_logits=True
        ],
        name=name,
    )


def compile_lesson(model: keras.Model) -> None:
    """compile(optimizer='adam', loss=SparseCategoricalCrossentropy(from_logits=True), ...)."""
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def epoch_orders(n: int, epochs: int, seed: int) -> np.ndarray:
    """The sample order of every epoch (epochs x n), fixed by the seed alone.

    `model.fit(shuffle=True)` draws its order from TensorFlow's op-level seeds, which depend on
    how many ops were created before; fixing the order here is what lets the cached and the
    end-to-end paths see identical batches.
    """
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(n) for _ in range(epochs)]) if epochs else np.zeros((0, n))


def batches(x: np.ndarray, y: np.ndarray, orders: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """Every epoch's batches in the given orders; no batch crosses an epoch boundary."""
    x_t = tf.constant(x)
    y_t = tf.constant(y)
    per_epoch = tf.data.Dataset.from_tensor_slices(orders.astype(np.int64))
    indices = per_epoch.flat_map(
        lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size)
    )
    return indices.map(
        lambda idx: (tf.gather(x_t, idx), tf.gather(y_t, idx)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    ).prefetch(tf.data.AUTOTUNE)


class EpochTimer(keras.callbacks.Callback):
    """Wall seconds of each epoch, validation included."""

    def on_train_begin(self, logs=None):
        self.times: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)


@dataclass(frozen=True)
class TrainOutcome:
    history: dict[str, list[float]]  # accuracy, val_accuracy, loss, val_loss per epoch
    epoch_times: list[float]


def train(model: keras.Model, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
          y_val: np.ndarray, config: RunConfig) -> TrainOutcome:
    """The lesson's `fit`: Adam, early stopping on val_accuracy, batches in a seeded order.

    `model` is the head alone (on cached features) or the full model (on images): the same
    compile, batch order, callbacks and fit call serve both.
    """
    compile_lesson(model)
    callbacks: list[keras.callbacks.Callback] = []
    if config.patience > 0:
        # lesson: EarlyStopping(monitor='val_accuracy', patience=5); weights are not restored
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_accuracy",
                                                       patience=config.patience))
    timer = EpochTimer()
    callbacks.append(timer)
    orders = epoch_orders(len(x_train), config.epochs, config.seed)
    fit = model.fit(
        batches(x_train, y_train, orders, config.batch_size),
        steps_per_epoch=math.ceil(len(x_train) / config.batch_size),
        epochs=config.epochs,
        validation_data=(x_val, y_val),
        validation_batch_size=config.batch_size,
        callbacks=callbacks,
        shuffle=False,  # the order is already fixed by epoch_orders
        verbose=0,
    )
    keys = ("accuracy", "val_accuracy", "loss", "val_loss")
    history = {k: [float(v) for v in fit.history[k]] for k in keys}
    return TrainOutcome(history=history, epoch_times=list(timer.times))
