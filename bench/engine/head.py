"""The lesson's head and its training: one code path for cached features and the full model."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
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


def compile_lesson(model: keras.Model, optimizer: str | keras.optimizers.Optimizer = "adam",
                   ) -> None:
    """compile(optimizer='adam', loss=SparseCategoricalCrossentropy(from_logits=True), ...)."""
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def epoch_orders(n: int, epochs: int, seed: int) -> np.ndarray:
    """The sample order of every epoch (epochs x n), fixed by the seed alone.

    `model.fit(shuffle=True)` draws its order from TensorFlow's op-level seeds, which depend on
    how many ops were created before; fixing the order here is what lets the cached and the
    end-to-end routes see identical batches.
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


HISTORY_KEYS = ("accuracy", "val_accuracy", "loss", "val_loss")


def train(model: keras.Model, x_train: np.ndarray, y_train: np.ndarray, x_watch: np.ndarray,
          y_watch: np.ndarray, config: RunConfig, restore_best: bool = False,
          observe: Callable[[keras.Model], None] | None = None,
          optimizer: keras.optimizers.Optimizer | None = None) -> TrainOutcome:
    """The lesson's `fit`: Adam, early stopping on val_accuracy, batches in a seeded order.

    `model` is the head alone (on cached features) or the full model (on images). Both loops
    run the model's own `train_step`/`test_step` on the same batches with the same optimizer,
    metrics and EarlyStopping callback, so they give the same history:

    - "fit": `model.fit`, the episode's loop (the end-to-end path: a backbone forward per step
      dominates, Python per step costs nothing beside it);
    - "compiled": one tf.function call per epoch, its steps in a graph loop (the cached path,
      where a step is a few microseconds of arithmetic and fit's per-step Python would be most
      of the time).

    "fit" runs for `config.end_to_end`, "compiled" otherwise. `restore_best` (the holdout
    protocol) leaves the model with its best epoch's weights, even without early stopping.
    `observe(model)` runs after each epoch, outside its timing, before early stopping decides:
    it may look at the model (in inference mode), never change it. `optimizer` replaces the
    lesson's Adam (fine-tuning's small learning rate); it needs the "fit" loop.
    """
    orders = epoch_orders(len(x_train), config.epochs, config.seed)
    stopper = _early_stopping(config, restore_best)
    if config.end_to_end or optimizer is not None:
        compile_lesson(model, optimizer or "adam")
        return _train_fit(model, x_train, y_train, x_watch, y_watch, config, orders, stopper,
                          observe)
    start = time.perf_counter()
    prepared = CompiledLoop(model, x_train.shape[1:], x_train.dtype, y_train.dtype,
                            config.batch_size)
    prepare_s = time.perf_counter() - start
    outcome = prepared.run(x_train, y_train, x_watch, y_watch, orders, stopper, observe)
    # as under fit, whose first epoch includes tracing: epoch times add up to the training
    if outcome.epoch_times:
        outcome.epoch_times[0] += prepare_s
    return outcome


def _early_stopping(config: RunConfig,
                    restore_best: bool = False) -> keras.callbacks.EarlyStopping | None:
    if config.patience == 0 and not restore_best:
        return None
    # lesson: EarlyStopping(monitor='val_accuracy', patience=5); weights are not restored.
    # patience 0 with restore_best: never stop, but still end on the best epoch's weights.
    return keras.callbacks.EarlyStopping(monitor="val_accuracy",
                                         patience=config.patience or config.epochs,
                                         restore_best_weights=restore_best)


def _train_fit(model: keras.Model, x_train, y_train, x_watch, y_watch, config: RunConfig,
               orders: np.ndarray, stopper, observe=None) -> TrainOutcome:
    timer = EpochTimer()
    watcher = ([keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: observe(model))]
               if observe else [])
    fit = model.fit(
        batches(x_train, y_train, orders, config.batch_size),
        steps_per_epoch=math.ceil(len(x_train) / config.batch_size),
        epochs=config.epochs,
        validation_data=(x_watch, y_watch),
        validation_batch_size=config.batch_size,
        # the timer first: its epoch ends before the watcher looks; the stopper last, as in
        # the compiled loop, so the watcher sees the epoch's weights before any restore
        callbacks=[timer, *watcher, *([stopper] if stopper else [])],
        shuffle=False,  # the order is already fixed by epoch_orders
        verbose=0,
    )
    history = {k: [float(v) for v in fit.history[k]] for k in HISTORY_KEYS}
    return TrainOutcome(history=history, epoch_times=list(timer.times))


class CompiledLoop:
    """fit's epoch, step for step, as one graph call: what fit does per epoch, in that order.

    fit resets the metrics, runs `train_step` on each batch, reads the metrics (running means
    over the epoch's batches), then `evaluate` resets them and runs `test_step` over the
    validation set in batches of `batch_size`, and the callbacks see both. The steps are the
    model's own, so dropout draws from the same seed generator, BatchNormalization updates its
    moving statistics and Adam steps exactly as under fit; EarlyStopping is Keras' callback.

    Everything that costs time once (compiling, building the optimizer, tracing the epoch,
    TensorFlow's graph optimisation at its first call) happens in the constructor, before any
    data: about a second on two CPU cores, against ~35 ms an epoch after it. That first call
    runs the epoch on zero rows: no step runs and nothing changes but the metrics, which
    every epoch resets anyway.
    """

    def __init__(self, model: keras.Model, feature_shape: tuple[int, ...], feature_dtype,
                 label_dtype, batch_size: int):
        self.model = model
        bs = self.batch_size = batch_size
        compile_lesson(model)
        # what fit does before its first step: build the optimizer slots and compiled metrics
        model._symbolic_build(data_batch=(np.zeros((bs, *feature_shape), feature_dtype),
                                          np.zeros((bs,), label_dtype)))
        x_spec = tf.TensorSpec((None, *feature_shape), tf.as_dtype(feature_dtype))
        y_spec = tf.TensorSpec((None,), tf.as_dtype(label_dtype))
        self._epoch = tf.function(self._epoch_fn, input_signature=[
            x_spec, y_spec, x_spec, y_spec, tf.TensorSpec((None,), tf.int64)])
        empty_x = np.zeros((0, *feature_shape), feature_dtype)
        empty_y = np.zeros((0,), label_dtype)
        self._epoch(empty_x, empty_y, empty_x, empty_y, np.zeros((0,), np.int64))

    def _epoch_fn(self, x, y, x_watch, y_watch, order):
        model, bs = self.model, self.batch_size

        def steps(n, step, get_batch) -> None:
            for i in tf.range((n + bs - 1) // bs):
                step(get_batch(i * bs, tf.minimum((i + 1) * bs, n)))

        model.reset_metrics()
        steps(tf.shape(order)[0], model.train_step,
              lambda a, b: (tf.gather(x, order[a:b]), tf.gather(y, order[a:b])))
        train_logs = _metric_results(model)
        model.reset_metrics()
        steps(tf.shape(x_watch)[0], model.test_step, lambda a, b: (x_watch[a:b], y_watch[a:b]))
        val_logs = _metric_results(model)
        return train_logs, val_logs

    def run(self, x_train, y_train, x_watch, y_watch, orders: np.ndarray,
            stopper: keras.callbacks.EarlyStopping | None,
            observe: Callable[[keras.Model], None] | None = None) -> TrainOutcome:
        model = self.model
        x_t, y_t = tf.constant(x_train), tf.constant(y_train)
        xv_t, yv_t = tf.constant(x_watch), tf.constant(y_watch)
        if stopper:
            stopper.set_model(model)
            stopper.on_train_begin()
        model.stop_training = False
        history: dict[str, list[float]] = {k: [] for k in HISTORY_KEYS}
        times: list[float] = []
        for i, order in enumerate(orders):
            start = time.perf_counter()
            train_logs, val_logs = self._epoch(x_t, y_t, xv_t, yv_t,
                                               tf.constant(order, dtype=tf.int64))
            logs = {**{k: float(v) for k, v in train_logs.items()},
                    **{f"val_{k}": float(v) for k, v in val_logs.items()}}
            times.append(time.perf_counter() - start)
            for k in HISTORY_KEYS:
                history[k].append(logs[k])
            if observe:
                observe(model)
            if stopper:
                stopper.on_epoch_end(i, logs)
                if model.stop_training:
                    break
        if stopper:
            stopper.on_train_end()  # restores the best weights when asked to, as under fit
        return TrainOutcome(history=history, epoch_times=times)


def _metric_results(model: keras.Model) -> dict:
    """What fit logs: each metric's result, by name ("loss", "accuracy")."""
    results = {}
    for metric in model.metrics:
        value = metric.result()
        if isinstance(value, dict):
            results.update(value)
        else:
            results[metric.name] = value
    return results
