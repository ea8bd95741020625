"""The lesson's layout: four .npy files in a folder (``train_images.npy``, ``train_labels.npy``,
``test_images.npy``, ``test_labels.npy``), with optional class names (classes.txt or meta.json),
read with load_npy: one file in, one array out, or a one-line DataError; never a pickle, never a
blind allocation (a .npy header states the array's shape, and np.load allocates what it states
before reading a byte: a damaged or hostile header claiming terabytes would end in MemoryError).

bench also writes this layout: the arrays of any dataset saved for a child process, with the
identity record that keeps the source's checksum, kind and name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.data.dataset import DataError, Dataset, arrays_checksum, build_dataset

# The lesson's (Zenodo record 10970014's) four files; the test split is the evaluation split.
FILES = ("train_images.npy", "train_labels.npy", "test_images.npy", "test_labels.npy")
# Written by bench beside the arrays of a decoded image folder saved for a child process: the
# child's dataset keeps the folder's identity, kind and source instead of its arrays' checksum.
IDENTITY_FILE = ".bench-identity.json"

_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def load_npy(path: str | os.PathLike) -> np.ndarray:
    """np.load without pickle, after checking that the file holds as many bytes as its header
    claims; every way a file can be unreadable becomes a DataError."""
    path = Path(path)
    check_size(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as err:
        msg = str(err)
        if "Object arrays" in msg:
            raise DataError(f"{path}: expected a numeric array; received an object array "
                            "(object arrays are refused (allow_pickle=False))") from err
        if "pickled" in msg:
            raise DataError(f"{path}: expected a NumPy .npy array; received {_not_npy(path)} "
                            "(pickled data is refused (allow_pickle=False))") from err
        raise DataError(f"{path}: expected a readable .npy array; received a corrupt or "
                        f"truncated file ({msg})") from err
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: expected a readable .npy array; received a corrupt, empty "
                        f"or unreadable file ({err})") from err
    if not isinstance(arr, np.ndarray):  # an .npz archive saved under a .npy name
        arr.close()
        raise DataError(f"{path}: expected a single .npy array; received an .npz archive")
    return arr


def check_size(path: str | os.PathLike) -> None:
    """Refuses a file whose size differs from what its header claims, before np.load
    allocates the claim. A header that does not parse is left to np.load, whose error is
    more telling (a pickle, an .npz, an empty file)."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            shape, _fortran, dtype = _HEADER_READERS[version](fh)
            header = fh.tell()
            real = os.fstat(fh.fileno()).st_size
    except (ValueError, EOFError, OSError, KeyError):
        return
    if dtype.hasobject:  # pickled objects have no fixed size; np.load refuses them anyway
        return
    claimed = header + int(np.prod(shape, dtype=object)) * dtype.itemsize
    if claimed != real:
        what = "truncated" if real < claimed else "longer than its array"
        raise DataError(f"{path}: expected {_size(claimed)}, as its header claims (shape "
                        f"{tuple(shape)}, dtype {dtype}); received a file of {_size(real)}: "
                        f"corrupt or {what}")


def _size(n: int) -> str:
    """Bytes, exactly, and in binary units when that reads better."""
    exact = f"{n:,} bytes"
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{exact} ({n / scale:.1f} {unit})"
    return exact


def _not_npy(path: Path) -> str:
    with open(path, "rb") as fh:
        head = fh.read(2)
    # Pickle protocols 2+ open with 0x80; anything else is simply not a .npy file.
    return "a pickled Python object" if head[:1] == b"\x80" else "a file that is not .npy"


def read_class_names(folder: Path) -> tuple[tuple[str, ...], str] | None:
    """Class names from classes.txt (one per line) or meta.json's "classes", with their file."""
    txt = folder / "classes.txt"
    if txt.is_file():
        try:
            lines = txt.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(f"{txt}: expected UTF-8 text, one class name a line; "
                            f"received an unreadable file ({err})") from err
        return tuple(line.strip() for line in lines if line.strip()), txt.name
    meta = folder / "meta.json"
    if meta.is_file():
        try:
            info = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(f"{meta}: expected JSON; received an unreadable file ({err})") from err
        if not isinstance(info, dict) or "classes" not in info:
            return None  # meta.json may describe other things; class names are optional
        classes = info["classes"]
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise DataError(f"{meta}: expected \"classes\" to be a list of strings; "
                            f"received {type(classes).__name__}")
        return tuple(classes), meta.name
    return None


def write_identity(folder: Path, data: Dataset, arrays_checksum: str) -> None:
    """Records what the arrays saved in `folder` are: `data`'s identity, kind and source."""
    record = {"checksum": data.checksum(), "arrays": arrays_checksum, "kind": data.kind,
              "source": data.source, "skipped_images": list(data.skipped_images)}
    (folder / IDENTITY_FILE).write_text(json.dumps(record))


def with_identity(folder: Path, data: Dataset) -> Dataset:
    """`data` with the identity recorded in `folder`, when its arrays are the ones recorded."""
    path = folder / IDENTITY_FILE
    if not path.is_file():
        return data
    record = json.loads(path.read_text())
    if data.checksum() != record["arrays"]:
        raise DataError(f"{folder}: the arrays changed since bench saved them")
    return replace(data, identity=record["checksum"], kind=record["kind"],
                   source=record["source"], skipped_images=tuple(record["skipped_images"]))


def is_npy_folder(folder: Path) -> bool:
    """A folder holding any of the four files (a missing one is then an error, not another
    kind of dataset)."""
    return folder.is_dir() and any((folder / name).exists() for name in FILES)


def load_folder(folder: Path, default_names: Sequence[str] | None = None) -> Dataset:
    """The four files of `folder`, checked; class names from its files, else `default_names`
    (when as many), else class_<i>."""
    source = str(folder)
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{source}: expected a data folder holding {', '.join(FILES)}; "
                        "received a file")
    if not folder.is_dir():
        raise DataError(f"Data folder {source} not found: expected a folder holding "
                        f"{', '.join(FILES)} (test = validation); put the four files there, "
                        "or pass --data DIR.")
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise DataError(f"{source}: expected the four files {', '.join(FILES)}; missing "
                        f"{', '.join(missing)}")
    arrays = [load_npy(folder / name) for name in FILES]
    data = build_dataset(*arrays, names=FILES, class_names=read_class_names(folder),
                           default_names=tuple(default_names) if default_names else None,
                           source=source)
    return with_identity(folder, data)


def save_folder(folder: Path, data: Dataset) -> Path:
    """Writes `data` in this layout (allow_pickle=False: only arrays cross to another process),
    with its class names and identity beside them, so that loading the folder gives a dataset
    with the checksum, kind and source `data` has."""
    folder.mkdir()
    arrays = (data.train_images, data.train_labels, data.test_images, data.test_labels)
    for name, array in zip(FILES, arrays, strict=True):
        np.save(folder / name, np.asarray(array), allow_pickle=False)
    (folder / "classes.txt").write_text("\n".join(data.class_names) + "\n")
    write_identity(folder, data, arrays_checksum(data))
    return folder
