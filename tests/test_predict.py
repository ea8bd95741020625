"""python -m bench predict: an exported model's classes for a folder of images, as CSV, equal to
what the model itself predicts; bad inputs are one line, exit 2, and leave nothing behind."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_same_predictions, read_rows, synthetic_arrays
from PIL import Image

from bench.__main__ import main

N_IMAGES = 30


def _class_names() -> list[str]:
    data = os.environ.get("BENCH_TEST_DATA")
    if data and (Path(data) / "meta.json").is_file():
        return json.loads((Path(data) / "meta.json").read_text())["classes"]
    return [f"class_{i}" for i in range(3)]


def _test_images() -> np.ndarray:
    """Real photos from ../shared when BENCH_TEST_DATA names them, else synthetic ones."""
    data = os.environ.get("BENCH_TEST_DATA")
    if data:
        return np.load(Path(data) / "test_images.npy")[:N_IMAGES]
    return synthetic_arrays(n_test=N_IMAGES)[2]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A model as bench export writes it: MobileNet_0.25 (Keras' genuine weights when
    BENCH_TEST_WEIGHTS_DIR has them, else random) under a seeded head, and its classes file."""
    import keras

    from backbones import get
    from bench.config import RunConfig
    from bench.engine import head
    from bench.engine.export import build_model
    from bench.weights import ResolvedWeights

    spec, names = get("MobileNet_0.25"), _class_names()
    file = Path(os.environ.get("BENCH_TEST_WEIGHTS_DIR", "/nonexistent")) / spec.weights_file(224)
    weights = (ResolvedWeights("file", file.name, file.name, str(file)) if file.is_file()
               else ResolvedWeights("random", "random", None))
    keras.utils.set_random_seed(0)
    trained = head.build_head(len(names))
    trained.build((None, spec.feature_width))
    model = build_model(spec, RunConfig(image_size=160), weights, 0, trained.get_weights(),
                        len(names))
    target = tmp_path_factory.mktemp("model") / "m.keras"
    model.save(target)
    target.with_suffix(".classes.json").write_text(json.dumps({"class_names": names}))
    return target


@pytest.fixture
def photos(tmp_path) -> Path:
    """Image files of two sizes in a folder and a subfolder, with a file that is no image."""
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    for i, pixels in enumerate(_test_images()):
        image = Image.fromarray(pixels)
        if i % 5 == 0:  # another size and aspect ratio: a batch of its own
            image = image.resize((80, 48))
        image.save(folder / ("more" if i % 2 else ".") / f"{i:03d}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def _rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max())
    return exp / exp.sum()


def test_predict_gives_the_models_own_classes(exported, photos, capsys):
    import keras

    assert main(["predict", str(photos), "--model", str(exported), "--batch-size", "4"]) == 0
    out, err = capsys.readouterr()
    rows = _rows(out)
    expected = sorted(p.relative_to(photos).as_posix() for p in photos.rglob("*.png"))
    assert [Path(r["path"]).relative_to(photos).as_posix() for r in rows] == expected
    model = keras.models.load_model(exported)  # as a user without bench would
    names = json.loads(exported.with_suffix(".classes.json").read_text())["class_names"]
    for row in rows:
        pixels = np.asarray(Image.open(row["path"]).convert("RGB"))[None]
        logits = model.predict(pixels, verbose=0)[0]
        assert row["class"] == names[int(logits.argmax())], row
        assert float(row["probability"]) == pytest.approx(_softmax(logits).max(), abs=1e-5)
    assert len({r["class"] for r in rows}) > 1  # a model that tells images apart
    assert err == ""


def test_output_file_top_k_and_named_files(exported, photos, tmp_path, capsys):
    named = photos / "000.png"
    target = tmp_path / "predictions.csv"
    assert main(["predict", str(named), "--model", str(exported), str(photos), "--top", "3",
                 "--output", str(target)]) == 0
    assert capsys.readouterr().out == f"Wrote {target}: {N_IMAGES} images\n"
    rows = _rows(target.read_text())
    assert len(rows) == N_IMAGES and rows[0]["path"] == str(named)  # each file once, in order
    assert list(rows[0]) == ["path", "class", "probability", "class_2", "probability_2",
                             "class_3", "probability_3"]
    for row in rows:
        probabilities = [float(row[k]) for k in ("probability", "probability_2",
                                                 "probability_3")]
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1
        assert len({row["class"], row["class_2"], row["class_3"]}) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos", "predictions.csv"]


def test_without_a_classes_file_the_classes_are_indices(exported, photos, tmp_path, capsys):
    bare = tmp_path / "bare.keras"
    shutil.copyfile(exported, bare)
    assert main(["predict", str(photos / "000.png"), "--model", str(bare)]) == 0
    out, err = capsys.readouterr()
    assert _rows(out)[0]["class"].isdigit()
    assert err.count("\n") == 1 and err.startswith("bench: warning: no bare.classes.json")


@pytest.mark.skipif(sys.platform != "linux", reason="file names as bytes")
def test_a_file_name_that_is_not_utf8_is_written_as_its_bytes(exported, photos, tmp_path):
    odd = photos / os.fsdecode(b"caf\xe9.png")
    shutil.copyfile(photos / "000.png", odd)
    target = tmp_path / "p.csv"
    assert main(["predict", str(odd), "--model", str(exported), "--output", str(target)]) == 0
    assert b"caf\xe9.png," in target.read_bytes()


def _fixed_size_model(path: Path) -> None:
    import keras

    inputs = keras.Input((32, 32, 3))
    keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(inputs))
                ).save(path)


BAD = {
    "missing model": ("--model", "none.keras"),
    "not a model": ("--model", "text.keras"),
    "a zip that is no model": ("--model", "zip.keras"),
    "a folder as model": ("--model", "folder.keras"),
    "not .keras": ("--model", "m.h5"),
    "a fixed-size model": ("--model", "fixed.keras"),
    "classes do not match": ("--model", "other.keras"),
    "classes unreadable": ("--model", "broken.keras"),
    "no images": ("images", "empty"),
    "missing image": ("images", "gone.png"),
    "corrupt image": ("images", "photos"),
    "a FIFO": ("images", "fifo.png"),
    "--top above the classes": ("--top", "99"),
    "--batch-size 0": ("--batch-size", "0"),
    "output folder missing": ("--output", "nowhere/p.csv"),
}
EXPECTED = {
    "missing model": "no such file", "not a model": "no zip archive",
    "a zip that is no model": "Keras cannot load", "a folder as model": "received a folder",
    "not .keras": "expected a .keras file",
    "a fixed-size model": "RGB images of any size",
    "classes do not match": "class names, one per output",
    "classes unreadable": "class_names", "no images": "received none",
    "missing image": "no such image file", "corrupt image": "truncated",
    "a FIFO": "received a FIFO", "--top above the classes": "at most",
    "--batch-size 0": "positive integer", "output folder missing": "writable folder",
}


def _zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "{}")


def _corrupt_copy(photos: Path, folder: Path) -> None:
    shutil.copytree(photos, folder)
    (folder / "more" / "009.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 64)  # cut short


def _bad_input(case: str, tmp: Path, exported: Path, photos: Path) -> list[str]:
    """The arguments of `case`, with the files it needs made in tmp."""
    args = {"images": str(photos), "--model": str(exported), "--output": str(tmp / "p.csv")}
    flag, value = BAD[case]
    args[flag] = str(tmp / value) if flag in ("images", "--model", "--output") else value
    if case in ("classes do not match", "classes unreadable"):
        shutil.copyfile(exported, tmp / value)
        text = '{"class_names": ["a", "b"]}' if case == "classes do not match" else "{oops"
        (tmp / value).with_suffix(".classes.json").write_text(text)
    made = {"not a model": lambda p: p.write_text("hello"), "a zip that is no model": _zip,
            "a folder as model": Path.mkdir, "no images": Path.mkdir,
            "a fixed-size model": _fixed_size_model, "a FIFO": os.mkfifo,
            "corrupt image": lambda p: _corrupt_copy(photos, p)}
    if case in made:
        made[case](Path(args[flag]))
    if case == "no images":
        (tmp / value / "readme.txt").write_text("no images here")
    images = args.pop("images")
    return ["predict", images, *[x for item in args.items() for x in item]]


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(case, exported, photos, tmp_path,
                                                         capsys):
    work = tmp_path / "work"
    work.mkdir()
    argv = _bad_input(case, work, exported, photos)
    before = sorted(p.name for p in work.iterdir())
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("bench: error: ") and "Traceback" not in err
    assert EXPECTED[case] in err
    assert sorted(p.name for p in work.iterdir()) == before  # no CSV, no temporary file


@pytest.mark.slow
def test_predict_on_an_exported_run_gives_the_runs_predictions(tmp_path, real_weights_dir,
                                                               real_data_dir, capsys):
    """The whole path: a run, its export, and predict on its test images saved as PNG files."""
    out, model = tmp_path / "results", tmp_path / "winner.keras"
    assert main(["MobileNet_0.25", "--weights-dir", str(real_weights_dir), "--data",
                 str(real_data_dir), "--epochs", "2", "--quiet", "--out", str(out),
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    assert main(["export", "--out", str(out), str(model),
                 "--weights-dir", str(real_weights_dir)]) == 0
    folder = tmp_path / "test"
    folder.mkdir()
    for i, pixels in enumerate(np.load(real_data_dir / "test_images.npy")):
        Image.fromarray(pixels).save(folder / f"{i:04d}.png")
    capsys.readouterr()
    assert main(["predict", str(folder), "--model", str(model), "--top", "10"]) == 0
    rows = _rows(capsys.readouterr().out)
    (row,) = read_rows(out)
    names = row["class_names"]
    probabilities = np.array([[dict((r[f"class{s}"], float(r[f"probability{s}"]))
                                    for s in ["", *(f"_{k}" for k in range(2, 11))])[n]
                               for n in names] for r in rows])
    assert_same_predictions(np.log(probabilities), row["predictions"])
