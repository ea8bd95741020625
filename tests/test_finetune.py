"""The second stage (--fine-tune, bench/engine/finetune.py): the recipe's invariants, the rows
it writes, successive halving and resume."""

import json

import keras
import numpy as np
import pytest

from backbones import get
from bench.config import ConfigError, RunConfig
from bench.engine import routes
from bench.engine.features import augmentation
from bench.engine.runner import run_one
from bench.identity import identify
from bench.sweep import run_sweep

pytestmark = pytest.mark.xdist_group("finetune")


def _config(tmp_path, **kwargs) -> RunConfig:
    return RunConfig(image_size=32, epochs=2, weights="random", verbose=0,
                     cache_dir=str(tmp_path / "cache"), **kwargs)


def _fine_tuned_backbone(monkeypatch, spec, config, data):
    """Fine-tunes `spec` and returns (the backbone's weights by layer before, the backbone
    after)."""
    built = {}
    frozen_backbone = routes.frozen_backbone

    def keep(*args, **kwargs):
        backbone, inputs, outputs = frozen_backbone(*args, **kwargs)
        built["backbone"] = backbone
        built["before"] = {layer.name: [np.array(w) for w in layer.get_weights()]
                           for layer in backbone.layers}
        return backbone, inputs, outputs

    monkeypatch.setattr(routes, "frozen_backbone", keep)
    row = run_one(spec, config, data)
    assert row.ok, row.error
    return built["before"], built["backbone"], row


def _moved(before: list, layer) -> bool:
    return any(not np.array_equal(a, b) for a, b in zip(before, layer.get_weights(),
                                                         strict=True))


def test_fine_tuning_keeps_batchnorm_as_loaded_and_moves_the_other_weights(
        monkeypatch, tiny_data, tmp_path):
    config = _config(tmp_path, fine_tune=True, fine_tune_epochs=2, fine_tune_lr=1e-3)
    before, backbone, row = _fine_tuned_backbone(monkeypatch, get("MobileNet_0.25"), config,
                                                 tiny_data)
    norms = [layer for layer in backbone.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    others = [layer for layer in backbone.layers
              if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and others
    # moving mean and variance, scale and offset: all as the frozen stage had them
    assert not any(_moved(before[layer.name], layer) for layer in norms)
    assert all(_moved(before[layer.name], layer) for layer in others)
    assert row.stage == "fine-tuned" and row.route == "fine-tuned"
    assert row.epochs_run == 2 and row.fine_tune_epoch_s > 0 and row.peak_memory_mb > 0
    assert row.fine_tune_images_per_s > 0 and len(row.frozen_predictions) == tiny_data.n_test
    # every backbone weight but BatchNorm's trains
    assert row.params_trainable > 0.9 * get("MobileNet_0.25").params


def test_fine_tune_layers_trains_only_the_last_n_layers(monkeypatch, tiny_data, tmp_path):
    config = _config(tmp_path, fine_tune=True, fine_tune_epochs=1, fine_tune_lr=1e-3,
                     fine_tune_layers=3)
    before, backbone, _ = _fine_tuned_backbone(monkeypatch, get("MobileNet_0.25"), config,
                                               tiny_data)
    weighted = [layer for layer in backbone.layers if layer.weights]
    moved = [layer.name for layer in weighted if _moved(before[layer.name], layer)]
    last = [layer.name for layer in weighted[-3:]
            if not isinstance(layer, keras.layers.BatchNormalization)]
    assert moved == last and moved


def test_zero_fine_tuning_epochs_is_the_frozen_row(tiny_data, tmp_path):
    spec = get("MobileNet_0.25")
    frozen = run_one(spec, _config(tmp_path), tiny_data)
    tuned = run_one(spec, _config(tmp_path, fine_tune=True, fine_tune_epochs=0), tiny_data)
    assert frozen.ok and tuned.ok, tuned.error
    assert tuned.predictions == frozen.predictions == tuned.frozen_predictions
    assert tuned.test_accuracy == frozen.test_accuracy == tuned.frozen_accuracy
    assert tuned.history == frozen.history
    assert tuned.frozen_config_hash == frozen.config_hash != tuned.config_hash
    assert frozen.stage is None and tuned.stage == "fine-tuned"


def test_the_frozen_stage_is_the_same_run_with_or_without_fine_tuning(tiny_data):
    spec = get("MobileNet_0.25")
    lesson = RunConfig(image_size=32, weights="random")
    tuned = RunConfig(image_size=32, weights="random", fine_tune=True, fine_tune_lr=3e-5,
                      augment=True)
    assert identify(spec, tuned.frozen(), tiny_data) == identify(spec, lesson, tiny_data)
    assert identify(spec, tuned, tiny_data).config_hash != identify(
        spec, lesson, tiny_data).config_hash
    assert lesson.configuration() == tuned.frozen().configuration()
    assert "fine_tune_lr" not in lesson.knobs() and tuned.knobs()["fine_tune_lr"] == 3e-5


@pytest.mark.parametrize(("kwargs", "flag"), [
    ({"augment": True}, "augment"), ({"fine_tune": True, "end_to_end": True}, "fine_tune"),
    ({"fine_tune_top": 0}, "fine_tune_top"), ({"fine_tune_lr": 0.0}, "fine_tune_lr"),
    ({"fine_tune_layers": 0, "fine_tune": True}, "fine_tune_layers"),
    ({"fine_tune_epochs": -1, "fine_tune": True}, "fine_tune_epochs")])
def test_fine_tuning_knobs_are_checked(kwargs, flag):
    with pytest.raises(ConfigError) as err:
        RunConfig(**kwargs)
    assert err.value.name == flag
    assert RunConfig(fine_tune_top=2).fine_tune  # --fine-tune-top K implies --fine-tune


def test_augmentation_is_the_identity_at_inference():
    images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3)).astype("float32")
    augment = augmentation(seed=2)
    assert np.array_equal(keras.ops.convert_to_numpy(augment(images, training=False)), images)
    assert not np.array_equal(keras.ops.convert_to_numpy(augment(images, training=True)),
                              images)


def test_fine_tune_top_tunes_the_best_entries_once_and_resumes(tiny_data, tmp_path):
    specs = [get("MobileNet_0.25"), get("MobileNetV3Small"), get("dense")]
    config = _config(tmp_path, fine_tune_top=1, fine_tune_epochs=1)
    out = tmp_path / "out"
    outcome = run_sweep(specs, config, tiny_data, out)
    rows = [json.loads(line) for line in (out / "runs.jsonl").open()]
    frozen = {r["backbone"]: r["test_accuracy"] for r in rows if r.get("stage") is None}
    tuned = [r for r in rows if r.get("stage") == "fine-tuned"]
    assert set(frozen) == {"MobileNet_0.25", "MobileNetV3Small", "dense"}
    assert len(tuned) == 1 and not outcome.failed
    best = max(("MobileNet_0.25", "MobileNetV3Small"), key=lambda n: frozen[n])
    assert tuned[0]["backbone"] == best and tuned[0]["frozen_accuracy"] == frozen[best]
    # the same sweep again: every run, both stages, is already done
    again = run_sweep(specs, config, tiny_data, out)
    assert again.results == [] and len(again.skipped) == 4
