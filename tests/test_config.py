import pytest

from bench.config import RunConfig


def test_defaults_are_the_lesson_protocol():
    c = RunConfig()
    assert (c.image_size, c.pooling, c.batch_size, c.epochs, c.patience, c.seed) == (
        160, "max", 32, 30, 5, 2)
    assert c.weights == "imagenet" and not c.end_to_end


def test_native_size_uses_the_registry_size():
    assert RunConfig(image_size="native").size_for(299) == 299
    assert RunConfig().size_for(299) == 160


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(image_size=0), "image_size"),
    (dict(image_size="big"), "image_size"),
    (dict(pooling="sum"), "pooling"),
    (dict(preprocess="imagenet"), "preprocess"),
    (dict(batch_size=0), "batch_size"),
    (dict(patience=-1), "patience"),
])
def test_invalid_values_are_refused_with_the_received_value(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        RunConfig(**kwargs)
