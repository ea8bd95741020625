"""Image folders as datasets: layouts, split, identity, decoding, bad folders, the CLI."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_features_close, fresh_python, read_rows, synthetic_arrays
from PIL import Image

from bench.data import DataError, LazyDataset, load_dataset
from bench.data import folder as imagefolder

ROOT = Path(__file__).resolve().parent.parent
NAMES = ("apple", "banana", "cherry")


def write_folder(root: Path, arrays=None, class_names=NAMES, suffix=".png", split=True) -> Path:
    """arrays (train images, labels, test images, labels) as DIR/train|test/<class>/NNNN.png,
    or all in DIR/<class>/ when not `split`; file names keep each image's index."""
    arrays = synthetic_arrays() if arrays is None else arrays
    for part, images, labels in (("train", *arrays[:2]), ("test", *arrays[2:])):
        for i, (pixels, label) in enumerate(zip(images, labels, strict=True)):
            folder = root / part / class_names[label] if split else root / class_names[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(folder / f"{part}-{i:04d}{suffix}")
    return root


def in_folder_order(images: np.ndarray, labels: np.ndarray):
    """The arrays in the folder's order: by class, then by index (the file names)."""
    order = np.lexsort((np.arange(len(labels)), labels))
    return images[order], labels[order]


def first_image(root: Path) -> Path:
    return sorted((root / "train" / NAMES[0]).iterdir())[0]


def bench_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


# --- layouts, arrays, split ------------------------------------------------------------------

def test_png_folder_gives_the_arrays_bit_for_bit(tmp_path):
    arrays = synthetic_arrays()
    (tmp_path / "f" / "train" / ".DS_Store").parent.mkdir(parents=True)
    (tmp_path / "f" / "train" / ".DS_Store").write_bytes(b"\0")
    write_folder(tmp_path / "f", arrays)
    (tmp_path / "f" / "test" / "apple" / "notes.txt").write_text("not an image")
    data = load_dataset(tmp_path / "f")
    assert isinstance(data, LazyDataset) and not data.decoded and data.kind == "folder"
    assert data.class_names == NAMES and data.image_shape == (32, 32, 3)
    assert (data.n_train, data.n_test) == (48, 24)
    assert any("2 non-image files ignored" in n for n in data.notes)
    train = in_folder_order(*arrays[:2])
    val = in_folder_order(*arrays[2:])
    assert data.train_images.dtype == np.uint8
    np.testing.assert_array_equal(data.train_images, train[0])
    np.testing.assert_array_equal(data.train_labels, train[1])
    np.testing.assert_array_equal(data.test_images, val[0])
    np.testing.assert_array_equal(data.test_labels, val[1])


def test_val_folder_is_the_evaluation_split(tmp_path):
    write_folder(tmp_path / "f")
    (tmp_path / "f" / "test").rename(tmp_path / "f" / "val")
    data = load_dataset(tmp_path / "f")
    assert data.n_test == 24 and "train/ and val/" in data.notes[0]


def test_class_only_folder_is_split_stratified_and_the_same_every_time(tmp_path):
    arrays = synthetic_arrays(n_train=60, n_test=0)
    write_folder(tmp_path / "f", (*arrays[:2], arrays[0][:0], arrays[1][:0]), split=False)
    first = imagefolder.list_folder(tmp_path / "f", test_fraction=0.25)
    again = imagefolder.list_folder(tmp_path / "f", test_fraction=0.25)
    assert first == again
    held = np.bincount([label for _, label in first.val], minlength=3)
    assert held.tolist() == [5, 5, 5]  # a quarter of each class's 20
    assert not {f for f, _ in first.train} & {f for f, _ in first.val}
    other = imagefolder.list_folder(tmp_path / "f", test_fraction=0.5)
    assert np.bincount([label for _, label in other.val]).tolist() == [10, 10, 10]
    # the fraction and seed are part of the identity
    checksums = {imagefolder.folder_checksum(listing) for listing in (first, again, other)}
    assert len(checksums) == 2


def test_class_only_folder_resumes_on_a_rerun(tmp_path):
    """In a child process (--timeout-min), which reads the decoded arrays with their identity."""
    arrays = synthetic_arrays(n_train=24, n_test=0, side=8)
    write_folder(tmp_path / "f", (*arrays[:2], arrays[0][:0], arrays[1][:0]), split=False)
    args = ["dense", "--epochs", "1", "--quiet", "--timeout-min", "10", "--data",
            str(tmp_path / "f"), "--out", str(tmp_path / "out"), "--cache-dir",
            str(tmp_path / "cache")]
    first = bench_cli(*args)
    assert first.returncode == 0, first.stderr
    again = bench_cli(*args)
    assert again.returncode == 0, again.stderr
    assert "skipped, runs.jsonl already has an ok row" in again.stdout
    (row,) = read_rows(tmp_path / "out")
    assert row["data_kind"] == "folder" and row["data"] == str(tmp_path / "f")
    assert (row["n_train"], row["n_test"]) == (18, 6)


# --- identity --------------------------------------------------------------------------------

def test_checksum_changes_with_one_image_and_not_with_listing_order(tmp_path, monkeypatch):
    folder = write_folder(tmp_path / "f")
    before = load_dataset(folder).checksum()
    real_walk, real_iterdir = os.walk, Path.iterdir

    def reversed_walk(top, *args, **kwargs):
        for here, dirs, files in real_walk(top, *args, **kwargs):
            dirs.reverse()
            files.reverse()
            yield here, dirs, files

    monkeypatch.setattr(imagefolder.os, "walk", reversed_walk)
    monkeypatch.setattr(Path, "iterdir", lambda self: reversed(list(real_iterdir(self))))
    assert load_dataset(folder).checksum() == before
    monkeypatch.undo()
    path = next((folder / "train" / "banana").iterdir())
    pixels = np.asarray(Image.open(path)).copy()
    pixels[0, 0, 0] ^= 1
    Image.fromarray(pixels).save(path)
    assert load_dataset(folder).checksum() != before


def test_the_folder_checksum_travels_to_a_child_process(tmp_path):
    from bench.executors.common import child_data_folder

    data = load_dataset(write_folder(tmp_path / "f"))
    (tmp_path / "tmp").mkdir()
    copy = load_dataset(child_data_folder(data, tmp_path / "tmp"), download=False)
    assert copy.checksum() == data.checksum()
    assert (copy.kind, copy.source) == ("folder", data.source)
    np.testing.assert_array_equal(copy.train_images, data.train_images)


# --- decoding --------------------------------------------------------------------------------

def _exif_rotated(pixels: np.ndarray, path: Path) -> None:
    """Saved turned a quarter, with EXIF orientation 6 saying how to turn it back."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.rot90(pixels, k=1)).save(path, exif=exif, quality=95)


def write_mixed_folder(root: Path, arrays) -> Path:
    """Every format and colour mode bench accepts, at several sizes and aspect ratios."""
    sizes = [(64, 64), (96, 96), (80, 64), (64, 80), (128, 128), (100, 75)]
    kinds = [(".jpg", "RGB"), (".png", "RGB"), (".bmp", "RGB"), (".webp", "RGB"),
             (".gif", "P"), (".png", "L"), (".bmp", "P"), (".webp", "RGBA"), (".png", "RGBA"),
             (".jpg", "CMYK"), (".jpg", "L"), (".png", "P")]
    names = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
             "truck")
    for part, images, labels in (("train", *arrays[:2]), ("test", *arrays[2:])):
        for i, (pixels, label) in enumerate(zip(images, labels, strict=True)):
            folder = root / part / names[label]
            folder.mkdir(parents=True, exist_ok=True)
            suffix, mode = kinds[i % len(kinds)]
            if i % 50 == 7:
                _exif_rotated(pixels, folder / f"{i:04d}-rotated.jpg")
                continue
            img = Image.fromarray(pixels).resize(sizes[i % len(sizes)], Image.BILINEAR)
            img = img.convert(mode, palette=Image.ADAPTIVE) if mode == "P" else img.convert(mode)
            img.save(folder / f"{i:04d}{suffix}", quality=95)
    return root


def test_every_format_and_mode_decodes_to_rgb(tmp_path):
    arrays = synthetic_arrays(n_train=40, n_test=16, side=32, n_classes=3)
    folder = write_mixed_folder(tmp_path / "f", arrays)
    data = load_dataset(folder, storage_size=48)
    assert data.image_shape == (48, 48, 3) and any("sizes stored at 48x48" in n
                                                   for n in data.notes)
    assert data.train_images.shape == (40, 48, 48, 3) and data.train_images.dtype == np.uint8
    # the EXIF-rotated JPEG comes back upright: close to its source, not to a turned copy
    rotated = sorted((folder / "train").rglob("*-rotated.jpg"))
    assert rotated
    upright = np.asarray(Image.open(rotated[0]).transpose(Image.ROTATE_270)).astype(int)
    from bench.data.images import decode

    decoded = decode(rotated[0]).astype(int)
    assert decoded.shape == upright.shape == (32, 32, 3)
    assert np.abs(decoded - upright).mean() < 1
    # the stored size belongs to the identity of a mixed folder
    assert load_dataset(folder, storage_size=64).checksum() != data.checksum()


def test_decoding_is_lazy_and_happens_once(tmp_path, monkeypatch):
    from bench.data import images as imagefiles

    data = load_dataset(write_folder(tmp_path / "f"))
    calls = []
    real = imagefiles.decode
    monkeypatch.setattr(imagefiles, "decode", lambda path: calls.append(path) or real(path))
    data.checksum()
    assert data.image_shape == (32, 32, 3) and calls == []
    assert len(data.train_images) + len(data.test_images) == len(calls) == 72


def test_skip_bad_images_leaves_them_out_and_names_them(tmp_path):
    folder = write_folder(tmp_path / "f")
    bad = first_image(folder)
    bad.write_bytes(bad.read_bytes()[:60])
    with pytest.raises(DataError, match=f"{bad.name}: .*corrupt or truncated"):
        load_dataset(folder).train_images  # noqa: B018
    data = load_dataset(folder, skip_bad_images=True)
    assert data.train_images.shape[0] == 47 and data.n_train == 47
    name = bad.relative_to(folder).as_posix()
    assert data.skipped_images == (name,) and data.source_fields()["skipped_images"] == [name]


# --- bad folders: one line, exit 2 ----------------------------------------------------------

def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels: Pillow reads the size without decoding."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
            + struct.pack(">I", zlib.crc32(chunk)) + b"\0\0\0\0IEND\xaeB`\x82")


def _bad(case: str, root: Path) -> str:
    """Makes a bad folder of kind `case`; returns what the message must name."""
    if case == "no images":
        for name in NAMES:
            (root / name).mkdir(parents=True)
            (root / name / "readme.txt").write_text("x")
        return "no images at all"
    write_folder(root)
    first = first_image(root)
    if case == "one class":
        for name in NAMES[1:]:
            for part in ("train", "test"):
                for f in (root / part / name).iterdir():
                    f.unlink()
                (root / part / name).rmdir()
        return "one class only"
    if case == "empty class":
        (root / "train" / "durian").mkdir()
        (root / "train" / "durian" / "Thumbs.db").write_bytes(b"x")
        (root / "test" / "durian").mkdir()
        return "durian"
    if case == "class sets differ":
        (root / "test" / "cherry").rename(root / "test" / "coconut")
        return "test/ lacks cherry"
    if case == "corrupt":
        first.write_bytes(b"this is no png at all")
        return first.name
    if case == "truncated":
        first.write_bytes(first.read_bytes()[:70])
        return first.name
    if case == "bomb":
        first.write_bytes(_png_header(20000, 20000))
        return f"{first.name}: expected an image small enough"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["no images", "one class", "empty class", "class sets differ",
                                  "corrupt", "truncated", "bomb"])
def test_a_bad_folder_is_one_line_and_exit_2(tmp_path, case):
    named = _bad(case, tmp_path / "f")
    proc = bench_cli("dense", "--epochs", "1", "--data", str(tmp_path / "f"), "--out",
                     str(tmp_path / "out"), timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert 1 <= len(lines) <= 3 and "Traceback" not in proc.stderr
    assert named in lines[-1]
    assert not read_rows(tmp_path / "out")  # stopped before any model


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_an_unreadable_image_is_one_line_and_exit_2(tmp_path):
    write_folder(tmp_path / "f")
    path = first_image(tmp_path / "f")
    path.chmod(0)
    proc = bench_cli("dense", "--data", str(tmp_path / "f"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and path.name in proc.stderr
    assert "permission denied" in proc.stderr.lower() and "Traceback" not in proc.stderr


def test_an_unreadable_file_is_named(tmp_path, monkeypatch):
    """As the test above, where root's reads cannot be refused: the open fails as it would."""
    folder = write_folder(tmp_path / "f")
    real_open = open

    def refusing(path, *args, **kwargs):
        if str(path).endswith("-0003.png"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refusing)
    with pytest.raises(DataError, match=r"-0003\.png: expected a readable image file; "
                                        "received permission denied"):
        load_dataset(folder)


def test_an_npy_folder_is_still_an_npy_folder(tiny_data_dir):
    assert load_dataset(tiny_data_dir).kind == "npy"
    assert not imagefolder.is_image_folder(tiny_data_dir)


# --- a resumed sweep decodes nothing ------------------------------------------------------

_RESUME_PROBE = """
import json, sys
from bench import commands
from bench.data import images as imagefiles
from bench.__main__ import parse, run_options
from bench.sweep import run_sweep

def refuse(path):
    raise AssertionError(f"decoded {path}")

imagefiles.decode = refuse
options, config = run_options(parse(json.loads(sys.argv[1])))
specs = commands._select(options)
data = commands._load(options.data, options, specs, config)
outcome = run_sweep(specs, config, data, options.out)
result = {"skipped": len(outcome.skipped), "ran": len(outcome.results)}
"""


def test_a_fully_resumed_folder_sweep_decodes_nothing_and_imports_no_tensorflow(tmp_path):
    arrays = synthetic_arrays(n_train=12, n_test=6, side=8, n_classes=2)
    write_folder(tmp_path / "f", arrays, class_names=("a", "b"))
    args = ["dense", "--epochs", "1", "--quiet", "--no-isolate", "--data",
            str(tmp_path / "f"), "--out", str(tmp_path / "out"), "--cache-dir",
            str(tmp_path / "cache")]
    assert bench_cli(*args).returncode == 0
    assert fresh_python(_RESUME_PROBE, json.dumps(args)) == {
        "result": {"skipped": 1, "ran": 0}, "heavy": []}


# --- real photos and weights -------------------------------------------------------------

def _features(data, weights_dir: Path):
    """The MobileNet_0.25 features a run of `data` left in the feature cache."""
    from backbones import get
    from bench.cache import FeatureCache, default_cache_dir
    from bench.config import RunConfig
    from bench.identity import identify

    spec, config = get("MobileNet_0.25"), RunConfig(weights_dir=str(weights_dir))
    key = identify(spec, config, data).feature_key(spec, config)
    return FeatureCache(default_cache_dir()).load(key, spec.name, data.n_train, data.n_test)


def test_real_photos_as_png_give_the_npy_run(tmp_path, real_data_dir, real_weights_dir):
    import bench

    npy = load_dataset(real_data_dir)
    arrays = (npy.train_images, npy.train_labels, npy.test_images, npy.test_labels)
    png = load_dataset(write_folder(tmp_path / "png", arrays, class_names=npy.class_names))
    assert png.class_names == npy.class_names
    train_order = np.lexsort((np.arange(npy.n_train), npy.train_labels))
    val_order = np.lexsort((np.arange(npy.n_test), npy.test_labels))
    np.testing.assert_array_equal(png.train_images, npy.train_images[train_order])
    np.testing.assert_array_equal(png.test_images, npy.test_images[val_order])
    rows = {name: bench.run("MobileNet_0.25", data=data, weights_dir=str(real_weights_dir))
            for name, data in (("npy", npy), ("png", png))}
    want, got = _features(npy, real_weights_dir), _features(png, real_weights_dir)
    # the pixels are equal (above); the features within TensorFlow's noise, since the PNG
    # run batches the images in another order
    assert_features_close(got.train, want.train[train_order])
    assert_features_close(got.val, want.val[val_order])
    accuracy = {name: float(df["test_accuracy"].iloc[0]) for name, df in rows.items()}
    assert accuracy["npy"] > 0.5 and abs(accuracy["png"] - accuracy["npy"]) <= 0.02, accuracy


def test_real_photos_of_mixed_sizes_formats_and_modes(tmp_path, real_data_dir,
                                                      real_weights_dir):
    npy = load_dataset(real_data_dir)
    folder = write_mixed_folder(
        tmp_path / "mixed", (npy.train_images, npy.train_labels, npy.test_images, npy.test_labels))
    proc = bench_cli("MobileNet_0.25", "--data", str(folder), "--weights-dir",
                     str(real_weights_dir), "--out", str(tmp_path / "out"), "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "sizes stored at 160x160" in proc.stdout
    (row,) = read_rows(tmp_path / "out")
    assert row["status"] == "ok" and row["test_accuracy"] >= 0.5, row["test_accuracy"]
    assert (row["n_train"], row["n_test"]) == (npy.n_train, npy.n_test)


def test_a_fifo_named_like_an_image_is_one_line_exit_2_not_a_hang(tmp_path):
    write_folder(tmp_path / "f", synthetic_arrays())
    fifo = tmp_path / "f" / "train" / NAMES[0] / "zz-pipe.png"
    os.mkfifo(fifo)
    proc = bench_cli("MobileNet_0.25", "--data", str(tmp_path / "f"), "--dry-run",
                     "--out", str(tmp_path / "out"), timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "FIFO" in lines[0] and "zz-pipe.png" in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()


def _non_utf8(folder: Path, name: bytes) -> Path:
    """folder/name, where name's bytes are not UTF-8 (Python holds them as surrogates)."""
    return Path(os.fsdecode(os.fsencode(folder) + b"/" + name))


def test_an_image_named_in_another_encoding_is_read_like_any(tmp_path):
    write_folder(tmp_path / "f", synthetic_arrays())
    first = first_image(tmp_path / "f")
    before = load_dataset(tmp_path / "f").checksum()
    first.rename(_non_utf8(first.parent, b"x\xfe.png"))
    data = load_dataset(tmp_path / "f")
    assert data.n_train == 48 and data.checksum() != before  # the name is part of the checksum


def test_a_class_folder_named_in_another_encoding_is_one_line_exit_2(tmp_path):
    write_folder(tmp_path / "f", synthetic_arrays())
    for split in ("train", "test"):
        (tmp_path / "f" / split / NAMES[0]).rename(_non_utf8(tmp_path / "f" / split, b"b\xff"))
    proc = bench_cli("MobileNet_0.25", "--data", str(tmp_path / "f"), "--weights", "random",
                     "--out", str(tmp_path / "out"), timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "UTF-8" in lines[0] and "b\\udcff" in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()
