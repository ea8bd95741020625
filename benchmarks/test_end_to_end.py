"""(a) The episode's end-to-end model.fit against bench's default (cached) path.

Same backbone, seed and batches, 10 epochs without early stopping. The end-to-end path runs
the frozen backbone over every image in every epoch; the cached path runs it once. Times are
run_one's own (total_s: build, extraction or fit, the final prediction) and, for the loop
alone, the epochs of fit against extraction plus the head's epochs.

Both run on all of cifar10-ds10 (878 train, 293 test images, the lesson's counts). DenseNet121
end to end costs about a minute an epoch there on two cores: this benchmark takes ~13 minutes.
"""

from __future__ import annotations

import dataclasses
from os import getloadavg

import numpy as np
import pytest

from backbones import get
from bench.config import RunConfig
from bench.data import from_arrays
from bench.engine.runner import run_one

EPOCHS = 10


def subset(data, n_train, n_test):
    if n_train >= data.n_train and n_test >= data.n_test:
        return data
    return from_arrays(data.train_images[:n_train], data.train_labels[:n_train],
                       data.test_images[:n_test], data.test_labels[:n_test],
                       class_names=data.class_names, source=f"{data.source}[:{n_train}]")


@pytest.mark.parametrize("name, weights, n_train, n_test", [
    ("MobileNet_0.25", "imagenet", 878, 293),
    ("DenseNet121", "random", 878, 293),
])
def test_a_end_to_end_vs_cached(name, weights, n_train, n_test, ds10, weights_dir, tmp_path,
                                report, benchmark):
    data = subset(ds10, n_train, n_test)
    config = RunConfig(epochs=EPOCHS, patience=0, weights=weights, weights_dir=str(weights_dir),
                       cache_dir=str(tmp_path / "features"),  # bench's default batch
                       verbose=0)
    before = getloadavg()[0]
    cached = benchmark.pedantic(run_one, args=(get(name), config, data), rounds=1,
                                iterations=1)
    e2e = run_one(get(name), dataclasses.replace(config, end_to_end=True), data)
    assert cached.ok and e2e.ok, (cached.error, e2e.error)
    assert not cached.features_cached  # the backbone really ran

    one_sample = 1 / data.n_test
    diff = np.abs(np.subtract(cached.history["test_accuracy"], e2e.history["test_accuracy"]))
    run_ratio = e2e.total_s / cached.total_s
    loop_e2e = sum(e2e.epoch_times)
    loop_cached = cached.extract_s + sum(cached.epoch_times)
    # 30 epochs: the measured epochs scaled; fit's epochs after the first all cost the same
    e2e_epoch = float(np.median(e2e.epoch_times[1:]))
    head_epoch = float(np.median(cached.epoch_times[1:]))
    loop_30 = (loop_e2e + 20 * e2e_epoch) / (loop_cached + 20 * head_epoch)
    run_30 = (e2e.total_s + 20 * e2e_epoch) / (cached.total_s + 20 * head_epoch)
    report(f"ratio a ({name}, {weights}, {data.n_train}+{data.n_test} images, {EPOCHS} epochs): "
           f"end-to-end {e2e.total_s:.1f} s / cached {cached.total_s:.1f} s = {run_ratio:.1f}x "
           f"(run_one total_s); loop only: fit {loop_e2e:.1f} s / extraction "
           f"{cached.extract_s:.1f} s + head {sum(cached.epoch_times):.2f} s = "
           f"{loop_e2e / loop_cached:.1f}x; at 30 epochs (projected from the epoch times) "
           f"{run_30:.1f}x total, {loop_30:.1f}x loop; "
           f"test_accuracy max |diff| {diff.max():.4f} (one sample = {one_sample:.4f}); "
           f"final {cached.history['test_accuracy'][-1]:.3f} vs "
           f"{e2e.history['test_accuracy'][-1]:.3f}; load {before:.2f} -> {getloadavg()[0]:.2f}")
    assert diff.max() <= one_sample + 1e-6
