"""Where an OpenVINO conversion's seconds go, by the route bench took before (SavedModel export)
and the one it takes now (the traced function frozen), and what --all is predicted to cost with
nothing cached and with the conversions cached (results/PERF.md, section g)."""

from __future__ import annotations

import shutil
import tempfile
import time
from os import getloadavg
from pathlib import Path

import keras
import numpy as np
import openvino
import pytest

from backbones import baselines, canonical, get
from bench.config import RunConfig
from bench.engine import cost, features, openvino_backend
from bench.weights import resolve_weights

SIZE, BATCH = 160, 16
CONVERTED = ("DenseNet121", "ResNet50", "ConvNeXtTiny")


def _timed(call):
    start = time.perf_counter()
    value = call()
    return value, time.perf_counter() - start


def _compile(xml: Path, store: Path | None) -> tuple[openvino_backend.CompiledBackbone, float]:
    return _timed(lambda: openvino_backend.CompiledBackbone(xml, BATCH, SIZE, store))


@pytest.mark.parametrize("name", CONVERTED)
def test_conversion_split(name, report, tmp_path):
    spec = get(name)
    config = RunConfig(weights="random", image_size=SIZE, verbose=0)
    keras.utils.set_random_seed(config.seed)
    backbone = features.build_backbone(spec, SIZE, config, resolve_weights(spec, SIZE, config))
    load = getloadavg()[0]
    work = Path(tempfile.mkdtemp(dir=tmp_path))
    # before: the SavedModel route
    _, export_s = _timed(lambda: backbone.export(str(work / "saved"), format="tf_saved_model",
                                                 verbose=False))
    model, convert_s = _timed(lambda: openvino.convert_model(str(work / "saved")))
    _, save_s = _timed(lambda: openvino.save_model(model, str(work / "before" / "model.xml"),
                                                   compress_to_fp16=False))
    shutil.rmtree(work / "saved")
    # now: the traced function frozen, converted in memory (None: nested calls, SavedModel)
    graph, freeze_s = _timed(lambda: openvino_backend._frozen_graph(backbone))
    after = "SavedModel (nested XLA calls)"
    if graph is not None:
        model, now_convert_s = _timed(lambda: openvino.convert_model(graph))
        _, now_save_s = _timed(lambda: openvino.save_model(
            model, str(work / "after" / "model.xml"), compress_to_fp16=False))
        after = (f"freeze {freeze_s:.2f} + convert {now_convert_s:.2f} + save "
                 f"{now_save_s:.2f} = {freeze_s + now_convert_s + now_save_s:.2f} s")
    # compiling: the first fills OpenVINO's CACHE_DIR, the second reads it
    xml = work / ("after" if graph is not None else "before") / "model.xml"
    first, fill_s = _compile(xml, tmp_path / "store")
    _, cached_s = _compile(xml, tmp_path / "store")
    _, plain_s = _compile(xml, None)
    report(f"conversion {name}: before (SavedModel) export {export_s:.2f} + convert "
           f"{convert_s:.2f} + save {save_s:.2f} = {export_s + convert_s + save_s:.2f} s; "
           f"now {after}; compile {plain_s:.2f} s (CACHE_DIR: filling {fill_s:.2f}, from it "
           f"{cached_s:.2f}); load {load:.2f}")
    images = np.random.default_rng(0).random((BATCH, SIZE, SIZE, 3), dtype=np.float32)
    if graph is not None:  # the two routes compute the same features
        before, _ = _compile(work / "before" / "model.xml", None)
        want = before(images)
        assert np.max(np.abs(first(images) - want)) <= 1e-5 * np.max(np.abs(want))


def test_all_predicted_cold_and_warm(ds10, report):
    """`python -m bench --all --dry-run` at 160 on the lesson-sized data: totals with nothing
    cached, with the conversions cached, and TensorFlow alone."""
    config = RunConfig(image_size=SIZE, verbose=0)
    n_images, shape = ds10.n_train + ds10.n_test, ds10.image_shape
    load = getloadavg()[0]
    calibrations = {name: cost.calibrate(config, shape, runtime=name)
                    for name in cost.runtimes_to_calibrate(config)}
    rows = cost.estimate(canonical() + baselines(), config, n_images, calibrations, shape)
    cold = sum(r["predicted_extract_s"] or 0.0 for r in rows)
    warm = sum(r["predicted_warm_s"] or 0.0 for r in rows)
    alone = sum(r["predicted_tensorflow_s"] or 0.0 for r in rows)
    assert warm <= cold <= alone
    report(f"--all predicted at {SIZE} px, {n_images} images ({len(rows)} rows): TensorFlow "
           f"alone {alone:.0f} s, auto with nothing cached {cold:.0f} s ({alone / cold:.2f}x "
           f"shorter), with conversions cached {warm:.0f} s ({alone / warm:.2f}x shorter); "
           f"OpenVINO for {sum(r['runtime'] == 'openvino' for r in rows)} cold, "
           f"{sum(r.get('warm_runtime') == 'openvino' for r in rows)} warm; load {load:.2f}")
