"""The cost model against a measured 5-backbone extraction sweep (random weights, 160 px)."""

from __future__ import annotations

import time
from os import getloadavg

import keras

from backbones import get
from bench.config import RunConfig
from bench.engine import cost, features, runtimes
from bench.weights import resolve_weights

SWEEP = ("MobileNet_0.25", "MobileNetV2", "EfficientNetB0", "ResNet50", "DenseNet121")
N_IMAGES = 128

# the inference batch measured fastest on this machine (test_extraction.py, PERF.md)
EXTRACT_BATCH_SIZE = 16


def test_cost_model_predicts_a_5_backbone_sweep(ds10, report, benchmark):
    config = RunConfig(weights="random", extract_batch_size=EXTRACT_BATCH_SIZE, verbose=0)
    images = ds10.train_images[:N_IMAGES]
    before = getloadavg()[0]
    calibration = benchmark.pedantic(cost.calibrate, args=(config, ds10.image_shape),
                                     rounds=1, iterations=1)
    rows = cost.estimate([get(n) for n in SWEEP], config, N_IMAGES, calibration,
                         ds10.image_shape)
    report("cost calibration: " + ", ".join(
        f"{name} {n} images in {s:.2f} s (first call {first:.2f} s)"
        for name, n, s, first in calibration.timings)
        + f" -> {calibration.seconds_per_gflop * 1e3:.2f} ms/GFLOP, "
        f"{calibration.seconds_per_mvalue * 1e3:.3f} ms per million activations, "
        f"{calibration.trace_seconds_per_op * 1e3:.2f} ms per graph op; load {before:.2f}")
    errors = []
    for row in rows:
        spec = get(row["backbone"])
        keras.utils.set_random_seed(config.seed)
        backbone = features.build_backbone(spec, row["image_size"], config,
                                           resolve_weights(spec, 160, config))
        inputs, outputs = features.backbone_graph(spec, backbone, row["image_size"], config,
                                                  ds10.image_shape, "uint8")
        extractor = keras.Model(inputs, outputs)
        start = time.perf_counter()  # what a run's extract_s holds: tracing included
        runtime = runtimes.TensorFlowRuntime(extractor, ds10.image_shape, "uint8",
                                             config.extract_batch_size)
        runtimes.extract(runtime, images, verbose=0)
        measured = time.perf_counter() - start
        predicted = row["predicted_extract_s"]
        errors.append(predicted / measured)
        report(f"cost {row['backbone']}: {row['gflops']:.3f} GFLOPs/img, predicted "
               f"{predicted:.1f} s, measured {measured:.1f} s for {N_IMAGES} images "
               f"(predicted/measured {predicted / measured:.2f}); load {getloadavg()[0]:.2f}")
        del extractor, backbone
        keras.backend.clear_session()
    report(f"cost model over the sweep: predicted/measured {min(errors):.2f}..{max(errors):.2f},"
           f" total predicted {sum(r['predicted_extract_s'] for r in rows):.1f} s")
