import numpy as np
import pytest
from conftest import assert_histories_close

from backbones import get
from bench.cache import reset_process_caches
from bench.config import RunConfig
from bench.engine.runner import run_one

QUIET = dict(verbose=0)


@pytest.mark.parametrize("name", ["MobileNet_0.25", "EfficientNetB0", "EfficientNetV2B0"])
def test_cached_and_end_to_end_paths_agree(tiny_data, name):
    """Same seed, same head, same batches: the same training, epoch by epoch. EfficientNet and
    EfficientNetV2 hold stochastic-depth dropout, which an outer fit's training=True would
    switch on in the end-to-end model only (test_loss then differs by 1e-4 to 1e-3)."""
    spec = get(name)
    config = RunConfig(image_size=32, epochs=4, patience=0, weights="random", **QUIET)
    cached = run_one(spec, config, tiny_data)
    e2e = run_one(spec, RunConfig(**{**config.to_dict(), "end_to_end": True}), tiny_data)
    assert cached.ok and e2e.ok, (cached.error, e2e.error)
    assert (cached.route, e2e.route) == ("cached", "end-to-end")
    # losses within 1e-5 per epoch: dropout left on in the backbone moves them by 1e-4 to 1e-3
    assert_histories_close(e2e.history, cached.history, n=tiny_data.n_test)
    assert (cached.params_total, cached.params_trainable) == (e2e.params_total,
                                                              e2e.params_trainable)
    assert cached.extract_s > 0 and e2e.extract_s == 0


def test_densenet121_parameter_counts_match_the_lesson(tiny_data):
    # lesson: model.summary() reports 7,093,360 parameters, 53,808 trainable
    from bench.data import from_arrays

    ten = from_arrays(
        np.repeat(tiny_data.train_images[:10], 2, axis=0), np.arange(20) % 10,
        tiny_data.test_images[:10], np.arange(10) % 10,
    )
    result = run_one(get("DenseNet121"), RunConfig(epochs=1, weights="random", **QUIET), ten)
    assert result.ok, result.error
    assert result.params_total == 7_093_360
    assert result.params_trainable == 53_808
    assert result.feature_width == 1024 and result.image_size == 160


def test_row_describes_the_run(tiny_data):
    r = run_one(get("MobileNet_0.25"),
                RunConfig(image_size=32, epochs=3, patience=0, weights="random", seed=7, **QUIET),
                tiny_data)
    assert r.ok
    assert r.weights == "random" and r.weights_file is None
    assert (r.seed, r.image_size, r.epochs_run, r.n_train, r.n_test, r.n_classes) == (
        7, 32, 3, tiny_data.n_train, tiny_data.n_test, 3)
    assert set(r.history) == {"accuracy", "test_accuracy", "loss", "test_loss"}
    assert r.test_accuracy == r.history["test_accuracy"][-1]
    assert r.best_epoch_accuracy == max(r.history["test_accuracy"])
    assert r.epoch_s == pytest.approx(float(np.median(r.epoch_times[1:])))
    assert r.keras_version and r.tf_version and r.started_at


def test_image_size_below_minimum_is_an_error_row_naming_it(tiny_data):
    r = run_one(get("Xception"), RunConfig(image_size=32, weights="random", **QUIET), tiny_data)
    assert r.status == "error"
    assert "71" in r.error and "Xception" in r.error


def test_missing_imagenet_weights_fail_the_row_never_fall_back(tiny_data, monkeypatch, tmp_path):
    import keras.src.utils.file_utils as file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://example.invalid: None -- no network")

    monkeypatch.setattr(file_utils, "get_file", offline)
    for module in ("densenet", "mobilenet"):
        monkeypatch.setattr(f"keras.src.applications.{module}.file_utils.get_file", offline)
    r = run_one(get("DenseNet121"), RunConfig(epochs=1, weights_dir=str(tmp_path), **QUIET),
                tiny_data)
    assert r.status == "error"
    assert "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5" in r.error
    assert "--weights-dir" in r.error
    assert r.test_accuracy is None


def test_corrupt_weights_file_is_an_error_row_naming_it(tiny_data, tmp_path):
    bad = tmp_path / "mobilenet_2_5_224_tf_no_top.h5"
    bad.write_bytes(b"not an hdf5 file" * 64)
    r = run_one(get("MobileNet_0.25"),
                RunConfig(image_size=32, epochs=1, weights_dir=str(tmp_path), **QUIET), tiny_data)
    assert r.status == "error"
    assert str(bad) in r.error


def test_weights_dir_uses_the_nearest_resolution_and_says_so(tiny_data, real_weights_dir):
    r = run_one(get("MobileNet_0.25"), RunConfig(epochs=1, weights_dir=str(real_weights_dir),
                                                 **QUIET), tiny_data)
    assert r.ok, r.error
    assert r.weights == r.weights_file == "mobilenet_2_5_224_tf_no_top.h5"
    assert r.weights_substituted_for == "mobilenet_2_5_160_tf_no_top.h5"
    assert any("mobilenet_2_5_160_tf_no_top.h5" in note for note in r.notes)


@pytest.fixture
def mobilenet_file(tmp_path):
    """MobileNet_0.25's weights (random values) under Keras' own 224 file name."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    model = get("MobileNet_0.25").build(32, weights=None)
    path = tmp_path / "weights" / "mobilenet_2_5_224_tf_no_top.h5"
    path.parent.mkdir()
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    return path


def test_rows_name_weights_files_never_local_paths(tiny_data, mobilenet_file):
    from bench.identity import file_sha256

    spec = get("MobileNet_0.25")
    by_file = run_one(spec, RunConfig(image_size=32, epochs=1, weights=str(mobilenet_file),
                                      **QUIET), tiny_data)
    # no 128 file: the 224 one stands in for Keras' exact file at 128 px
    by_dir = run_one(spec, RunConfig(image_size=128, epochs=1,
                                     weights_dir=str(mobilenet_file.parent), **QUIET), tiny_data)
    assert by_file.ok and by_dir.ok, (by_file.error, by_dir.error)
    for r in (by_file, by_dir):
        assert r.weights == r.weights_file == mobilenet_file.name
        assert r.weights_sha256 == file_sha256(mobilenet_file)
        assert str(mobilenet_file.parent) not in "".join(r.notes)
    assert by_file.weights_substituted_for is None
    assert by_dir.weights_substituted_for == "mobilenet_2_5_128_tf_no_top.h5"


def test_a_missing_weights_file_is_an_error_row_naming_the_file_only(tiny_data, tmp_path):
    missing = tmp_path / "nowhere" / "weights.h5"
    r = run_one(get("MobileNet_0.25"), RunConfig(image_size=32, weights=str(missing), **QUIET),
                tiny_data)
    assert r.status == "error" and str(missing) in r.error
    assert r.weights == "weights.h5"


def test_rows_sharing_a_config_hash_are_one_experiment(tiny_data, mobilenet_file):
    """The holdout split is drawn from the backbone seed: seed 3 of `--seeds 2` (the split of
    seed 2) and a later `--seed 3` (its own split) are two experiments, with two hashes."""
    from bench.engine.splits import make_splits
    from bench.identity import identify

    base = dict(image_size=32, epochs=2, patience=0, protocol="holdout",
                weights=str(mobilenet_file), **QUIET)
    configs = [*RunConfig(seeds=2, **base).per_seed(), RunConfig(seed=3, **base)]
    second, single = configs[1], configs[2]
    assert second.seed == single.seed == 3

    def split(config):
        return make_splits(tiny_data.train_images, tiny_data.test_images, tiny_data, config).x_watch

    same_split = np.array_equal(split(second), split(single))
    same_hash = (identify(get("MobileNet_0.25"), second, tiny_data).config_hash
                 == identify(get("MobileNet_0.25"), single, tiny_data).config_hash)
    assert same_split or not same_hash
    rows = [run_one(get("MobileNet_0.25"), c, tiny_data) for c in configs + configs[:1]]
    assert all(r.ok for r in rows), [r.error for r in rows]
    by_hash: dict[str, list] = {}
    for r in rows:
        by_hash.setdefault(r.config_hash, []).append(r.predictions)
    assert len(by_hash) == 3
    assert all(p == predictions[0] for predictions in by_hash.values() for p in predictions)


def test_lesson_preprocessing_is_flagged_for_models_expecting_0_255(tiny_data):
    r = run_one(get("MobileNetV3Small"),
                RunConfig(image_size=32, epochs=1, weights="random", preprocess="lesson", **QUIET),
                tiny_data)
    assert r.ok, r.error
    assert any("0-255" in note for note in r.notes)


def test_imagenet_weights_beat_random_on_real_photos(real_weights_dir, real_data_dir):
    """The lesson protocol on the CIFAR stand-in: real features learn, random ones do not."""
    from bench.data import load_dataset

    data = load_dataset(real_data_dir)
    spec = get("MobileNet_0.25")
    pretrained = run_one(spec, RunConfig(weights_dir=str(real_weights_dir), **QUIET), data)
    random = run_one(spec, RunConfig(weights="random", **QUIET), data)
    assert pretrained.ok and random.ok
    assert pretrained.test_accuracy >= 0.5, pretrained.history["test_accuracy"]
    assert random.test_accuracy <= 0.2, random.history["test_accuracy"]


# --- trustworthy comparisons ------------------------------------------------------------------

def test_rows_carry_predictions_per_class_results_and_provenance(tiny_data):
    r = run_one(get("MobileNet_0.25"),
                RunConfig(image_size=32, epochs=3, patience=0, weights="random", **QUIET),
                tiny_data)
    assert r.ok, r.error
    assert r.labels == tiny_data.test_labels.tolist() and len(r.predictions) == tiny_data.n_test
    # under the lesson protocol the reported val accuracy is the test file's, at the last epoch
    assert np.mean(np.array(r.predictions) == np.array(r.labels)) == pytest.approx(
        r.test_accuracy, abs=1e-6)
    assert len(r.per_class_accuracy) == 3 and r.class_names == list(tiny_data.class_names)
    assert 0 <= r.balanced_accuracy <= 1 and 0 <= r.macro_f1 <= 1
    assert r.python_version and r.numpy_version and r.device.startswith(("CPU", "GPU"))
    assert r.data_checksum == tiny_data.checksum() and r.protocol == "lesson"
    assert r.imagenet_top1 == get("MobileNet_0.25").top1 and r.group and r.config_hash


def test_seeds_share_one_extraction_and_differ_only_in_the_head(tiny_data):
    config = RunConfig(image_size=32, epochs=3, patience=0, weights="random", seeds=3,
                       cache=False, **QUIET)
    rows = [run_one(get("MobileNet_0.25"), c, tiny_data) for c in config.per_seed()]
    assert [r.seed for r in rows] == [2, 3, 4]
    assert [r.features_cached for r in rows] == [False, True, True]  # one extraction
    assert len({r.group for r in rows}) == 1 and len({r.config_hash for r in rows}) == 3
    assert len({r.weights_id for r in rows}) == 1  # one random backbone, drawn from seed 2
    assert not np.allclose(rows[0].history["loss"], rows[1].history["loss"], rtol=0, atol=1e-3)
    reset_process_caches()  # the first seed again, its features extracted anew
    single = run_one(get("MobileNet_0.25"), config.per_seed()[0], tiny_data)
    assert not single.features_cached
    assert_histories_close(single.history, rows[0].history, n=tiny_data.n_test)


def test_holdout_never_lets_the_test_labels_reach_training(tiny_data):
    """Training and early stopping are identical whatever the test labels say."""
    from bench.data import from_arrays

    config = RunConfig(image_size=32, epochs=6, patience=2, weights="random",
                       protocol="holdout", **QUIET)
    a = run_one(get("MobileNet_0.25"), config, tiny_data)
    assert a.ok, a.error
    # test labels that agree with a's predictions (but for two, so no class is left empty)
    relabelled = np.array(a.predictions)
    relabelled[:2] = (relabelled[:2] + np.array([1, 2])) % 3
    other = from_arrays(tiny_data.train_images, tiny_data.train_labels,
                        tiny_data.test_images, relabelled, source="synthetic-relabelled")
    b = run_one(get("MobileNet_0.25"), config, other)
    assert b.ok, b.error
    # every history but the test file's, which holdout records after each epoch and never uses
    assert_histories_close({k: v for k, v in b.history.items() if k != "test_accuracy"},
                           {k: v for k, v in a.history.items() if k != "test_accuracy"},
                           n=tiny_data.n_test)
    assert a.predictions == b.predictions
    assert len(a.history["test_accuracy"]) == len(a.history["holdout_accuracy"])
    assert a.test_chosen_epoch == 1 + int(np.argmax(a.history["test_accuracy"]))
    assert len(a.test_chosen_predictions) == tiny_data.n_test
    assert b.test_accuracy == pytest.approx(1 - 2 / len(relabelled))
    assert a.test_accuracy != b.test_accuracy
    assert a.protocol == "holdout" and a.labels == tiny_data.test_labels.tolist()
    # the split holds out a fifth of each class of train, which early stopping watches
    assert a.test_accuracy == pytest.approx(np.mean(np.array(a.predictions) == a.labels))


def test_holdout_split_is_stratified_and_seeded():
    from bench.engine.splits import holdout_split

    labels = np.repeat(np.arange(4), 25)
    tr, va = holdout_split(labels, 0.2, seed=2)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == 100
    assert np.bincount(labels[va]).tolist() == [5, 5, 5, 5]
    np.testing.assert_array_equal(va, holdout_split(labels, 0.2, seed=2)[1])
    assert not np.array_equal(va, holdout_split(labels, 0.2, seed=3)[1])


@pytest.mark.parametrize("name, params", [
    # Conv 3*3*3*50+50, Conv 3*3*50*50+50, Dense 14*14*50*50+50, Dense 50*10+10 on 64x64 images
    ("scratch-cnn", 1_400 + 22_550 + 490_050 + 510),
    # Dense 64*64*3*50+50, Dense 50*50+50, Dense 50*10+10
    ("dense", 614_450 + 2_550 + 510),
])
def test_baselines_are_the_previous_episodes_models(name, params):
    from bench.data import from_arrays

    rng = np.random.default_rng(0)
    data = from_arrays(rng.integers(0, 255, (40, 64, 64, 3), dtype=np.uint8), np.arange(40) % 10,
                       rng.integers(0, 255, (20, 64, 64, 3), dtype=np.uint8), np.arange(20) % 10)
    r = run_one(get(name), RunConfig(epochs=2, **QUIET), data)
    assert r.ok, r.error
    assert r.kind == "baseline" and r.route == "from-scratch" and r.image_size == 64
    assert r.params_total == r.params_trainable == params
    assert r.weights == "none (trained from scratch)" and r.preprocess == "lesson"
