import pytest

from bench.config import ConfigError, RunConfig


def test_defaults_are_the_lesson_protocol():
    c = RunConfig()
    assert (c.image_size, c.pooling, c.batch_size, c.epochs, c.patience, c.seed) == (
        160, "max", 32, 30, 5, 2)
    assert c.weights == "imagenet" and not c.end_to_end


def test_native_size_uses_the_registry_size():
    assert RunConfig(image_size="native").size_for(299) == 299
    assert RunConfig().size_for(299) == 160


@pytest.mark.parametrize("kwargs, received", [
    (dict(image_size=0), "received 0"),
    (dict(image_size="big"), "received 'big'"),
    (dict(pooling="sum"), "received 'sum'"),
    (dict(preprocess="imagenet"), "received 'imagenet'"),
    (dict(protocol="test"), "received 'test'"),
    (dict(val_fraction=1.0), "received 1.0"),
    (dict(batch_size=0), "received 0"),
    (dict(epochs=-3), "received -3"),
    (dict(seeds=0), "received 0"),
    (dict(extract_batch_size=0), "received 0"),
    (dict(patience=-1), "received -1"),
    (dict(probes="linear,svm"), "received 'svm'"),
], ids=lambda v: next(iter(v)) if isinstance(v, dict) else "")
def test_invalid_values_are_refused_naming_the_field_and_the_received_value(kwargs, received):
    (field,) = kwargs
    with pytest.raises(ConfigError) as info:
        RunConfig(**kwargs)
    assert info.value.name == field  # the command line names the flag from it
    assert str(info.value).startswith(f"{field} must ") and str(info.value).endswith(received)


def test_per_seed_runs_share_the_first_seeds_backbone():
    runs = RunConfig(seed=7, seeds=3).per_seed()
    assert [(c.seed, c.seeds, c.effective_backbone_seed) for c in runs] == [
        (7, 1, 7), (8, 1, 7), (9, 1, 7)]


@pytest.mark.parametrize("given", ["linear,knn", " linear , knn,", ["linear", "knn", "linear"],
                                   ("linear", "knn")])
def test_probes_take_the_flags_comma_list_or_a_sequence_and_keep_one_spelling(given):
    assert RunConfig(probes=given).probes == ("linear", "knn")
    assert RunConfig().probes == ()  # off unless asked for


def test_probes_add_columns_and_leave_the_config_hash_alone():
    assert RunConfig(probes="linear,knn").knobs() == RunConfig().knobs()
