import keras
import pytest

from backbones import get
from bench.config import RunConfig
from bench.engine import cost


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


def test_estimate_scales_with_images_and_flags_what_cannot_be_built(tmp_path):
    config = RunConfig(image_size=32, cache_dir=str(tmp_path))
    calibration = cost.Calibration(seconds_per_gflop=1.0, seconds_per_mvalue=0.5,
                                   trace_seconds_per_op=0.001)
    rows = cost.estimate([get("MobileNet_0.25"), get("Xception")], config, 1000, calibration)
    assert [r["backbone"] for r in rows] == ["MobileNet_0.25", "Xception"]
    assert all(set(r) == set(cost.COLUMNS) for r in rows)
    mobile, xception = rows
    stats = cost.backbone_stats(get("MobileNet_0.25"), 32, "max", tmp_path)
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
