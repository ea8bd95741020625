import json
from dataclasses import replace

import keras
import numpy as np
import pytest

from backbones import get
from bench.cache import reset_process_caches
from bench.config import RunConfig
from bench.engine import cost, features, routes, runtimes
from bench.identity import identify


def test_flops_of_one_conv2d_layer_are_its_multiply_adds_plus_bias():
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, padding="same")])
    # 2 FLOPs per multiply-add: 8*8 positions x 3*3*3 inputs x 4 filters, + 8*8*4 bias adds
    assert cost.graph_stats(model, (8, 8, 3)).flops == 2 * 8 * 8 * 3 * 3 * 3 * 4 + 8 * 8 * 4


def test_flops_of_one_dense_layer():
    model = keras.Sequential([keras.Input((100,)), keras.layers.Dense(7)])
    assert cost.graph_stats(model, (100,)).flops == 2 * 100 * 7 + 7


@pytest.mark.parametrize("name, published_mmacs", [
    ("MobileNet", 569),  # Howard et al. 2017, table 8: 1.0 MobileNet-224, 569 M mult-adds
    ("MobileNet_0.25", 41),  # ibid., 0.25 MobileNet-224, 41 M mult-adds
])
def test_mobilenet_flops_match_the_paper(name, published_mmacs, tmp_path):
    flops = cost.backbone_stats(get(name), 224, "avg", store=tmp_path).flops
    # FLOPs = 2 x mult-adds (+ a few % of batch-norm, bias and pooling arithmetic)
    assert flops / 2e6 == pytest.approx(published_mmacs, rel=0.04)
    assert (tmp_path / "graph-stats.json").exists()


def test_graph_stats_count_activations_and_ops():
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, padding="same"),
                              keras.layers.ReLU()])
    stats = cost.graph_stats(model, (8, 8, 3))
    # the convolution, its bias add and the relu each write 8*8*4 values
    assert stats.activations == 3 * 8 * 8 * 4
    assert stats.ops > 3 and stats.gflops == stats.flops / 1e9
    assert stats.called == 0 and stats.params == 4 * 3 * 3 * 3 + 4


def test_grouped_convolutions_are_counted_apart_and_predicted_at_their_own_rate():
    # Keras runs a grouped Conv2D (ConvNeXt's depthwise 7x7) as a nested XLA-compiled call in
    # TensorFlow: its values are counted apart, and cost the calibration's grouped-conv rate
    grouped = keras.Sequential([keras.Input((8, 8, 6)),
                                keras.layers.Conv2D(6, 7, padding="same", groups=6)])
    stats = cost.graph_stats(grouped, (8, 8, 6))
    assert stats.called == 8 * 8 * 6
    calibration = cost.Calibration(seconds_per_gflop=0.0, seconds_per_mvalue=0.0,
                                   trace_seconds_per_op=0.0, seconds_per_mcalled=2.0)
    assert calibration.predict(stats, 1000) == pytest.approx(1000 * 8 * 8 * 6 / 1e6 * 2.0)
    assert cost.grouped_conv_seconds_per_mvalue((2, 8, 8, 6)) > 0


def test_estimate_scales_with_images_and_flags_what_cannot_be_built(tmp_path):
    config = RunConfig(image_size=32, cache_dir=str(tmp_path))
    calibration = cost.Calibration(seconds_per_gflop=1.0, seconds_per_mvalue=0.5,
                                   trace_seconds_per_op=0.001)
    rows = cost.estimate([get("MobileNet_0.25"), get("Xception")], config, 1000, calibration)
    assert [r["backbone"] for r in rows] == ["MobileNet_0.25", "Xception"]
    assert all(set(r) == set(cost.COLUMNS) for r in rows)
    mobile, xception = rows
    stats = cost.estimated_stats(get("MobileNet_0.25"), 32, "max", tmp_path)
    assert mobile["image_size"] == 32 and mobile["gflops"] == stats.gflops > 0
    assert mobile["predicted_extract_s"] == pytest.approx(
        stats.ops * 0.001 + 1000 * (stats.gflops + 0.5 * stats.activations / 1e6))
    assert xception["gflops"] is None and "71" in xception["note"]  # Xception's minimum side


def test_calibration_times_the_references_through_the_extraction_path():
    calibration = cost.calibrate(RunConfig(image_size=32, extract_batch_size=4), (16, 16, 3),
                                 references=(("VGG16", 4), ("MobileNet_0.25", 8)))
    assert [t[:2] for t in calibration.timings] == [("VGG16", 4), ("MobileNet_0.25", 8)]
    # the references took time, so the solved rates cannot both be zero
    assert calibration.seconds_per_gflop + calibration.seconds_per_mvalue > 0
    assert calibration.trace_seconds_per_op > 0


def _tiny_extractor() -> keras.Model:
    inputs = keras.Input((8, 8, 3), dtype="uint8")
    x = keras.layers.Conv2D(4, 3)(keras.layers.Rescaling(1 / 255)(inputs))
    return keras.Model(inputs, keras.layers.GlobalMaxPooling2D()(x))


def test_inference_time_leaves_out_the_first_batch_only():
    extractor, timer = _tiny_extractor(), features.ForwardTimer()
    images = np.zeros((5, 8, 8, 3), np.uint8)

    def extract(x, batch_size, timer):
        runtime = runtimes.TensorFlowRuntime(extractor, x.shape[1:], "uint8", batch_size)
        runtimes.extract(runtime, x, verbose=0, timer=timer)

    extract(images, 2, timer)  # batches of 2, 2, 1
    assert (timer.batches_seen, timer.images) == (3, 3)
    extract(images[:3], 2, timer)  # a second split counts
    assert (timer.batches_seen, timer.images) == (5, 6)
    assert timer.ms_per_image == pytest.approx(1000 * timer.seconds / 6) and timer.seconds > 0
    one_batch = features.ForwardTimer()
    extract(images, 8, one_batch)
    assert one_batch.ms_per_image is None  # tracing alone is no steady state


def test_cached_path_measures_inference_and_keeps_it_with_the_cached_features(tiny_data,
                                                                              tmp_path, capsys):
    spec = get("MobileNet_0.25")
    config = RunConfig(image_size=32, epochs=1, weights="random", cache_dir=str(tmp_path),
                       verbose=0)
    ident = identify(spec, config, tiny_data)
    measured = routes.cached(spec, config, tiny_data, ident)
    assert not measured.features_cached and measured.infer_ms > 0
    reset_process_caches()
    from_disk = routes.cached(spec, config, tiny_data, ident)
    assert from_disk.features_cached and from_disk.infer_ms == measured.infer_ms
    # a file that lacks what its format records is damaged: recomputed, never read as zero
    (path,) = tmp_path.glob("*.npz")
    with np.load(path) as f:
        arrays = dict(f)
    meta = json.loads(bytes(arrays["meta"]).decode())
    del meta["infer_ms"]
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **arrays)
    reset_process_caches()
    again = routes.cached(spec, config, tiny_data, ident)
    assert not again.features_cached and again.infer_ms > 0
    assert "is corrupt (unreadable (KeyError" in capsys.readouterr().err


def test_a_rows_gflops_are_the_backbones_counted_once_and_none_without_a_backbone(tmp_path):
    config = RunConfig(image_size=32, cache_dir=str(tmp_path))
    gflops = cost.run_gflops(get("MobileNet_0.25"), 32, config)
    assert gflops == cost.backbone_stats(get("MobileNet_0.25"), 32, "max").gflops > 0
    assert (tmp_path / "graph-stats.json").exists()
    assert cost.run_gflops(get("scratch-cnn"), 32, config) is None
    assert cost.run_gflops(get("Xception"), 32, config) is None  # cannot be built at 32
    # --no-cache concerns features only: the counts do not depend on the data and are kept
    no_cache = tmp_path / "off"
    cost.run_gflops(get("MobileNet_0.25"), 48, replace(config, cache=False,
                                                       cache_dir=str(no_cache)))
    assert (no_cache / "graph-stats.json").exists()


def test_random_weights_add_a_batchnorm_pass_priced_as_calibrated(tmp_path):
    """Recorded numbers: a calibration whose training-mode pass costs 1.5 inference passes an
    image and traces 1.6x as long adds exactly that for random weights; nothing for ImageNet
    weights, nor for a family without BatchNormalization."""
    calibration = cost.Calibration(0.003, 0.0005, 0.0006, (), "tensorflow",
                                   batchnorm_per_forward=1.5, batchnorm_trace_per_trace=1.6)
    plain = replace(calibration, batchnorm_per_forward=1.0, batchnorm_trace_per_trace=1.0)

    def setup(name: str, weights: str, cal: cost.Calibration) -> float:
        config = RunConfig(weights=weights, runtime="tensorflow", cache_dir=str(tmp_path))
        (row,) = cost.estimate([get(name)], config, 1171, cal, n_train=878)
        return row["predicted_build_s"]

    stats = cost.estimated_stats(get("DenseNet121"), 160)
    rate = 1 / (calibration.predict(stats, 1) - calibration.predict(stats, 0))
    extra = (calibration.predict(stats, 0) * 0.6 + 256 * 0.5 / rate)
    assert setup("DenseNet121", "random", calibration) == pytest.approx(
        setup("DenseNet121", "random", plain) + extra)
    built = calibration.predict_build(stats)
    assert setup("DenseNet121", "imagenet", calibration) == pytest.approx(built)
    assert setup("VGG16", "random", calibration) == pytest.approx(
        calibration.predict_build(cost.estimated_stats(get("VGG16"), 160)))


def test_the_calibrated_batchnorm_pass_is_the_one_a_run_makes():
    """cost.calibrate times features.batchnorm_pass, the step reestimate_batchnorm runs: the
    ratios are at least 1, and the backbone is frozen again with its momentums after."""
    spec = get("MobileNet_0.25")
    config = RunConfig(image_size=32)
    backbone = spec.build(32, pooling="max", weights=None)
    backbone.trainable = False
    momentum = [layer.momentum for layer in backbone.layers
                if isinstance(layer, keras.layers.BatchNormalization)]
    images = np.random.default_rng(0).integers(0, 256, (64, 16, 16, 3), dtype=np.uint8)
    per_image, trace = cost._batchnorm_pass(spec, backbone, 32, config, images, 1e-6, 1e-6)
    assert per_image > 1 and trace > 1
    assert not backbone.trainable and momentum == [
        layer.momentum for layer in backbone.layers
        if isinstance(layer, keras.layers.BatchNormalization)]
