"""The runtime table: TensorFlow's traced graph against OpenVINO f32 for eleven backbones.

Each backbone (random weights, 160x160, batch 16) runs on the same images, already
preprocessed and resized in memory, in both runtimes: images/s of each (one timed pass after a
warm-up batch), OpenVINO's speed-up, the largest difference of their features relative to
the features' scale (max|ov - tf| / max|tf|), and what OpenVINO costs once (conversion and
compilation). A few dozen images per backbone keep the table to minutes; deselect it with
-m "not table".
"""

from __future__ import annotations

import time
from os import getloadavg

import keras
import numpy as np
import pytest
import tensorflow as tf
from tabulate import tabulate

from backbones import get
from bench.config import RunConfig
from bench.engine import features, openvino_backend, runtime_choice
from bench.identity import identify

SIZE, BATCH = 160, 16
IMAGES = 64
# TensorFlow runs these at a few images per second on two cores: fewer images there
TF_IMAGES = {"ConvNeXtTiny": 32, "VGG16": 32}
BACKBONES = ("ConvNeXtTiny", "MobileNetV3Small", "EfficientNetB0", "ResNet50",
             "EfficientNetV2B0", "InceptionV3", "ResNet50V2", "DenseNet121", "Xception",
             "NASNetMobile", "VGG16")
HEADERS = ("backbone", "TF graph img/s", "OpenVINO f32 img/s", "speed-up",
           "max rel. diff", "convert+compile s")


def timed_pass(forward, ready: np.ndarray) -> tuple[np.ndarray, float]:
    """(features, images/s) of one pass in batches of BATCH, after a warm-up batch."""
    forward(ready[:BATCH])
    start = time.perf_counter()
    out = np.concatenate([forward(ready[i:i + BATCH]) for i in range(0, len(ready), BATCH)])
    return out, len(ready) / (time.perf_counter() - start)


def table_row(name: str, data, store) -> list:
    """One backbone's row of the table."""
    spec = get(name)
    config = RunConfig(weights="random", image_size=SIZE, verbose=0)
    ident = identify(spec, config, data, data_checksum="runtime-table")
    keras.utils.set_random_seed(config.effective_backbone_seed)
    backbone = features.build_backbone(spec, SIZE, config, ident.weights)
    preprocess = features.Preprocess(SIZE, config.preprocess, spec.preprocess_input)
    ready = np.asarray(preprocess(data.train_images[:IMAGES]))
    graph = tf.function(lambda x: backbone(x, training=False),
                        input_signature=[tf.TensorSpec((None, SIZE, SIZE, 3), "float32")])
    tf_out, tf_rate = timed_pass(lambda x: graph(x).numpy(), ready[:TF_IMAGES.get(name, IMAGES)])
    found = openvino_backend.converted(backbone, runtime_choice.openvino_key(spec, config, ident),
                                       name, store)
    compiled = openvino_backend.CompiledBackbone(found.xml, BATCH, SIZE)
    ov_out, ov_rate = timed_pass(compiled, ready)
    diff = np.abs(ov_out[:len(tf_out)] - tf_out).max() / np.abs(tf_out).max()
    keras.backend.clear_session()
    return [name, tf_rate, ov_rate, ov_rate / tf_rate, diff, found.seconds + compiled.compile_s]


@pytest.mark.table
def test_engine_table(ds10, tmp_path, report, benchmark):
    before = getloadavg()[0]
    rows, failed = [], {}

    def measure():
        for name in BACKBONES:
            try:  # one backbone that fails leaves the others' rows standing
                rows.append(table_row(name, ds10, tmp_path))
            except Exception as err:  # reported with the table, then the test fails
                failed[name] = f"{type(err).__name__}: {err}"
                rows.append([name, *["error"] * (len(HEADERS) - 1)])

    benchmark.pedantic(measure, rounds=1, iterations=1)
    table = tabulate(rows, HEADERS, tablefmt="github", floatfmt=("", ".1f", ".1f", ".2f", ".1e",
                                                                   ".1f"))
    report(f"runtime table ({IMAGES} images, {', '.join(f'{k} {v}' for k, v in TF_IMAGES.items())}"
           f" in TensorFlow; {SIZE}x{SIZE}, batch {BATCH}, random weights; load {before:.2f} -> "
           f"{getloadavg()[0]:.2f}):\n{table}")
    assert not failed, failed
    assert all(np.isfinite(row[1:]).all() and row[3] > 0 for row in rows)
