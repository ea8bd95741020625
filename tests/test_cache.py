import numpy as np
import pytest
from conftest import assert_histories_close

from backbones import get
from bench.cache import CachedFeatures, FeatureCache, feature_key, reset_process_caches
from bench.config import RunConfig
from bench.engine.runner import run_one


def _features(seed=0):
    rng = np.random.default_rng(seed)
    return CachedFeatures(rng.normal(size=(6, 4)).astype(np.float32),
                          rng.normal(size=(3, 4)).astype(np.float32), 1.5, 1234)


def test_round_trip_and_no_temporary_files_left(tmp_path):
    store = FeatureCache(tmp_path)
    key = feature_key(backbone="A", size=32)
    path = store.save(key, "A", _features())
    got = store.load(key, "A", 6, 3)
    np.testing.assert_array_equal(got.train, _features().train)
    assert (got.extract_s, got.params_backbone) == (1.5, 1234)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_key_covers_every_part():
    base = dict(data="d", backbone="A", weights="w", image_size=32, preprocess="native",
                pooling="max")
    keys = {feature_key(**base)}
    for part, other in [("data", "e"), ("backbone", "B"), ("weights", "v"), ("image_size", 64),
                        ("preprocess", "lesson"), ("pooling", "avg")]:
        keys.add(feature_key(**{**base, part: other}))
    assert len(keys) == 7


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip"])
def test_corrupt_file_is_reported_removed_and_never_used(tmp_path, damage):
    warnings = []
    store = FeatureCache(tmp_path, warn=warnings.append)
    key = feature_key(backbone="A")
    path = store.save(key, "A", _features())
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "garbage":
        raw = bytearray(b"x" * len(raw))
    else:  # one byte inside the train array: only the checksum can tell
        start = raw.index(b"NUMPY") + 200
        raw[start] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert store.load(key, "A", 6, 3) is None
    assert len(warnings) == 1 and str(path) in warnings[0] and "recomputing" in warnings[0]
    assert not path.exists()


def test_wrong_row_counts_are_refused(tmp_path):
    warnings = []
    store = FeatureCache(tmp_path, warn=warnings.append)
    key = feature_key(backbone="A")
    store.save(key, "A", _features())
    assert store.load(key, "A", 7, 3) is None
    assert "expected 7/3" in warnings[0]


@pytest.fixture
def weights_file(tmp_path):
    """A weights file of MobileNet_0.25 (random values): a stable identity across seeds."""
    import keras

    model = keras.applications.MobileNet(include_top=False, weights=None, input_shape=(32, 32, 3),
                                         pooling="max", alpha=0.25)
    path = tmp_path / "mobilenet_0.25.weights.h5"
    model.save_weights(path)
    return path


def test_another_seed_or_epochs_reuses_features_and_gives_the_same_result(tiny_data, tmp_path,
                                                                          weights_file):
    spec = get("MobileNet_0.25")
    base = dict(image_size=32, epochs=3, patience=0, weights=str(weights_file),
                cache_dir=str(tmp_path / "cache"), verbose=0)
    first = run_one(spec, RunConfig(**base), tiny_data)
    reseeded = run_one(spec, RunConfig(**{**base, "seed": 5}), tiny_data)
    longer = run_one(spec, RunConfig(**{**base, "epochs": 4}), tiny_data)
    again = run_one(spec, RunConfig(**base), tiny_data)
    assert first.ok and not first.features_cached
    assert reseeded.features_cached and longer.features_cached and again.features_cached
    # cached features train the head as the extracted ones did
    assert_histories_close(again.history, first.history, n=tiny_data.n_test)
    assert again.extract_s == first.extract_s  # the row keeps what extraction really cost
    assert again.params_total == first.params_total
    reset_process_caches()  # and the in-memory copy a K-seed run shares
    uncached = run_one(spec, RunConfig(**{**base, "cache": False}), tiny_data)
    assert not uncached.features_cached
    assert_histories_close(uncached.history, first.history, n=tiny_data.n_test)


def test_another_image_size_does_not_reuse(tiny_data, tmp_path, weights_file):
    spec = get("MobileNet_0.25")
    base = dict(epochs=1, weights=str(weights_file), cache_dir=str(tmp_path), verbose=0)
    run_one(spec, RunConfig(image_size=32, **base), tiny_data)
    assert not run_one(spec, RunConfig(image_size=40, **base), tiny_data).features_cached


def test_a_fifo_in_place_of_a_cache_file_is_recomputed_not_a_hang(tmp_path):
    import os

    warnings = []
    store = FeatureCache(tmp_path, warn=warnings.append)
    key = feature_key(backbone="A")
    os.mkfifo(store.path(key, "A"))
    assert store.load(key, "A", 6, 3) is None  # np.load on a FIFO would block forever
    assert len(warnings) == 1 and "not a regular file" in warnings[0]
    assert not store.path(key, "A").exists()
    assert store.save(key, "A", _features()) and store.load(key, "A", 6, 3) is not None
