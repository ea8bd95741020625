from dataclasses import replace

import keras
import numpy as np
import pytest
from conftest import assert_histories_close

from bench.config import RunConfig
from bench.engine import head


def test_head_is_the_lessons():
    model = head.build_head(10)
    model.build((None, 1024))
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Flatten", "BatchNormalization", "Dense", "Dropout", "Dense"]
    assert model.layers[2].units == 50 and model.layers[2].activation.__name__ == "relu"
    assert model.layers[3].rate == 0.5
    assert model.layers[4].units == 10
    # lesson: 53,808 trainable parameters on DenseNet121's 1024 features
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 53_808
    assert model.count_params() == 53_808 + 2 * 1024  # BN moving mean and variance


def test_epoch_orders_are_seeded_permutations():
    a = head.epoch_orders(10, 3, seed=2)
    assert a.shape == (3, 10)
    assert all(sorted(row) == list(range(10)) for row in a)
    assert not np.array_equal(a[0], a[1])
    np.testing.assert_array_equal(a, head.epoch_orders(10, 3, seed=2))
    assert not np.array_equal(a, head.epoch_orders(10, 3, seed=3))


def test_batches_follow_the_orders_and_never_cross_epochs():
    x = np.arange(10, dtype=np.float32)[:, None]
    y = np.arange(10)
    orders = head.epoch_orders(10, 2, seed=0)
    got = [(bx.numpy()[:, 0].astype(int).tolist(), by.numpy().tolist())
           for bx, by in head.batches(x, y, orders, batch_size=4)]
    assert [len(b[0]) for b in got] == [4, 4, 2, 4, 4, 2]
    flat = [i for b in got for i in b[0]]
    assert flat == orders.reshape(-1).tolist()
    assert all(bx == by for bx, by in got)


def _separable(n, width=16, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.normal(size=(n, width)).astype(np.float32)
    x[np.arange(n), y] += 4.0
    return x, y


def test_training_learns_and_is_reproducible():
    x, y = _separable(320)
    xv, yv = _separable(60, seed=1)
    config = RunConfig(epochs=12, patience=0, verbose=0)
    runs = []
    for _ in range(2):
        keras.utils.set_random_seed(config.seed)
        model = head.build_head(3)
        model.build((None, 16))
        runs.append(head.train(model, x, y, xv, yv, config))
    assert runs[0].history["val_accuracy"][-1] > 0.9
    assert_histories_close(runs[1].history, runs[0].history, n=60)  # reproducible
    assert len(runs[0].epoch_times) == 12
    assert set(runs[0].history) == {"accuracy", "val_accuracy", "loss", "val_loss"}


@pytest.mark.parametrize("patience", [1, 0])
def test_early_stopping_follows_patience(patience):
    # labels independent of features: val_accuracy plateaus, so patience decides the length
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = rng.integers(0, 2, 64)
    config = RunConfig(epochs=30, patience=patience, verbose=0)
    keras.utils.set_random_seed(config.seed)
    model = head.build_head(2)
    model.build((None, 8))
    out = head.train(model, x, y, x[:16], y[:16], config)
    n = len(out.history["val_accuracy"])
    if patience == 0:
        assert n == 30
    else:
        assert n < 30
        best = int(np.argmax(out.history["val_accuracy"]))
        assert n <= max(best + 1 + patience, 1 + patience)


@pytest.mark.parametrize("loop", ["fit", "compiled"])
def test_restore_best_ends_on_the_best_epochs_weights(loop):
    # labels are noise, so val_accuracy wanders and its best epoch is not the last one
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 8)).astype(np.float32), rng.integers(0, 3, 64)
    xv, yv = rng.normal(size=(60, 8)).astype(np.float32), rng.integers(0, 3, 60)
    config = RunConfig(epochs=12, patience=0, verbose=0)
    keras.utils.set_random_seed(config.seed)
    model = head.build_head(3)
    model.build((None, 8))
    out = head.train(model, x, y, xv, yv, replace(config, end_to_end=loop == "fit"),
                     restore_best=True)
    val = out.history["val_accuracy"]
    assert len(val) == 12  # patience 0: no early stop
    assert max(val) > val[-1]  # so restoring matters
    _, accuracy = model.evaluate(xv, yv, batch_size=32, verbose=0)
    assert accuracy == pytest.approx(max(val), abs=1e-6)


@pytest.mark.parametrize("patience", [0, 2])
def test_compiled_loop_is_fits_epoch_for_epoch(patience):
    """The cached path's compiled loop against the episode's model.fit: same seed, same head,
    same batches -> the same history, and early stopping stops at the same epoch."""
    x, y = _separable(200, width=24, classes=4)
    xv, yv = _separable(70, width=24, classes=4, seed=1)
    y[:40] = (y[:40] + 1) % 4  # label noise: val_accuracy plateaus, so patience can act
    config = RunConfig(epochs=15, patience=patience, verbose=0)
    runs = {}
    for loop in ("fit", "compiled"):
        keras.utils.set_random_seed(config.seed)
        model = head.build_head(4)
        model.build((None, 24))
        runs[loop] = (head.train(model, x, y, xv, yv, replace(config, end_to_end=loop == "fit")),
                      model)
    fitted, compiled = runs["fit"][0], runs["compiled"][0]
    assert len(compiled.history["val_accuracy"]) == len(fitted.history["val_accuracy"])
    assert len(compiled.epoch_times) == len(compiled.history["loss"])
    for key in head.HISTORY_KEYS:
        np.testing.assert_allclose(compiled.history[key], fitted.history[key], rtol=1e-5,
                                   atol=1e-6, err_msg=key)
    for a, b in zip(runs["fit"][1].get_weights(), runs["compiled"][1].get_weights(),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("end_to_end", [True, False])
def test_loop_defaults_to_fit_end_to_end_and_to_the_compiled_loop_on_features(end_to_end):
    x, y = _separable(40)
    keras.utils.set_random_seed(2)
    model = head.build_head(3)
    model.build((None, 16))
    fit_calls = []
    fit = model.fit

    def counted_fit(*args, **kwargs):
        fit_calls.append(kwargs.get("epochs"))
        return fit(*args, **kwargs)

    model.fit = counted_fit
    out = head.train(model, x, y, x, y, RunConfig(epochs=2, end_to_end=end_to_end, verbose=0))
    assert fit_calls == ([2] if end_to_end else [])
    assert len(out.history["loss"]) == 2


def test_preparing_the_compiled_loop_changes_no_state():
    """CompiledLoop runs its epoch once on zero rows (tracing, graph optimisation): not one
    step may run, or the head would start from other weights than fit's."""
    x, y = _separable(64, width=24, classes=4)
    keras.utils.set_random_seed(2)
    model = head.build_head(4)
    model.build((None, 24))
    before = [v.numpy().copy() for v in model.variables]
    prepared = head.CompiledLoop(model, (24,), x.dtype, y.dtype, batch_size=32)
    after = [v.numpy() for v in model.variables]
    assert len(before) == len(after) >= 9  # weights, BN statistics, the dropout seed state
    # One Adam step moves a weight by about the learning rate (1e-3); no step leaves it as it
    # was. 1e-7 is far under the first and a little over float32 noise.
    for a, b in zip(before, after, strict=True):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-7)
    assert len(model.optimizer.variables) > 6  # built: Adam's slots and its step counter
    assert all(not v.numpy().any() for v in model.optimizer.variables
               if "learning_rate" not in v.path)
    # and then it trains: 2 epochs of 2 batches of 32
    out = prepared.run(x, y, x, y, head.epoch_orders(64, 2, seed=2),
                       head._early_stopping(RunConfig(epochs=2, verbose=0), False))
    assert len(out.history["loss"]) == 2 and int(model.optimizer.iterations) == 4
