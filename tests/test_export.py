"""Export: every ok row saves its head; `python -m bench export` writes one Keras model that a
fresh interpreter without bench loads, and that predicts what the run predicted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_same_predictions, make_row, read_rows, write_dataset

from bench import runlog
from bench.__main__ import main
from bench.headfile import head_file_name, load_head, save_head, with_head_file
from bench.result import RunResult

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}

# Runs in a fresh interpreter from an empty folder, with bench made unimportable (it is
# installed in the venv in editable mode): only keras and numpy.
_LOAD_AND_PREDICT = """
import sys
sys.modules["bench"] = None
import json, numpy as np, keras
model_file, images_file, logits_file = sys.argv[1:]
model = keras.models.load_model(model_file)
logits = model.predict(np.load(images_file, allow_pickle=False), batch_size=16, verbose=0)
np.save(logits_file, logits)
print(json.dumps({"bench": sorted(m for m in sys.modules
                                  if m.split(".")[0] == "bench" and sys.modules[m])}))
"""


def _bench(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=900)


def _fresh_logits(model_file: Path, images: np.ndarray, tmp: Path) -> np.ndarray:
    """The exported model's logits, computed where only keras and numpy are importable."""
    work = tmp / "fresh"
    work.mkdir()
    np.save(work / "images.npy", images)
    env = {k: v for k, v in ENV.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", _LOAD_AND_PREDICT, str(model_file), "images.npy", "logits.npy"],
        cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == {"bench": []}
    return np.load(work / "logits.npy")


def _reference_logits(row: dict, out: Path, data_dir: Path, weights_dir: Path | None):
    """The run's own pipeline (its Preprocess layer and resize_with_pad, the frozen backbone)
    under the head file's weights: what the row's predictions came from."""
    import keras

    from backbones import get
    from bench.config import RunConfig
    from bench.data import load_dataset
    from bench.engine import features, head, runtimes
    from bench.identity import identify

    spec, data = get(row["backbone"]), load_dataset(data_dir, download=False)
    config = RunConfig(image_size=row["image_size"], weights=row["weights"] if
                       row["weights"] == "random" else "imagenet",
                       weights_dir=str(weights_dir) if weights_dir else None)
    ident = identify(spec, config, data)
    keras.utils.set_random_seed(config.effective_backbone_seed)
    backbone = features.build_backbone(spec, ident.size, config, ident.weights)
    if row["weights"] == "random":  # as the run did: BatchNorm statistics of the train images
        features.reestimate_batchnorm(backbone, spec, ident.size, config, data.train_images)
    inputs, outputs = features.backbone_graph(spec, backbone, ident.size, config,
                                              data.image_shape, "uint8")
    runtime = runtimes.TensorFlowRuntime(keras.Model(inputs, outputs), data.image_shape,
                                         "uint8", 16)
    extracted = runtimes.extract(runtime, data.test_images, verbose=0)
    trained = head.build_head(data.n_classes)
    trained.build(extracted.shape)
    trained.set_weights(load_head(out / row["head_file"]).weights)
    return keras.ops.convert_to_numpy(trained(extracted, training=False)), data.test_images


def _export_and_check(tmp: Path, out: Path, data_dir: Path, name: str,
                      weights_dir: Path | None = None) -> None:
    (row,) = [r for r in read_rows(out) if r["backbone"] == name]
    assert (out / row["head_file"]).is_file()
    model_file = tmp / "exported" / "model.keras"
    extra = ["--weights-dir", str(weights_dir)] if weights_dir else []
    proc = _bench("export", name, str(model_file), "--out", str(out), *extra)
    assert proc.returncode == 0, proc.stderr
    sidecar = json.loads(model_file.with_suffix(".classes.json").read_text())
    assert sidecar["class_names"] == row["class_names"]
    reference, images = _reference_logits(row, out, data_dir, weights_dir)
    # the head file holds the weights the row's predictions came from
    assert_same_predictions(reference, row["predictions"])
    logits = _fresh_logits(model_file, images, tmp)
    assert_same_predictions(logits, row["predictions"])
    np.testing.assert_allclose(logits, reference, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_mobilenet_export_predicts_what_the_run_predicted(tmp_path, real_weights_dir,
                                                          real_data_dir):
    out = tmp_path / "results"
    proc = _bench("MobileNet_0.25", "--weights-dir", str(real_weights_dir), "--data",
                  str(real_data_dir), "--epochs", "2", "--quiet", "--out", str(out),
                  "--cache-dir", str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr
    _export_and_check(tmp_path, out, real_data_dir, "MobileNet_0.25", real_weights_dir)


@pytest.mark.slow
def test_efficientnet_export_from_an_isolated_end_to_end_run(tmp_path):
    """A backbone that rescales inside, random weights, its head from a child process."""
    data_dir = write_dataset(tmp_path / "data")
    out = tmp_path / "results"
    # --timeout-min runs the backbone in a child process: the head crosses as an .npz
    proc = _bench("EfficientNetB0", "--weights", "random", "--image-size", "32", "--epochs",
                  "1", "--end-to-end", "--timeout-min", "20", "--quiet", "--data",
                  str(data_dir), "--out", str(out), "--cache-dir", str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr
    _export_and_check(tmp_path, out, data_dir, "EfficientNetB0")


def test_a_baseline_exports_as_its_whole_model(tmp_path):
    """Its weights come from a child process (--timeout-min isolates it) as an .npz."""
    import keras

    data_dir = write_dataset(tmp_path / "data")
    out = tmp_path / "results"
    assert main(["dense", "--epochs", "2", "--timeout-min", "10", "--quiet", "--data",
                 str(data_dir), "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
    assert main(["export", "dense", str(tmp_path / "dense.keras"), "--out", str(out)]) == 0
    (row,) = read_rows(out)
    images = np.load(data_dir / "test_images.npy")
    model = keras.models.load_model(tmp_path / "dense.keras")
    assert_same_predictions(model.predict(images, verbose=0), row["predictions"])


def _row(backbone: str, config_hash: str, test_accuracy: float, seed: int = 2,
         group: str = "g", head_file: str | None = "heads/x.npz") -> dict:
    return make_row(backbone, config_hash=config_hash, group=group, seed=seed,
                    test_accuracy=test_accuracy, best_epoch_accuracy=test_accuracy,
                    head_file=head_file)


def test_without_a_name_the_top_of_the_leaderboard_is_chosen(tmp_path):
    from bench.export import find_row

    for record in (_row("DenseNet121", "a", 0.5, group="d"),
                   _row("MobileNet_0.25", "b", 0.7, group="m"),
                   _row("dense", "c", 0.6, group="x")):
        runlog.append_record(tmp_path, record)
    assert find_row(tmp_path, None).backbone == "MobileNet_0.25"


def test_a_name_takes_its_latest_run_and_that_runs_best_seed(tmp_path):
    from bench.export import find_row

    for record in (_row("MobileNet_0.25", "old", 0.9, group="old"),
                   _row("MobileNet_0.25", "s2", 0.6, seed=2, group="new"),
                   _row("MobileNet_0.25", "s3", 0.7, seed=3, group="new"),
                   _row("MobileNet_0.25", "s4", 0.7, seed=4, group="new"),
                   _row("DenseNet121", "d", 0.95, group="d")):
        runlog.append_record(tmp_path, record)
    assert find_row(tmp_path, "mobilenet_0.25").config_hash == "s3"  # ties: the lowest seed


@pytest.mark.parametrize("case", ["no runs.jsonl", "unknown name", "no ok row", "no head file",
                                  "head file missing", "not .keras", "head file truncated",
                                  "head file flipped", "a folder named .keras",
                                  "a newline in the name"])
def test_a_bad_export_request_is_one_line_and_exit_2(tmp_path, capsys, case):
    out = tmp_path / "results"
    if case.startswith("head file") and case != "head file missing":
        save_head(out / "heads" / "gone.npz", [np.ones((4, 3), np.float32)] * 2, ["a", "b"])
        raw = bytearray((out / "heads" / "gone.npz").read_bytes())
        if case.endswith("truncated"):
            raw = raw[: len(raw) // 2]
        else:  # one byte of the first weight
            raw[raw.index(b"NUMPY") + 130] ^= 0x01
        (out / "heads" / "gone.npz").write_bytes(bytes(raw))
    if case != "no runs.jsonl":
        runlog.append_record(out, _row("dense", "a", 0.5, head_file="heads/gone.npz"))
        runlog.append_record(out, RunResult(backbone="DenseNet121", status="error",
                                            error="boom").to_dict())
        runlog.append_record(out, _row("scratch-cnn", "b", 0.4, group="s", head_file=None))
    name, file = {"unknown name": ("densnet12", "m.keras"),
                  "no ok row": ("DenseNet121", "m.keras"),
                  "no head file": ("scratch-cnn", "m.keras"),
                  "not .keras": ("dense", "m.h5"),
                  "a folder named .keras": ("dense", "d.keras"),
                  "a newline in the name": ("dense", "m\nx.h5")}.get(case, ("dense", "m.keras"))
    if case == "a folder named .keras":
        (tmp_path / file).mkdir()
    assert main(["export", name, str(tmp_path / file), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bench: error: ") and "Traceback" not in err
    expected = {"no runs.jsonl": "No runs.jsonl", "unknown name": "Did you mean DenseNet121",
                "no ok row": "No ok row of DenseNet121", "no head file": "names no head file",
                "head file missing": "gone.npz' (no such file)", "not .keras": "must end in",
                "head file truncated": "damaged", "head file flipped": "damaged",
                "a folder named .keras": "is not a regular file",
                "a newline in the name": "m\\nx.h5"}
    assert expected[case] in err
    if case == "a folder named .keras":
        assert not list((tmp_path / file).iterdir())  # nothing written into it
    else:
        assert not (tmp_path / file).exists()


def test_head_files_round_trip_without_pickle(tmp_path):
    weights = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(3, np.float32)]
    result = RunResult(backbone="Mobile Net/1", status="ok", config_hash="abc",
                       class_names=["cat", "dog"], head_weights=weights)
    written = with_head_file(tmp_path, result, (32, 32, 3))
    assert written.head_file == head_file_name(result.backbone, result.config_hash)
    assert written.head_file == "heads/Mobile_Net_1-abc.weights.npz"
    found = load_head(tmp_path / written.head_file)
    assert [w.tolist() for w in found.weights] == [w.tolist() for w in weights]
    assert found.class_names == ["cat", "dog"] and found.image_shape == (32, 32, 3)
    record = written.to_dict()
    assert "head_weights" not in record and record["head_file"] == written.head_file
    json.dumps(record)  # the row stays plain json
    failed = RunResult(backbone="x", status="error", config_hash="abc", head_weights=weights)
    assert with_head_file(tmp_path / "other", failed).head_file is None
    save_head(tmp_path / "plain.npz", weights)
    assert load_head(tmp_path / "plain.npz").image_shape is None


def test_ray_tasks_return_the_head_weights(tiny_data):
    """A Ray task's dict carries the weights as arrays; the driver's row gets them back."""
    from bench.config import RunConfig
    from bench.executors.ray_cluster import _run_task

    payload = dict(train_images=tiny_data.train_images, train_labels=tiny_data.train_labels,
                   test_images=tiny_data.test_images, test_labels=tiny_data.test_labels,
                   class_names=list(tiny_data.class_names), source="synthetic", notes=[])
    config = RunConfig(epochs=1, verbose=0, cache=False).to_dict()
    returned = _run_task("dense", config, payload, tiny_data.checksum())
    result = RunResult.from_dict(returned)
    assert result.ok and result.head_weights
    assert all(isinstance(w, np.ndarray) for w in result.head_weights)


# one backbone per preprocessing mode, and the lesson's pixels / 255
FAMILIES = [("MobileNet_0.25", "native"), ("DenseNet121", "native"), ("ResNet50", "native"),
            ("EfficientNetB0", "native"), ("MobileNet_0.25", "lesson")]


@pytest.mark.parametrize(("name", "preprocess"), FAMILIES, ids=lambda v: v)
def test_exported_preprocessing_is_the_runs(name, preprocess):
    """Keras layers equal preprocess_input, and with the resize equal the training input."""
    import keras

    from backbones import get
    from bench.engine.export import preprocessing_layers
    from bench.engine.features import Preprocess

    spec = get(name)
    images = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    layers = preprocessing_layers(spec, preprocess)
    scaled = keras.Sequential(layers).predict(images, verbose=0)
    expected = (images / np.float32(255) if preprocess == "lesson"
                else spec.preprocess_input(images.astype(np.float32)))
    np.testing.assert_allclose(scaled, expected, rtol=1e-6, atol=1e-5)
    front = keras.Sequential([*preprocessing_layers(spec, preprocess), keras.layers.Resizing(
        160, 160, interpolation="bilinear", pad_to_aspect_ratio=True)])
    training = Preprocess(160, preprocess, spec.preprocess_input)(images)
    np.testing.assert_allclose(front.predict(images, verbose=0), training, rtol=1e-6,
                               atol=1e-4)


@pytest.mark.parametrize(("side", "target"), [(64, 160), (32, 32), (100, 32), (33, 160)])
def test_resizing_equals_resize_with_pad_on_square_images(side, target):
    import keras
    import tensorflow as tf

    images = np.random.default_rng(1).random((2, side, side, 3)).astype(np.float32) * 255
    layer = keras.layers.Resizing(target, target, interpolation="bilinear",
                                  pad_to_aspect_ratio=True)
    # 0-255 pixels: 1e-3 is float32 rounding; another interpolation, scale or padding moves
    # pixels by whole units
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(images)),
        tf.image.resize_with_pad(images, target, target, method="bilinear").numpy(),
        rtol=0, atol=1e-3)


def test_a_head_file_whose_arrays_were_swapped_fails_its_checksum(tmp_path):
    weights = [np.ones((4, 3), np.float32), np.zeros(3, np.float32)]
    save_head(tmp_path / "h.npz", weights, ["a", "b"])
    with np.load(tmp_path / "h.npz", allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["weight_000"], arrays["weight_001"] = arrays["weight_001"], arrays["weight_000"]
    np.savez(tmp_path / "h.npz", **arrays)  # a whole, readable zip: only the checksum tells
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_head(tmp_path / "h.npz")


def test_a_run_and_an_export_find_weights_in_the_same_folder(tmp_path, monkeypatch,
                                                            real_weights_dir):
    from backbones import get
    from bench.config import RunConfig
    from bench.export import _row_weights
    from bench.weights import WEIGHTS_ENV, resolve_weights

    spec = get("MobileNet_0.25")
    name = spec.weights_file(224)
    row = RunResult(backbone=spec.name, status="ok", weights_id=f"keras:{name}",
                    weights_file=name)
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    assert resolve_weights(spec, 224, RunConfig()).source == "imagenet"  # Keras' own loading
    assert _row_weights(row, None)[0].source == "imagenet"
    monkeypatch.setenv(WEIGHTS_ENV, str(real_weights_dir))
    run = resolve_weights(spec, 224, RunConfig())
    exported, _ = _row_weights(row, None)
    assert run.source == exported.source == "file" and run.path == exported.path
    assert Path(run.path).parent == real_weights_dir


# --- --format: the same classifier as OpenVINO IR and as a SavedModel --------------------------

def _mobilenet_results(out: Path, weights_dir: Path, runtime: str) -> list[str]:
    """A results folder whose one row is MobileNet_0.25 at 96 px on Keras' own weights file,
    with a head as a run saves it (Keras' initial head weights: no training needed to compare
    formats); returns the class names."""
    import keras

    from backbones import get
    from bench.engine import head

    spec = get("MobileNet_0.25")
    keras.utils.set_random_seed(0)
    trained = head.build_head(10)
    trained.build((None, spec.feature_width))
    names = [f"class_{i}" for i in range(10)]
    save_head(out / "heads" / "m.npz", [keras.ops.convert_to_numpy(w) for w in trained.weights],
              names, (64, 64, 3))
    file = spec.weights_file(96)
    assert (weights_dir / file).is_file()
    runlog.append_record(out, make_row(
        spec.name, config_hash="m", group="m", image_size=96, test_accuracy=0.5,
        best_epoch_accuracy=0.5, head_file="heads/m.npz", weights_id=f"keras:{file}",
        weights_file=file, runtime=runtime, infer_ms=1.0, class_names=names))
    return names


def _images(data_dir: Path) -> list[np.ndarray]:
    """Real photos in three shapes: square (64), wide (48 x 64: padded) and larger (80 x 72)."""
    images = np.load(data_dir / "test_images.npy")[:24]
    wide = images[:, 8:56]
    large = np.repeat(np.repeat(images, 5, axis=1), 9, axis=2)[:, ::4, ::8][:, :80, :72]
    return [images, np.ascontiguousarray(wide), np.ascontiguousarray(large)]


def _assert_reproduces(got: np.ndarray, want: np.ndarray) -> None:
    """TensorFlow and OpenVINO floats differ in their last bits: the same argmax wherever the
    top two are clearly apart, and logits within 1e-3 of their scale."""
    assert np.all(np.isfinite(got)) and float(np.std(want)) > 0
    assert_same_predictions(got, want.argmax(-1))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-3 * float(np.max(np.abs(want))))


@pytest.mark.filterwarnings("ignore:.*Weights for input shape:UserWarning")
def test_openvino_and_saved_model_exports_reproduce_the_keras_model(tmp_path, real_weights_dir,
                                                                    real_data_dir):
    """auto picks OpenVINO for a row whose features OpenVINO extracted; its IR, compiled as the
    sidecar says, and the SavedModel's serve give the .keras model's logits from the first
    inference on, on images that need padding too."""
    import keras
    import openvino
    import tensorflow as tf

    out = tmp_path / "results"
    names = _mobilenet_results(out, real_weights_dir, runtime="openvino")
    common = ["--out", str(out), "--weights-dir", str(real_weights_dir)]
    assert main(["export", *common, str(tmp_path / "m.keras")]) == 0  # keras: the default
    assert main(["export", *common, "--format", "auto", str(tmp_path / "m")]) == 0  # m.xml
    assert main(["export", *common, "--format", "saved_model", str(tmp_path / "served")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "m.bin", "m.classes.json", "m.keras", "m.xml", "results", "served",
        "served.classes.json"]
    sidecar = json.loads((tmp_path / "m.classes.json").read_text())
    assert sidecar["class_names"] == names and sidecar["format"] == "openvino"
    assert sidecar["runtime"] == "openvino" and sidecar["infer_ms"] == 1.0
    served_sidecar = json.loads((tmp_path / "served.classes.json").read_text())
    assert served_sidecar["format"] == "saved_model" and served_sidecar["class_names"] == names
    model = keras.models.load_model(tmp_path / "m.keras")
    compiled = openvino.Core().compile_model(str(tmp_path / "m.xml"), "CPU",
                                             sidecar["openvino_compile_config"])
    served = tf.saved_model.load(str(tmp_path / "served"))
    for images in _images(real_data_dir):
        want = model.predict(images, verbose=0)
        _assert_reproduces(compiled(images)[0], want)
        _assert_reproduces(served.serve(images).numpy(), want)


def test_pad_then_resize_equals_keras_resizing():
    """The tf.cond-free resize of the OpenVINO export computes Keras' Resizing exactly."""
    import keras

    from bench.engine.export import PadThenResize

    rng = np.random.default_rng(3)
    for shape, target in [((2, 64, 64, 3), (96, 96)), ((2, 48, 64, 3), (96, 96)),
                          ((1, 81, 20, 3), (64, 64)), ((1, 7, 9, 3), (32, 48)),
                          ((1, 33, 80, 3), (50, 30))]:
        images = rng.random(shape).astype(np.float32) * 255
        want = keras.layers.Resizing(*target, interpolation="bilinear",
                                     pad_to_aspect_ratio=True)(images)
        got = PadThenResize(*target)(images)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(got),
                                      keras.ops.convert_to_numpy(want))


@pytest.mark.parametrize("case", ["unknown format", "openvino not .xml", "auto not .xml",
                                  "saved_model a .keras name", "saved_model onto a file",
                                  "saved_model onto other files", "a folder named m.bin",
                                  "a folder named m.classes.json"])
def test_a_bad_format_or_target_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, case):
    out = tmp_path / "results"
    save_head(out / "heads" / "h.npz", [np.ones((4, 3), np.float32)] * 2, ["a", "b"])
    runlog.append_record(out, _row("dense", "a", 0.5, head_file="heads/h.npz"))
    runlog.append_record(out, {**_row("MobileNet_0.25", "b", 0.4, group="m",
                                      head_file="heads/h.npz"), "runtime": "openvino"})
    target = tmp_path / "export"
    target.mkdir()
    name, file, args = {
        "unknown format": ("dense", "m.keras", ["--format", "onnx"]),
        "openvino not .xml": ("dense", "m.keras", ["--format", "openvino"]),
        "auto not .xml": ("MobileNet_0.25", "m.keras", ["--format", "auto"]),
        "saved_model a .keras name": ("dense", "m.keras", ["--format", "saved_model"]),
        "saved_model onto a file": ("dense", "m", ["--format", "saved_model"]),
        "saved_model onto other files": ("dense", "m", ["--format", "saved_model"]),
        "a folder named m.bin": ("dense", "m.xml", ["--format", "openvino"]),
        "a folder named m.classes.json": ("dense", "m.keras", []),
    }[case]
    if case == "saved_model onto a file":
        (target / "m").write_text("mine")
    elif case == "saved_model onto other files":
        (target / "m").mkdir()
        (target / "m" / "notes.txt").write_text("mine")
    elif case.startswith("a folder named"):
        (target / case.split()[-1]).mkdir()
    before = {p: p.read_bytes() if p.is_file() else None for p in target.rglob("*")}
    assert main(["export", name, str(target / file), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bench: error: ") and "Traceback" not in err
    expected = {"unknown format": "--format: expected one of keras, openvino, saved_model, auto",
                "openvino not .xml": "must end in .xml", "auto not .xml": "must end in .xml",
                "saved_model a .keras name": "writes a folder",
                "saved_model onto a file": "expected a folder name",
                "saved_model onto other files": "no SavedModel",
                "a folder named m.bin": "m.bin' exists and is not a regular file",
                "a folder named m.classes.json": "m.classes.json' exists and is not a regular"}
    assert expected[case] in err, err
    assert {p: p.read_bytes() if p.is_file() else None for p in target.rglob("*")} == before


# --- --stage: a fine-tuned row exports its whole fine-tuned model ------------------------------

def _fine_tuned_sweep(tmp: Path, **knobs) -> tuple[Path, Path]:
    """A results folder of MobileNet_0.25 (random weights, 32 px), frozen then fine-tuned with
    augmentation at a learning rate that moves its weights; returns (results, data folder)."""
    from backbones import get
    from bench.config import RunConfig
    from bench.data import load_dataset
    from bench.sweep import run_sweep

    data_dir = tmp / "data"
    if not data_dir.exists():
        write_dataset(data_dir)
    out = tmp / "results"
    config = RunConfig(image_size=32, epochs=2, weights="random", verbose=0, fine_tune=True,
                       augment=True, cache_dir=str(tmp / "cache"),
                       **{"fine_tune_epochs": 2, "fine_tune_lr": 1e-3, **knobs})
    outcome = run_sweep([get("MobileNet_0.25")], config, load_dataset(data_dir), out)
    assert not outcome.failed, [r.error for r in outcome.results]
    return out, data_dir


@pytest.mark.filterwarnings("ignore:.*Weights for input shape:UserWarning")
def test_a_fine_tuned_row_exports_its_fine_tuned_model_in_every_format(tmp_path):
    """--stage fine-tuned: the whole fine-tuned model, loaded where bench cannot be imported,
    predicts what the fine-tuned row predicted, and its OpenVINO IR and SavedModel compute the
    same logits; --stage frozen predicts the row's frozen stage."""
    import openvino
    import tensorflow as tf

    out, data_dir = _fine_tuned_sweep(tmp_path)
    frozen_row, tuned = read_rows(out)
    assert frozen_row.get("stage") is None and tuned["stage"] == "fine-tuned"
    assert tuned["frozen_config_hash"] == frozen_row["config_hash"]
    assert tuned["frozen_predictions"] == frozen_row["predictions"] != tuned["predictions"]
    images = np.load(data_dir / "test_images.npy")
    files = {stage: tmp_path / stage / "m.keras" for stage in ("frozen", "fine-tuned")}
    for stage, file in files.items():
        assert main(["export", "MobileNet_0.25", str(file), "--out", str(out), "--stage",
                     stage]) == 0
        assert json.loads(file.with_suffix(".classes.json").read_text())["stage"] == stage
    tuned_logits = _fresh_logits(files["fine-tuned"], images, tmp_path / "fine-tuned")
    frozen_logits = _fresh_logits(files["frozen"], images, tmp_path / "frozen")
    assert_same_predictions(tuned_logits, tuned["predictions"])
    assert_same_predictions(frozen_logits, tuned["frozen_predictions"])
    assert not np.allclose(tuned_logits, frozen_logits, atol=1e-2)  # fine-tuning moved it
    common = ["MobileNet_0.25", "--out", str(out), "--stage", "fine-tuned"]
    assert main(["export", *common, "--format", "openvino", str(tmp_path / "m.xml")]) == 0
    assert main(["export", *common, "--format", "saved_model", str(tmp_path / "served")]) == 0
    info = json.loads((tmp_path / "m.classes.json").read_text())
    compiled = openvino.Core().compile_model(str(tmp_path / "m.xml"), "CPU",
                                             info["openvino_compile_config"])
    served = tf.saved_model.load(str(tmp_path / "served"))
    for shaped in (images, np.ascontiguousarray(images[:, 4:28])):  # square, and padded
        want = _fresh_logits_in_process(files["fine-tuned"], shaped)
        _assert_reproduces(compiled(shaped)[0], want)
        _assert_reproduces(served.serve(shaped).numpy(), want)


def _fresh_logits_in_process(model_file: Path, images: np.ndarray) -> np.ndarray:
    import keras

    return keras.models.load_model(model_file).predict(images, verbose=0)


def test_zero_fine_tuning_epochs_export_the_frozen_stage(tmp_path):
    """A fine-tuned row of 0 epochs is its frozen stage: its head file holds the head."""
    out, data_dir = _fine_tuned_sweep(tmp_path, fine_tune_epochs=0)
    frozen_row, tuned = read_rows(out)
    assert tuned["predictions"] == frozen_row["predictions"]
    assert main(["export", "MobileNet_0.25", str(tmp_path / "m.keras"), "--out", str(out),
                 "--stage", "fine-tuned"]) == 0
    logits = _fresh_logits_in_process(tmp_path / "m.keras",
                                      np.load(data_dir / "test_images.npy"))
    assert_same_predictions(logits, tuned["predictions"])


def _tuned_row(backbone: str, config_hash: str, test_accuracy: float, frozen_hash: str,
               frozen_accuracy: float, seed: int = 2, group: str = "t") -> dict:
    return {**_row(backbone, config_hash, test_accuracy, seed=seed, group=group),
            "stage": "fine-tuned", "route": "fine-tuned", "frozen_config_hash": frozen_hash,
            "frozen_accuracy": frozen_accuracy,
            "configuration": {"fine_tune": True, "fine_tune_epochs": 2}}


@pytest.mark.parametrize(("tuned_accuracies", "expected"), [
    ((0.8, 0.6), "t2"),  # mean 0.7 over frozen 0.55 and 0.65: fine-tuned
    ((0.5, 0.7), "f3"),  # mean 0.6 over a mean 0.6: not raised, the frozen run's best seed
    (None, "f3"),  # never fine-tuned
])
def test_without_stage_the_better_stage_of_the_run_is_chosen(tmp_path, tuned_accuracies,
                                                             expected):
    from bench.export import find_row

    records = [_row("MobileNet_0.25", "f2", 0.55, seed=2, group="f"),
               _row("MobileNet_0.25", "f3", 0.65, seed=3, group="f"),
               _row("DenseNet121", "d", 0.5, group="d")]
    if tuned_accuracies:
        records += [_tuned_row("MobileNet_0.25", f"t{seed}", accuracy, f"f{seed}",
                               0.55 if seed == 2 else 0.65, seed=seed)
                    for seed, accuracy in zip((2, 3), tuned_accuracies, strict=True)]
        # fine-tuning another frozen run (an older one) is not this run's second stage
        records.append(_tuned_row("MobileNet_0.25", "other", 0.99, "gone", 0.1, group="o"))
        records.insert(0, _row("MobileNet_0.25", "gone", 0.1, group="old"))
    for record in records:
        runlog.append_record(tmp_path, record)
    assert find_row(tmp_path, "MobileNet_0.25").config_hash == expected
    assert find_row(tmp_path, None).config_hash == expected  # the top of the frozen table
    assert find_row(tmp_path, "MobileNet_0.25", "frozen").config_hash == "f3"
    if tuned_accuracies:  # the latest fine-tuned run, whatever it continues
        assert find_row(tmp_path, "MobileNet_0.25", "fine-tuned").config_hash == "other"
        assert find_row(tmp_path, None, "fine-tuned").config_hash == "other"


@pytest.mark.parametrize("case", ["no fine-tuned row", "no frozen row", "unknown stage"])
def test_a_stage_the_row_lacks_is_one_line_and_exit_2(tmp_path, capsys, case):
    out = tmp_path / "results"
    save_head(out / "heads" / "h.npz", [np.ones((4, 3), np.float32)] * 2, ["a", "b"])
    if case == "no frozen row":
        runlog.append_record(out, {**_tuned_row("MobileNet_0.25", "t", 0.5, "f", 0.4),
                                   "head_file": "heads/h.npz"})
    else:
        runlog.append_record(out, _row("MobileNet_0.25", "f", 0.5, head_file="heads/h.npz"))
    stage = {"no fine-tuned row": "fine-tuned", "no frozen row": "frozen"}.get(case, "last")
    assert main(["export", "MobileNet_0.25", str(tmp_path / "m.keras"), "--out", str(out),
                 "--stage", stage]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bench: error: ") and "Traceback" not in err
    expected = {"no fine-tuned row": "No ok fine-tuned row of MobileNet_0.25",
                "no frozen row": "No ok frozen row of MobileNet_0.25",
                "unknown stage": "--stage: expected one of frozen, fine-tuned; received 'last'"}
    assert expected[case] in err, err
    assert not (tmp_path / "m.keras").exists()
