"""A folder of images per class as a dataset: listing, split, identity, lazy decoding.

Two layouts: ``DIR/train/<class>/...`` with ``DIR/test/<class>/...`` (or ``DIR/val/``) as the
evaluation split, or ``DIR/<class>/...`` alone, split here: a stratified share of each class
(`test_fraction`) is held out with a fixed seed, so the split is the same on every run. Class
names are the folder names, sorted. The identity is computed from the files' paths and bytes,
without decoding anything; the pixels are decoded once, on first use (bench.data.images).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.data import images
from bench.data.dataset import DataError, Dataset, LazyDataset
from bench.data.npy import FILES

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"})
EVAL_DIRS = ("test", "val")  # the evaluation split beside train/, in this order of preference
# The split of a <class>/-only folder: fixed, not --seed, so that every seed of a run (and
# every later run) trains and evaluates on the same images.
SPLIT_SEED = 0
PROGRESS_AFTER_S = 2.0  # the checksum says how far it is when it takes longer than this

Log = Callable[[str], None]


@dataclass(frozen=True)
class Listing:
    """What an image folder holds, before anything is decoded."""

    root: Path
    class_names: tuple[str, ...]
    train: tuple[tuple[str, int], ...]  # (path relative to root, POSIX; class index)
    val: tuple[tuple[str, int], ...]
    split: str  # how the evaluation split was made, in words
    split_rule: tuple[float, int] | None  # (test_fraction, seed) when split here
    ignored: tuple[str, ...]  # non-image files left out (relative paths)


def is_image_folder(folder: Path) -> bool:
    """A folder of class folders (or train/ and test/ of them), not the lesson's .npy files."""
    if not folder.is_dir() or any((folder / name).exists() for name in FILES):
        return False
    return any(_subdirs(folder)) or any(_is_image(p) for p in folder.iterdir() if p.is_file())


def list_folder(root: Path, test_fraction: float = 0.25) -> Listing:
    """The folder's images by class and split; a DataError names what is wrong."""
    if not 0 < test_fraction < 1:
        raise DataError(f"--test-fraction: expected a number between 0 and 1; received "
                        f"{test_fraction}")
    names = {p.name for p in _subdirs(root)}
    ignored: list[str] = []
    evaluation = next((d for d in EVAL_DIRS if d in names), None)
    if "train" in names and evaluation:
        train = _classes(root, root / "train", ignored)
        val = _classes(root, root / evaluation, ignored)
        _same_classes(root, evaluation, train, val)
        split, rule = f"train/ and {evaluation}/", None
    elif "train" in names:
        raise DataError(f"{root}: expected test/ or val/ beside train/ (the evaluation "
                        "split); received train/ alone")
    else:
        train, val = _split(root, _classes(root, root, ignored), test_fraction)
        split = f"{test_fraction:g} of each class held out (stratified, seed {SPLIT_SEED})"
        rule = (test_fraction, SPLIT_SEED)
    classes = tuple(sorted(train))
    return Listing(
        root=root, class_names=classes,
        train=tuple((f, i) for i, c in enumerate(classes) for f in train[c]),
        val=tuple((f, i) for i, c in enumerate(classes) for f in val[c]),
        split=split, split_rule=rule, ignored=tuple(ignored))


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in _entries(folder) if p.is_dir() and not p.name.startswith("."))


def _entries(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except PermissionError as err:
        raise DataError(f"{folder}: expected a readable folder; received {err.strerror.lower()}"
                        ) from err


def _is_image(path: Path) -> bool:
    # Hidden files (.DS_Store, macOS' ._photo.jpg resource forks) are never images.
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _classes(root: Path, folder: Path, ignored: list[str]) -> dict[str, list[str]]:
    """Class name -> its image files (relative to root, sorted), subfolders included."""
    classes = _subdirs(folder)
    stray = [p for p in _entries(folder) if p.is_file()]
    where = folder.relative_to(root).as_posix() + "/" if folder != root else ""
    if not classes:
        found = "image files but no class folders" if any(map(_is_image, stray)) else "nothing"
        raise DataError(f"{folder}: expected one folder of images per class ({where}<class>/"
                        f"...); received {found}")
    ignored += [p.relative_to(root).as_posix() for p in stray]
    for c in classes:
        if _shown(c.name) != c.name:  # its bytes are not UTF-8: it cannot be a label
            raise DataError(f"{_shown(str(c))}: expected class folder names in UTF-8 (they "
                            f"become the labels of every table and plot); rename {_shown(c.name)}")
    found = {c.name: _images(root, c, ignored) for c in classes}
    if not any(found.values()):
        raise DataError(f"{folder}: expected images ({', '.join(sorted(IMAGE_SUFFIXES))}) in "
                        f"its class folders; received no images at all")
    empty = [c for c, files in found.items() if not files]
    if empty:
        raise DataError(f"{folder / empty[0]}: expected images in every class folder; class "
                        f"'{empty[0]}' has none")
    if len(found) < 2:
        raise DataError(f"{folder}: expected at least 2 class folders; received one class only "
                        f"('{classes[0].name}')")
    return found


def _images(root: Path, folder: Path, ignored: list[str]) -> list[str]:
    files: list[str] = []

    def refuse(err: OSError) -> None:
        raise DataError(f"{err.filename}: expected a readable folder; received "
                        f"{(err.strerror or str(err)).lower()}") from err

    for top, dirs, names in os.walk(folder, onerror=refuse):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            path = Path(top) / name
            rel = path.relative_to(root).as_posix()
            if _is_image(path) and not path.is_file():  # a FIFO or device would block a read
                raise DataError(f"{str(path)!r}: expected a regular image file; received "
                                f"{_kind(path)}")
            (files if _is_image(path) else ignored).append(rel)
    return sorted(files)


def image_files(folder: Path) -> list[Path]:
    """Every image under `folder`, subfolders included (hidden ones not), sorted by relative
    path, as a dataset folder's class folders are listed; a DataError as they give it."""
    return [folder / rel for rel in _images(folder, folder, [])]


def not_a_file(path: Path) -> str:
    """What a path that is not a regular file is, in words: "a FIFO", "a folder", ..."""
    return _kind(path)


def _shown(name: str) -> str:
    """A file name as printable text: itself when its bytes are UTF-8, else its repr (bytes that
    are not UTF-8, kept by Python as lone surrogates, cannot be written to a UTF-8 stream)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return repr(name)
    return name


def _kind(path: Path) -> str:
    """What a path that is not a regular file is, in a word or two."""
    checks = (("is_fifo", "a FIFO"), ("is_socket", "a socket"), ("is_block_device", "a device"),
              ("is_char_device", "a device"), ("is_dir", "a folder"))
    return next((what for test, what in checks if getattr(path, test)()), "a broken link")


def _same_classes(root: Path, evaluation: str, train: dict, val: dict) -> None:
    missing, extra = sorted(set(train) - set(val)), sorted(set(val) - set(train))
    if missing or extra:
        what = (f"{evaluation}/ lacks {', '.join(missing)}" if missing
                else f"{evaluation}/ has {', '.join(extra)}, which train/ lacks")
        raise DataError(f"{root}: expected the same class folders in train/ and {evaluation}/;"
                        f" {what}")


def _split(root: Path, classes: dict[str, list[str]], fraction: float
           ) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Each class's files, shuffled with a seed of its own (its split does not move when
    another class changes), `fraction` of them (at least one) held out."""
    train, val = {}, {}
    for name, files in classes.items():
        if len(files) < 2:
            raise DataError(f"{root / name}: expected at least 2 images to split class "
                            f"'{name}' into train and test; received {len(files)}")
        rng = np.random.default_rng([SPLIT_SEED, zlib.crc32(name.encode())])
        order = rng.permutation(len(files))
        n_test = min(len(files) - 1, max(1, round(len(files) * fraction)))
        val[name] = sorted(files[i] for i in order[:n_test])
        train[name] = sorted(files[i] for i in order[n_test:])
    return train, val


def folder_checksum(listing: Listing, log: Log | None = None) -> str:
    """sha256 over the sorted relative paths and the bytes of every image (and the split rule
    when the folder is split here): nothing is decoded."""
    digest = hashlib.sha256(repr(("split", listing.split_rule)).encode())
    files = sorted(f for f, _ in listing.train + listing.val)
    began = last = time.monotonic()
    for i, rel in enumerate(files, 1):
        digest.update(os.fsencode(rel) + b"\0")  # the name's bytes, UTF-8 or not
        for block in _blocks(listing.root / rel):
            digest.update(block)
        digest.update(b"\0")
        if log and time.monotonic() - last > PROGRESS_AFTER_S:
            last = time.monotonic()
            log(f"Data: checksum of {listing.root}: {i}/{len(files)} files, "
                f"{last - began:.0f} s")
    return digest.hexdigest()


def _blocks(path: Path) -> Iterator[bytes]:
    try:
        with open(path, "rb") as f:
            yield from iter(lambda: f.read(1 << 20), b"")
    except OSError as err:
        raise DataError(f"{path}: expected a readable image file; received "
                        f"{(err.strerror or str(err)).lower()}") from err


def load_image_folder(folder: Path, test_fraction: float = 0.25, skip_bad_images: bool = False,
                      storage_size: int = 160, log: Log | None = None) -> Dataset:
    """The folder as a dataset whose pixels are decoded on first use.

    Images of one size no larger than `storage_size` are kept as decoded; images of several
    sizes, or larger, are brought to `storage_size` (bench.data.images says how), which then
    belongs to the identity.
    """
    log = log or _stdout
    listing = list_folder(folder, test_fraction)
    sizes = images.scan_sizes(listing.root, [f for f, _ in listing.train + listing.val],
                                   skip_bad_images)
    identity = folder_checksum(listing, log)
    notes = [f"evaluation split: {listing.split}"]
    if listing.ignored:
        shown = ", ".join(_shown(Path(f).name) for f in listing.ignored[:3])
        notes.append(f"{len(listing.ignored)} non-image files ignored ({shown}"
                     f"{', ...' if len(listing.ignored) > 3 else ''})")
    if len(sizes) == 1 and max(next(iter(sizes))) <= storage_size:
        ((width, height),) = sizes
    else:
        # larger images too: memory must not grow with their pixel count
        width = height = storage_size
        identity = hashlib.sha256(f"{identity}:stored at {storage_size}".encode()).hexdigest()
        notes.append(f"images of {_sizes(sizes)} stored at {storage_size}x{storage_size} "
                     "(resize_with_pad, bilinear, rounded to uint8)")
    return LazyDataset(
        lambda: images.decode_listing(listing, (width, height), skip_bad_images, identity,
                                          log),
        identity=identity, class_names=listing.class_names, source=str(folder), kind="folder",
        image_shape=(height, width, 3), counts=(len(listing.train), len(listing.val)),
        notes=notes)


def _sizes(sizes: set[tuple[int, int]]) -> str:
    if len(sizes) == 1:
        return "size {}x{}".format(*next(iter(sizes)))
    return f"{len(sizes)} sizes"


def _stdout(line: str) -> None:
    print(line, file=sys.stdout, flush=True)
