import keras
import numpy as np
import pytest

from backbones import get
from bench.cache import process_caches
from bench.config import RunConfig
from bench.engine import features, runtimes
from bench.weights import resolve_weights


def _tiny_extractor() -> keras.Model:
    """A small convolutional "backbone" behind the real Preprocess layer: fast, deterministic."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3), dtype="uint8")
    x = features.Preprocess(24, "lesson", name="preprocess_resize")(inputs)
    x = keras.layers.Conv2D(6, 3, activation="relu")(x)
    outputs = keras.layers.GlobalMaxPooling2D()(x)
    return keras.Model(inputs, outputs)


@pytest.fixture
def tiny_extractor() -> keras.Model:
    return _tiny_extractor()


def _extract(extractor: keras.Model, images: np.ndarray, batch_size: int) -> np.ndarray:
    """The features TensorFlow's runtime extracts, batch by batch, as a run does."""
    runtime = runtimes.TensorFlowRuntime(extractor, images.shape[1:], images.dtype.name,
                                         batch_size)
    return runtimes.extract(runtime, images, verbose=0)


def _images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 12, 12, 3), dtype=np.uint8)


@pytest.mark.parametrize("batch_size", [1, 4, 7, 64])
def test_extract_equals_predict_whatever_the_batching(tiny_extractor, batch_size):
    images = _images(19)  # 19 = no batch size above divides it: a short last batch
    expected = tiny_extractor.predict(images, batch_size=8, verbose=0)
    got = _extract(tiny_extractor, images, batch_size)
    assert got.dtype == np.float32 and got.shape == (19, 6)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_one_traced_forward_serves_both_splits_and_goes_with_its_model():
    import gc
    import weakref

    tiny_extractor = _tiny_extractor()
    _extract(tiny_extractor, _images(5), 4)
    forwards = process_caches().forwards
    (forward,) = forwards[tiny_extractor].values()
    assert forward is not None
    _extract(tiny_extractor, _images(3, seed=1), 4)
    assert list(forwards[tiny_extractor].values()) == [forward]
    ref = weakref.ref(tiny_extractor)
    del tiny_extractor, forward
    gc.collect()
    assert ref() is None


def test_extract_runs_a_real_backbone_graph_on_uint8(tiny_data):
    spec = get("MobileNet_0.25")
    config = RunConfig(image_size=32, weights="random", verbose=0)
    keras.utils.set_random_seed(config.seed)
    backbone = features.build_backbone(spec, 32, config, resolve_weights(spec, 32, config))
    inputs, outputs = features.backbone_graph(spec, backbone, 32, config, tiny_data.image_shape,
                                              "uint8")
    extractor = keras.Model(inputs, outputs)
    got = _extract(extractor, tiny_data.train_images, 16)
    expected = extractor.predict(tiny_data.train_images, batch_size=64, verbose=0)
    assert got.shape == (tiny_data.n_train, spec.feature_width)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_random_weights_get_batchnorm_statistics_of_the_training_images(tiny_data):
    """With their initial statistics (0 and 1) a random backbone's features collapse to one
    vector; re-estimated on the training images they tell images apart, and no weight moves."""
    spec = get("MobileNetV3Small")
    config = RunConfig(image_size=32, weights="random", verbose=0)
    keras.utils.set_random_seed(2)
    backbone = features.build_backbone(spec, 32, config, resolve_weights(spec, 32, config))
    preprocess = features.Preprocess(32, config.preprocess, spec.preprocess_input)

    def spread() -> float:
        out = keras.ops.convert_to_numpy(backbone(preprocess(tiny_data.test_images)))
        return float(out.std(axis=0).mean())

    kernels = {v.path: v.numpy().copy() for v in backbone.weights if "moving" not in v.path}
    collapsed = spread()
    assert features.reestimate_batchnorm(backbone, spec, 32, config, tiny_data.train_images) > 10
    assert spread() > 1e3 * max(collapsed, 1e-9)
    assert all(np.array_equal(v.numpy(), kernels[v.path]) for v in backbone.weights
               if "moving" not in v.path)
    assert not backbone.trainable
