"""bench.data: loading, validation catalogue, normalisation, checksum and the default download."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import fresh_python, write_dataset

from bench.data import FILES, DataError, Dataset, dollarstreet, from_arrays, load_dataset
from bench.data.dollarstreet import DEFAULT_DIR


def make_arrays(n_train=12, n_test=6, k=3, h=5, w=7, dtype=np.uint8, seed=0):
    """Synthetic train/val images and labels, every class present in both splits."""
    rng = np.random.default_rng(seed)
    train_images = rng.integers(0, 256, (n_train, h, w, 3)).astype(dtype)
    test_images = rng.integers(0, 256, (n_test, h, w, 3)).astype(dtype)
    return train_images, np.arange(n_train) % k, test_images, np.arange(n_test) % k


def raises_one_line(match: str | None, func, *args, error=DataError, **kwargs) -> Exception:
    """Assert an `error` (a DataError unless told) matching ``match`` whose message is a single
    line."""
    with pytest.raises(error, match=match) as info:
        func(*args, **kwargs)
    assert "\n" not in str(info.value)
    return info.value


# --- loading and normalisation -----------------------------------------------------------


def test_load_folder_basic(tmp_path):
    arrays = make_arrays()
    folder = write_dataset(tmp_path / "ds", arrays)
    ds = load_dataset(folder)
    assert isinstance(ds, Dataset)
    assert ds.source == str(folder)
    assert (ds.n_train, ds.n_test, ds.n_classes) == (12, 6, 3)
    assert ds.image_shape == (5, 7, 3)
    assert ds.class_names == ("class_0", "class_1", "class_2")
    assert ds.train_images.dtype == np.uint8 and ds.test_images.dtype == np.uint8
    assert ds.train_labels.dtype == np.int64 and ds.test_labels.shape == (6,)
    np.testing.assert_array_equal(ds.train_images, arrays[0])
    assert ds.notes == ()
    assert "n_train=12" in repr(ds)


def test_load_accepts_str_path_and_keeps_it_as_given(tmp_path, monkeypatch):
    write_dataset(tmp_path / "ds", make_arrays())
    monkeypatch.chdir(tmp_path)
    assert load_dataset("ds").source == "ds"


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint16])
def test_integer_images_become_uint8(dtype):
    ti, tl, vi, vl = make_arrays(dtype=dtype)
    ds = from_arrays(ti, tl, vi, vl)
    assert ds.train_images.dtype == np.uint8
    np.testing.assert_array_equal(ds.train_images, ti)
    assert ds.notes == ()


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_images_in_0_255_stay_float32(dtype):
    ti, tl, vi, vl = make_arrays()
    ds = from_arrays(ti.astype(dtype), tl, vi.astype(dtype), vl)
    assert ds.train_images.dtype == np.float32
    np.testing.assert_array_equal(ds.train_images, ti.astype(np.float32))
    assert ds.notes == ()


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_images_in_0_1_are_scaled(dtype):
    ti, tl, vi, vl = make_arrays()
    ds = from_arrays((ti / 255).astype(dtype), tl, (vi / 255).astype(dtype), vl)
    assert ds.train_images.dtype == np.float32
    np.testing.assert_allclose(ds.train_images, ti, atol=0.2)
    assert float(ds.test_images.max()) > 1
    assert any("0-1 detected; scaled to 0-255" in n for n in ds.notes)


def test_mixed_integer_and_float_splits_share_float32():
    ti, tl, vi, vl = make_arrays()
    ds = from_arrays(ti, tl, vi.astype(np.float64), vl)
    assert ds.train_images.dtype == ds.test_images.dtype == np.float32


@pytest.mark.parametrize("gray_shape", ["nhw", "nhw1"])
def test_grayscale_repeated_to_three_channels(gray_shape):
    ti, tl, vi, vl = make_arrays()
    g_train, g_val = ti[..., 0], vi[..., 0]
    if gray_shape == "nhw1":
        g_train, g_val = g_train[..., None], g_val[..., None]
    ds = from_arrays(g_train, tl, g_val, vl)
    assert ds.image_shape == (5, 7, 3)
    for c in range(3):
        np.testing.assert_array_equal(ds.train_images[..., c], ti[..., 0])
    assert any("grayscale images repeated to 3 channels" in n for n in ds.notes)


def test_any_image_size_is_kept():
    ti, tl, vi, vl = make_arrays(h=13, w=29)
    assert from_arrays(ti, tl, vi, vl).image_shape == (13, 29, 3)


def test_label_forms_accepted():
    ti, tl, vi, vl = make_arrays()
    ds = from_arrays(ti, tl.reshape(-1, 1).astype(np.uint8), vi, vl.astype(np.int32))
    assert ds.train_labels.dtype == np.int64 and ds.train_labels.shape == (12,)
    assert ds.notes == ()
    ds = from_arrays(ti, tl.astype(np.float32), vi, vl.astype(np.float64))
    assert ds.train_labels.dtype == np.int64
    np.testing.assert_array_equal(ds.train_labels, tl)
    assert any("float labels" in n for n in ds.notes)


def test_arrays_are_read_only_but_callers_arrays_are_not():
    ti, tl, vi, vl = make_arrays()
    ds = from_arrays(ti, tl, vi, vl)
    with pytest.raises(ValueError):
        ds.train_images[0, 0, 0, 0] = 1
    ti[0, 0, 0, 0] = 1  # the caller's own array stays theirs
    with pytest.raises(AttributeError):
        ds.source = "x"  # frozen


# --- class names -------------------------------------------------------------------------


def test_classes_txt(tmp_path):
    folder = write_dataset(tmp_path / "ds", make_arrays())
    (folder / "classes.txt").write_text("cat\ndog\n  bird \n\n")
    assert load_dataset(folder).class_names == ("cat", "dog", "bird")


def test_meta_json(tmp_path):
    folder = write_dataset(tmp_path / "ds", make_arrays())
    (folder / "meta.json").write_text('{"classes": ["a", "b", "c"], "seed": 0}')
    assert load_dataset(folder).class_names == ("a", "b", "c")


def test_meta_json_without_classes_falls_back(tmp_path):
    folder = write_dataset(tmp_path / "ds", make_arrays())
    (folder / "meta.json").write_text('{"seed": 0}')
    assert load_dataset(folder).class_names == ("class_0", "class_1", "class_2")


@pytest.mark.parametrize("kind", ["classes.txt", "meta.json"])
def test_class_list_of_wrong_length(tmp_path, kind):
    folder = write_dataset(tmp_path / "ds", make_arrays())
    if kind == "classes.txt":
        (folder / "classes.txt").write_text("cat\ndog\n")
    else:
        (folder / "meta.json").write_text('{"classes": ["a", "b", "c", "d"]}')
    raises_one_line(re.escape(kind) + r": expected 3 class names .*received [24]", load_dataset,
                    folder)


def test_bad_meta_json(tmp_path):
    folder = write_dataset(tmp_path / "ds", make_arrays())
    (folder / "meta.json").write_text("{not json")
    raises_one_line(r"meta\.json: expected JSON", load_dataset, folder)
    (folder / "meta.json").write_text('{"classes": "abc"}')
    raises_one_line(r"list of strings", load_dataset, folder)


def test_from_arrays_class_names():
    ti, tl, vi, vl = make_arrays()
    assert from_arrays(ti, tl, vi, vl, class_names=["x", "y", "z"]).class_names == ("x", "y", "z")
    raises_one_line(r"class_names: expected 3 class names .*received 2", from_arrays, ti, tl, vi,
                    vl, class_names=["x", "y"])


def test_dollar_street_folder_gets_the_lesson_class_names(tmp_path):
    ten = make_arrays(n_train=20, k=10, n_test=10)
    folder = write_dataset(tmp_path / "dataset_dollarstreet", ten)
    assert load_dataset(folder).class_names == dollarstreet.CLASSES
    assert dollarstreet.CLASSES[0] == "day bed" and dollarstreet.CLASSES[9] == "washing machine"
    other = write_dataset(tmp_path / "other", ten)
    assert load_dataset(other).class_names[0] == "class_0"


# --- checksum ----------------------------------------------------------------------------


def test_checksum_is_stable_and_sensitive(tmp_path):
    arrays = make_arrays()
    folder = write_dataset(tmp_path / "ds", arrays)
    first = load_dataset(folder).checksum()
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    assert load_dataset(folder).checksum() == first
    assert from_arrays(*arrays).checksum() == first  # identity of the data, not of its source
    ti, tl, vi, vl = arrays
    changed = vl.copy()
    changed[0] = (changed[0] + 1) % 3
    assert from_arrays(ti, tl, vi, changed).checksum() != first
    # Same values, different shape: the shape is part of the identity.
    assert from_arrays(*make_arrays(n_train=12, h=7, w=5)).checksum() != first


# --- validation catalogue: files ---------------------------------------------------------


def test_folder_missing(tmp_path):
    err = raises_one_line(r"not found", load_dataset, tmp_path / "nope")
    assert "put the four files there" in str(err) and "train_images.npy" in str(err)


def test_path_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    raises_one_line(r"expected a data folder .*received a file", load_dataset, tmp_path / "f")


@pytest.mark.parametrize("name", FILES)
def test_one_file_missing(tmp_path, name):
    folder = write_dataset(tmp_path / "ds", make_arrays(), **{name.removesuffix(".npy"): None})
    err = raises_one_line(r"missing " + re.escape(name), load_dataset, folder)
    assert str(folder) in str(err)


def test_truncated_npy(tmp_path):
    folder = write_dataset(tmp_path / "ds", make_arrays())
    path = folder / "train_images.npy"
    path.write_bytes(path.read_bytes()[:200])
    raises_one_line(re.escape(str(path)) + r": .*corrupt or truncated", load_dataset, folder)


@pytest.mark.parametrize("content", [b"", b"\x93NUMPY\x01\x00"])
def test_empty_or_header_only_npy(tmp_path, content):
    folder = write_dataset(tmp_path / "ds", make_arrays(), test_labels=content)
    raises_one_line(r"test_labels\.npy: expected a readable \.npy array", load_dataset, folder)


def test_object_dtype_npy(tmp_path):
    folder = write_dataset(tmp_path / "ds", make_arrays(),
                           train_labels=np.array([0, "a", None], dtype=object))
    raises_one_line(r"train_labels\.npy: .*object arrays are refused \(allow_pickle=False\)",
                    load_dataset, folder)


def test_pickled_file(tmp_path):
    folder = write_dataset(tmp_path / "ds", make_arrays(),
                           train_labels=pickle.dumps(list(range(12))))
    raises_one_line(r"train_labels\.npy: .*pickled Python object.*allow_pickle=False",
                    load_dataset, folder)


def test_not_an_npy_file(tmp_path):
    folder = write_dataset(tmp_path / "ds", make_arrays(), test_images=b"hello")
    raises_one_line(r"test_images\.npy: .*not \.npy", load_dataset, folder)


def test_npz_under_npy_name(tmp_path):
    folder = write_dataset(tmp_path / "ds", make_arrays())
    with open(folder / "train_images.npy", "wb") as fh:
        np.savez(fh, a=np.arange(3))
    raises_one_line(r"train_images\.npy: expected a single \.npy array; received an \.npz",
                    load_dataset, folder)


def test_file_messages_name_the_file(tmp_path):
    ti, tl, vi, vl = make_arrays()
    folder = write_dataset(tmp_path / "ds", (ti, tl, vi[:, :, :, :2], vl))
    raises_one_line(r"^test_images\.npy: expected 1 or 3 channels", load_dataset, folder)


# --- validation catalogue: contents ------------------------------------------------------


def test_images_not_nhwc_exact_message():
    ti, tl, vi, vl = make_arrays(n_train=10)
    err = raises_one_line(None, from_arrays, np.zeros((10, 64), np.uint8), tl, vi, vl)
    assert str(err) == ("train_images: expected images N×H×W×3 (or N×H×W / N×H×W×1 grayscale); "
                        "received shape (10, 64)")


def test_images_not_nhwc_from_file_exact_message(tmp_path):
    ti, tl, vi, vl = make_arrays(n_train=10)
    folder = write_dataset(tmp_path / "ds", (np.zeros((10, 64), np.uint8), tl, vi, vl))
    err = raises_one_line(None, load_dataset, folder)
    assert str(err) == ("train_images.npy: expected images N×H×W×3 (or N×H×W / N×H×W×1 "
                        "grayscale); received shape (10, 64)")


def _case(mutate):
    """Apply ``mutate`` to fresh arrays (a list: train_images, train_labels, test_images,
    test_labels) and return them."""
    arrays = list(make_arrays())
    mutate(arrays)
    return arrays


def _set(i, value):
    def mutate(arrays):
        arrays[i] = value(arrays[i]) if callable(value) else value

    return mutate


def _with(i, index, value):
    def mutate(arrays):
        arr = arrays[i].copy()
        arr[index] = value
        arrays[i] = arr

    return mutate


CATALOGUE = {
    "5-d images": (_set(0, lambda a: a[..., None]), r"train_images: expected images N×H×W×3"),
    "4 channels": (_set(0, lambda a: np.concatenate([a, a[..., :1]], -1)),
                   r"expected 1 or 3 channels .*received 4"),
    "channels first": (_set(0, lambda a: np.zeros((12, 3, 8, 8), np.uint8)),
                       r"received 8 .*channels-first"),
    "bool images": (_set(0, lambda a: a > 0), r"expected integer or float pixels"),
    "length mismatch": (_set(1, lambda a: a[:-1]),
                        r"train_labels: expected one label per image \(12.*received 11"),
    "float labels": (_set(1, lambda a: a + 0.5), r"train_labels: expected integer class labels"),
    "string labels": (_set(3, lambda a: a.astype(str)),
                      r"test_labels: expected integer class labels; received dtype <U"),
    "one-hot labels": (_set(1, lambda a: np.eye(3, dtype=np.int64)[a]), r"one-hot"),
    "negative label": (_with(3, 0, -1), r"test_labels: .*negative label -1"),
    "empty class": (_set(1, lambda a: np.array([0, 1, 3] * 4)),
                    r"class 2 has no training images"),
    "train one class": (_set(1, lambda a: np.zeros_like(a)),
                        r"train_labels: expected at least 2 classes; received only class 0"),
    "val one class": (_set(3, lambda a: np.ones_like(a)),
                      r"test_labels: expected at least 2 classes; received only class 1"),
    "empty train": (_set(0, lambda a: a[:0]), r"train_images: .*empty split"),
    "empty val": (_set(2, lambda a: a[:0]), r"test_images: .*empty split"),
    "empty val labels": (_set(3, lambda a: a[:0]), r"test_labels: .*empty split"),
    "nan pixels": (_set(0, lambda a: np.where(a == a.max(), np.nan, a.astype(np.float32))),
                   r"train_images: expected finite pixel values; received \d+ NaN or inf"),
    "inf pixels": (_set(2, lambda a: np.full(a.shape, np.inf, np.float32)), r"NaN or inf"),
    "val label outside": (_with(3, 0, 7), r"test_labels: expected labels within the training "
                          r"classes 0\.\.2; received 7"),
    "int pixels above 255": (_set(0, lambda a: a.astype(np.int32) + 1),
                             r"expected integer pixels in 0-255; received range"),
    "int pixels below 0": (_set(2, lambda a: a.astype(np.int64) - 1), r"range -1 to"),
    "float pixels above 255": (_set(0, lambda a: a.astype(np.float32) * 2), r"0-255"),
    "float pixels below 0": (_set(0, lambda a: a.astype(np.float32) - 5), r"range -5"),
    "val 0-255 while train 0-1": (_set(0, lambda a: a / 255.0), r"test_images: .*0-1 like"),
    "val 0-1 while train 0-255": (_set(2, lambda a: a / 255.0), r"test_images: .*0-255 like"),
    "image size mismatch": (_set(2, lambda a: a[:, :4]),
                            r"test_images: expected images of the same size .*5×7.*4×7"),
    "ragged images": (_set(0, lambda a: [a[0], a[1, :3]]),
                      r"train_images: .*ragged nested sequence"),
    "object images": (_set(0, lambda a: np.array([None] * 12, dtype=object)),
                      r"object arrays are refused"),
}


@pytest.mark.parametrize("case", list(CATALOGUE))
def test_catalogue(case):
    mutate, pattern = CATALOGUE[case]
    raises_one_line(pattern, from_arrays, *_case(mutate))


def test_gap_from_files_names_the_file(tmp_path):
    ti, tl, vi, vl = make_arrays()
    folder = write_dataset(tmp_path / "ds", (ti, np.array([0, 1, 3] * 4), vi, vl))
    raises_one_line(r"^train_labels\.npy: .*class 2 has no training images", load_dataset,
                    folder)


def test_no_tensorflow_at_import():
    assert fresh_python("import bench.data")["heavy"] == []


# --- the default download ----------------------------------------------------------------


def fake_get_file(arrays, calls, fail_on=None, exc=None, write_partial=False):
    """Stand-in for keras.utils.get_file that writes synthetic arrays where get_file would."""

    def get_file(fname, origin, file_hash=None, hash_algorithm="auto", cache_dir=None,
                 cache_subdir="datasets", force_download=False, **kwargs):
        calls.append((fname, origin, file_hash, hash_algorithm))
        target = Path(os.path.join(cache_dir, cache_subdir, fname))
        name = fname.removesuffix(".part")
        if name == fail_on:
            if write_partial:
                target.write_bytes(b"\x93NUMPY partial")
            raise exc
        with open(target, "wb") as fh:
            np.save(fh, arrays[FILES.index(name)])
        return str(target)

    return get_file


@pytest.fixture
def keras_utils():
    keras = pytest.importorskip("keras")
    return keras.utils


def test_default_folder_is_downloaded_then_loaded(tmp_path, monkeypatch, keras_utils):
    monkeypatch.chdir(tmp_path)
    calls = []
    arrays = make_arrays(n_train=20, n_test=10, k=10)
    monkeypatch.setattr(keras_utils, "get_file", fake_get_file(arrays, calls))
    ds = load_dataset()
    assert sorted(c[0] for c in calls) == sorted(f"{n}.part" for n in FILES)
    for fname, origin, _hash, _algorithm in calls:
        assert origin.startswith("https://zenodo.org/records/10970014/files/")
        assert fname.removesuffix(".part") in origin
    assert sorted(p.name for p in (tmp_path / DEFAULT_DIR).iterdir()) == sorted(
        [*FILES, dollarstreet.MANIFEST])
    assert ds.source == str(DEFAULT_DIR) and ds.n_train == 20
    assert ds.class_names == dollarstreet.CLASSES
    # Second call: everything present, nothing downloaded.
    calls.clear()
    load_dataset(DEFAULT_DIR)
    assert calls == []


def test_download_only_fetches_missing_files(tmp_path, monkeypatch, keras_utils):
    monkeypatch.chdir(tmp_path)
    arrays = make_arrays(n_train=20, n_test=10, k=10)
    write_dataset(tmp_path / DEFAULT_DIR, arrays)
    (tmp_path / DEFAULT_DIR / "test_labels.npy").unlink()
    calls = []
    monkeypatch.setattr(keras_utils, "get_file", fake_get_file(arrays, calls))
    load_dataset("data/dataset_dollarstreet")  # the default, spelled out, downloads too
    assert [c[0] for c in calls] == ["test_labels.npy.part"]


def test_download_failure_message_and_cleanup(tmp_path, monkeypatch, keras_utils):
    monkeypatch.chdir(tmp_path)
    url = dollarstreet.DOWNLOADS["train_images.npy"]
    exc = Exception(f"URL fetch failure on {url}: None -- [Errno -3] Temporary failure in "
                    "name resolution")
    calls = []
    monkeypatch.setattr(keras_utils, "get_file",
                        fake_get_file(make_arrays(), calls, "train_images.npy", exc, True))
    err = raises_one_line(None, load_dataset)
    assert str(err) == (
        f"Could not download the Dollar Street 10 dataset into {DEFAULT_DIR} (train_images.npy: "
        "None -- [Errno -3] Temporary failure in name resolution). Download the four files of "
        "https://zenodo.org/records/10970014 into that folder, or pass --data DIR."
    )
    assert not (tmp_path / DEFAULT_DIR).exists()  # nothing left that could pass for data


def test_download_failure_midway_leaves_only_complete_files(tmp_path, monkeypatch, keras_utils):
    dest = tmp_path / "dl"
    exc = ValueError("Incomplete or corrupted file detected.")
    calls = []
    monkeypatch.setattr(keras_utils, "get_file",
                        fake_get_file(make_arrays(), calls, "test_images.npy", exc, True))
    raises_one_line(r"^Could not download .*test_images\.npy: Incomplete or corrupted",
                    dollarstreet.download, dest, error=dollarstreet.DownloadError)
    assert sorted(p.name for p in dest.iterdir()) == ["train_images.npy", "train_labels.npy"]


def test_download_off_or_other_folder_never_downloads(tmp_path, monkeypatch, keras_utils):
    monkeypatch.chdir(tmp_path)

    def boom(*args, **kwargs):
        raise AssertionError("get_file must not be called")

    monkeypatch.setattr(keras_utils, "get_file", boom)
    raises_one_line(r"not found \(downloading is off\)", load_dataset, download=False)
    raises_one_line(r"not found", load_dataset, tmp_path / "elsewhere")


def _file_table(tmp_path, arrays):
    """dollarstreet.DOWNLOADS pointing at local file:// copies."""
    src = write_dataset(tmp_path / "zenodo", arrays)
    return {name: (src / name).as_uri() for name in FILES}


def test_real_get_file_lands_files_directly_in_dest(tmp_path, monkeypatch, keras_utils):
    arrays = make_arrays()
    monkeypatch.setattr(dollarstreet, "DOWNLOADS", _file_table(tmp_path, arrays))
    dest = tmp_path / "nested" / "dataset_dollarstreet"
    dollarstreet.download(dest)
    assert sorted(p.name for p in dest.iterdir()) == sorted(FILES)
    assert load_dataset(dest).checksum() == from_arrays(*arrays).checksum()


# --- the shared example datasets ---------------------------------------------------------


def test_shared_example_folder():
    folder = os.environ.get("BENCH_TEST_DATA")
    if not folder:
        pytest.skip("BENCH_TEST_DATA is not set (a folder with the four .npy files)")
    ds = load_dataset(folder)
    assert ds.source == folder
    assert ds.train_images.ndim == 4 and ds.image_shape[-1] == 3
    assert ds.train_labels.dtype == np.int64 and ds.n_classes >= 2
    assert ds.checksum() == load_dataset(folder).checksum()
    if (Path(folder) / "meta.json").is_file():
        assert not ds.class_names[0].startswith("class_")
