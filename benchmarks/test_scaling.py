"""(d) Extraction over 1k, 2k, 5k and 10k images: time per image and peak memory.

Peak memory is the process's resident high-water mark (VmHWM), reset before each extraction
through /proc/self/clear_refs, minus what was resident just before: what the extraction
itself added. Upscaled to 160x160 float32, 10,000 images would be 3 GB; the features of
MobileNet_0.25 are 1 KB an image.
"""

from __future__ import annotations

import re
import time
from os import getloadavg
from pathlib import Path

import keras
import pytest

from backbones import get
from bench.config import RunConfig
from bench.engine import features, runtimes
from bench.weights import resolve_weights

SIZE = 160
COUNTS = (1000, 2000, 5000, 10000)

# the inference batch measured fastest on this machine (test_extraction.py, PERF.md)
EXTRACT_BATCH_SIZE = 16


def _status_kb(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE).group(1))


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        return False
    return True


def test_d_extraction_scales_linearly(data10k, weights_dir, report, benchmark):
    config = RunConfig(weights_dir=str(weights_dir), extract_batch_size=EXTRACT_BATCH_SIZE,
                       verbose=0)
    spec = get("MobileNet_0.25")
    keras.utils.set_random_seed(config.seed)
    backbone = features.build_backbone(spec, SIZE, config,
                                       resolve_weights(spec, SIZE, config))
    inputs, outputs = features.backbone_graph(spec, backbone, SIZE, config, data10k.image_shape,
                                              "uint8")
    images = data10k.train_images
    bs = config.extract_batch_size
    # what a run's TensorFlow extraction does (the runtime the cached route uses)
    runtime = runtimes.TensorFlowRuntime(keras.Model(inputs, outputs), data10k.image_shape,
                                         "uint8", bs)
    runtimes.extract(runtime, images[:bs * 4], verbose=0)  # tracing, allocator warm-up
    before = getloadavg()[0]
    rows = []
    for n in COUNTS:
        resident = _status_kb("VmRSS")
        can_reset = _reset_peak()
        start = time.perf_counter()
        out = runtimes.extract(runtime, images[:n], verbose=0)
        seconds = time.perf_counter() - start
        peak_mb = (_status_kb("VmHWM") - resident) / 1024 if can_reset else float("nan")
        rows.append((n, seconds / n * 1e3, peak_mb, out.nbytes / 2**20))
        del out
    benchmark.pedantic(runtimes.extract, args=(runtime, images[:COUNTS[0]]),
                       kwargs={"verbose": 0}, rounds=1, iterations=1)
    per_image = [ms for _, ms, _, _ in rows]
    spread = max(per_image) / min(per_image)
    extra = [peak - feats for _, _, peak, feats in rows]
    report("scaling d (MobileNet_0.25, 32->160, batch " + str(bs) + "): " + "; ".join(
        f"{n}: {ms:.2f} ms/img, peak +{peak:.0f} MB (features {feats:.0f} MB)"
        for n, ms, peak, feats in rows))
    report(f"ratio d: slowest / fastest time per image = {spread:.3f} (target <= 1.15: "
           f"{'met' if spread <= 1.15 else 'MISSED'}); peak beyond the features: "
           f"{min(extra):.0f}..{max(extra):.0f} MB across N = 1k..10k (an upscaled copy of 10k "
           f"images would be 2930 MB); load {before:.2f} -> {getloadavg()[0]:.2f}")
    if not _reset_peak():
        pytest.skip("/proc/self/clear_refs is not writable: peak memory not measured")
    assert max(extra) - min(extra) < 64, "peak memory grows with N beyond the features"
