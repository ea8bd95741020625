from dataclasses import replace

import numpy as np
import pytest

from backbones import get
from bench.config import PROBE_CHOICES, RunConfig
from bench.engine import probes, routes
from bench.engine.splits import Splits, holdout_split
from bench.identity import identify


def _features(n: int, n_classes: int = 4, width: int = 32, seed: int = 0):
    """Features whose class sets one coordinate high: separable by a line and by neighbours."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % n_classes
    x = rng.normal(size=(n, width)).astype(np.float32)
    x[np.arange(n), labels] += 4.0
    return x, labels


@pytest.fixture
def separable():
    return (*_features(160), *_features(80, seed=1))


@pytest.mark.parametrize("probe", [probes.linear, probes.knn], ids=["linear", "knn"])
def test_separable_features_score_high_and_shuffled_labels_near_chance(separable, probe):
    x_train, y_train, x_test, y_test = separable
    assert probe(x_train, y_train, x_test, y_test, seed=0).accuracy > 0.9
    rng = np.random.default_rng(2)
    shuffled = probe(x_train, rng.permutation(y_train), x_test, rng.permutation(y_test), seed=0)
    assert shuffled.accuracy < 0.45  # chance is 0.25 for four classes


@pytest.mark.parametrize("probe, param", [(probes.linear, "C"), (probes.knn, "k")],
                         ids=["linear", "knn"])
def test_the_choice_uses_the_training_split_only(separable, probe, param):
    x_train, y_train, x_test, y_test = separable
    first = probe(x_train, y_train, x_test, y_test, seed=0)
    relabelled = probe(x_train, y_train, x_test, (y_test + 1) % 4, seed=0)
    assert relabelled.chosen == first.chosen and param in first.chosen
    np.testing.assert_array_equal(relabelled.predictions, first.predictions)
    assert relabelled.accuracy != first.accuracy
    # while the training labels do steer it: noisier labels pick a stronger regularisation
    # or more neighbours than clean ones
    noisy = y_train.copy()
    flip = np.random.default_rng(3).random(len(noisy)) < 0.4
    noisy[flip] = np.random.default_rng(4).integers(0, 4, flip.sum())
    assert probe(x_train, noisy, x_test, y_test, seed=0).chosen[param] != first.chosen[param]


def test_every_name_the_config_accepts_is_a_probe():
    assert tuple(probes.PROBES) == PROBE_CHOICES


def test_run_gives_the_row_fields_and_a_failing_probe_only_its_error(separable):
    x_train, y_train, x_test, y_test = separable
    splits = Splits(x_train, y_train, x_test, y_test, x_test, y_test)
    fields = probes.run(("linear", "knn"), splits, seed=0)
    assert set(fields) == {"probe_linear_accuracy", "probe_linear_s", "probe_knn_accuracy",
                           "probe_knn_s", "probes"}
    assert fields["probe_linear_s"] > 0 and fields["probe_knn_s"] > 0
    linear, knn = fields["probes"]["linear"], fields["probes"]["knn"]
    assert linear["C"] in probes.C_GRID and knn["k"] in probes.K_GRID
    assert len(linear["predictions"]) == len(knn["predictions"]) == len(y_test)
    assert np.mean(np.array(knn["predictions"]) == y_test) == fields["probe_knn_accuracy"]
    assert probes.run((), splits, seed=0) == {}
    # one class in training: logistic regression cannot fit, k-NN can
    one_class = Splits(x_train, np.zeros_like(y_train), x_test, y_test, x_test, y_test)
    fields = probes.run(("linear", "knn"), one_class, seed=0)
    assert "probe_linear_accuracy" not in fields and "error" in fields["probes"]["linear"]
    assert fields["probe_knn_accuracy"] == np.mean(y_test == 0)


def test_the_cached_path_probes_the_heads_training_split_and_the_test_file(tiny_data,
                                                                            monkeypatch):
    seen = []
    real_run = probes.run
    monkeypatch.setattr(probes, "run", lambda names, splits, seed: seen.append(splits)
                        or real_run(names, splits, seed))
    config = RunConfig(image_size=32, epochs=1, weights="random", protocol="holdout",
                       probes=("linear", "knn"), verbose=0)
    spec = get("MobileNet_0.25")
    outcome = routes.cached(spec, config, tiny_data, identify(spec, config, tiny_data))
    (splits,) = seen
    head_train, _ = holdout_split(tiny_data.train_labels, config.val_fraction, config.seed)
    np.testing.assert_array_equal(splits.y_train, tiny_data.train_labels[head_train])
    np.testing.assert_array_equal(splits.y_test, tiny_data.test_labels)
    np.testing.assert_array_equal(splits.y_test, outcome.labels)
    details = outcome.probe_fields["probes"]
    assert len(details["linear"]["predictions"]) == len(details["knn"]["predictions"]) == len(
        outcome.labels)
    plain = routes.cached(spec, replace(config, probes=()), tiny_data,
                         identify(spec, config, tiny_data))
    assert plain.probe_fields == {}
    np.testing.assert_array_equal(plain.predictions, outcome.predictions)  # the head unchanged
