"""The registry's stored FLOP counts (backbones/graph_stats.py): complete, equal to a fresh
count under the installed Keras, and close to one at the sides they are not stored at."""

import pytest

from backbones import get, rows
from backbones.graph_stats import per_pixel, stored_sides, stored_stats
from bench.config import RunConfig
from bench.engine import cost


def test_every_registry_backbone_is_stored_at_160_and_its_native_side():
    backbones = [r for r in rows() if r["family"] != "baseline"]
    assert len(backbones) > 40
    for row in backbones:
        assert set(stored_sides(row["name"])) == {160, row["input_size"]}, row["name"]
    assert stored_stats("not-a-backbone", 160) is None


@pytest.mark.parametrize(("name", "side"), [
    ("MobileNet_0.25", 160), ("DenseNet121", 224), ("EfficientNetB0", 160),
    ("InceptionV3", 299), ("ConvNeXtTiny", 160), ("MobileNetV3Small", 224)])
def test_stored_counts_equal_a_fresh_count(name, side):
    # integers counted from the graph's shapes: the same on every machine
    fresh = cost.graph_stats(get(name).build(side, weights=None), (side, side, 3))
    assert stored_stats(name, side) == fresh.__dict__


@pytest.mark.parametrize(("name", "sides"), [
    ("MobileNet_0.25", (32, 96, 200)), ("ResNet50", (64, 128, 256)),
    ("EfficientNetB0", (32, 96, 200)), ("InceptionV3", (96, 128, 256)),
    ("MobileNetV3Small", (32, 64, 331))])
def test_counts_between_and_beyond_the_stored_sides_are_within_a_quarter(name, sides):
    for side in sides:
        fresh = cost.graph_stats(get(name).build(side, weights=None), (side, side, 3))
        estimate = stored_stats(name, side)
        # a few padding operations come and go with the side
        assert estimate["params"] == fresh.params
        assert estimate["ops"] == pytest.approx(fresh.ops, rel=0.02)
        for key in ("flops", "activations"):
            assert estimate[key] == pytest.approx(getattr(fresh, key), rel=0.25), (side, key)


def test_per_pixel_follows_area_and_border():
    assert per_pixel(320, [(160, 100)]) == 400  # one side: the area
    # a s^2 + b s through both sides: exact for such a count
    def count(s):
        return 3 * s * s - 50 * s

    assert per_pixel(96, [(160, count(160)), (299, count(299))]) == count(96)
    # where the line would turn negative, the area
    assert per_pixel(8, [(160, count(160)), (299, count(299))]) == round(
        count(160) * (8 / 160) ** 2)


def test_a_dry_run_estimate_builds_no_registry_backbone(monkeypatch, tmp_path):
    from backbones.spec import BackboneSpec

    def refuse(self, *args, **kwargs):
        raise AssertionError(f"{self.name} was built")

    monkeypatch.setattr(BackboneSpec, "build", refuse)
    stats = cost.estimated_stats(get("DenseNet121"), 160, store=tmp_path)
    assert stats.gflops == pytest.approx(2.9, rel=0.05)
    # a row's gflops at a stored side is the stored count too
    config = RunConfig(cache_dir=str(tmp_path))
    assert cost.run_gflops(get("DenseNet121"), 160, config) == stats.gflops
    with pytest.raises(ValueError, match="at least 75x75"):
        cost.estimated_stats(get("InceptionV3"), 64, store=tmp_path)
