"""(c) The lesson head trained for 30 epochs on cached features of DenseNet121's shape."""

from __future__ import annotations

import time
from os import getloadavg

import keras
import numpy as np

from bench import head
from bench.config import RunConfig

N_TRAIN, N_VAL, WIDTH, CLASSES = 878, 293, 1024, 10  # cifar10-ds10 through DenseNet121


def densenet_shaped_features(seed: int = 0):
    """Features with a class signal in a few dimensions among 1024, like pooled ImageNet
    features of a 10-class photo set: the head learns, neither perfectly nor not at all."""
    rng = np.random.default_rng(seed)

    def split(n):
        y = rng.integers(0, CLASSES, n)
        x = rng.gamma(2.0, 1.0, size=(n, WIDTH)).astype(np.float32)
        x[np.arange(n), y * 7] += 2.0
        return x, y

    return (*split(N_TRAIN), *split(N_VAL))


def test_c_head_training_30_epochs(benchmark, report):
    x, y, xv, yv = densenet_shaped_features()
    config = RunConfig(epochs=30, patience=0, verbose=0)

    def fresh(loop):
        keras.utils.set_random_seed(config.seed)
        model = head.build_head(CLASSES)
        model.build((None, WIDTH))
        return (model, x, y, xv, yv, config), {"loop": loop}

    before = getloadavg()[0]
    # every round starts from a new head, so tracing the epoch is inside each timing
    compiled = benchmark.pedantic(head.train, setup=lambda: fresh("compiled"), rounds=3,
                                  iterations=1)
    compiled_s = benchmark.stats.stats.median
    args, kwargs = fresh("fit")
    start = time.perf_counter()
    fitted = head.train(*args, **kwargs | {"loop": "fit"})
    fit_s = time.perf_counter() - start

    for key in head.HISTORY_KEYS:
        np.testing.assert_allclose(compiled.history[key], fitted.history[key], rtol=1e-5,
                                   atol=1e-6, err_msg=key)
    same = compiled.history == fitted.history
    first = compiled.epoch_times[0]  # tracing and graph optimisation, then one epoch
    steady = float(np.median(compiled.epoch_times[1:]))
    report(f"ratio c (head, 30 epochs on {N_TRAIN}x{WIDTH} features): model.fit {fit_s:.2f} s "
           f"/ compiled loop {compiled_s:.2f} s (median of 3, each a new head, tracing "
           f"included) = {fit_s / compiled_s:.1f}x; target <= 1 s: "
           f"{'met' if compiled_s <= 1.0 else 'MISSED'} (first epoch with tracing "
           f"{first:.2f} s, then {steady * 1e3:.1f} ms an epoch: 30 traced epochs "
           f"{30 * steady:.2f} s); histories {'bit-identical' if same else 'equal within 1e-5'}"
           f"; load {before:.2f} -> {getloadavg()[0]:.2f}")
