"""``tfds:NAME[:TRAIN,EVAL]``: a TensorFlow Datasets dataset, read offline from the TFDS data
folder where it was prepared (tensorflow-datasets is the optional extra ``tfds``).

The identity is the dataset's name, version and splits and a hash of its prepared files; the
images are read on first use, with ``download=False``. Images of one declared shape are kept as
read; images of several sizes, or larger than needed, are stored at one size as an image
folder's are.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from bench.data.dataset import DataError, Dataset, LazyDataset, from_arrays

DEFAULT_SPLITS = ("train", "test")
INSTALL = "pip install -e '.[tfds]' (tensorflow-datasets)"
_BATCH = 64


def parse(text: str) -> tuple[str, tuple[str, str]]:
    """tfds:NAME[:TRAIN,EVAL] -> (NAME, (TRAIN, EVAL)); splits default to train and test."""
    _, _, rest = text.partition(":")
    name, _, splits = rest.partition(":")
    parts = tuple(p.strip() for p in splits.split(",")) if splits else DEFAULT_SPLITS
    if not name or len(parts) != 2 or not all(parts):
        raise DataError(f"--data {text}: expected tfds:NAME or tfds:NAME:TRAIN,EVAL (e.g. "
                        "tfds:cifar10:train,test)")
    return name, parts


def _tfds(text: str):
    try:
        from bench.engine.quiet import import_tensorflow

        import_tensorflow()
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise DataError(f"--data {text}: TFDS datasets need tensorflow-datasets, which is not "
                        f"installed: {INSTALL}") from err
    return tfds


def _builder(tfds, text: str, name: str, data_dir: str | None):
    """The prepared dataset's builder; one line saying what to do when it is not there."""
    folder = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    fetch = (f"prepare it once with network access (python -c \"import tensorflow_datasets as "
             f"tfds; tfds.builder('{name}', data_dir='{folder}').download_and_prepare()\")")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as err:  # not registered and no prepared files under that name
        raise DataError(f"--data {text}: no TFDS dataset '{name}' in {folder} "
                        f"({type(err).__name__}); {fetch}, or pass --tfds-dir DIR") from err
    if not builder.is_prepared():
        raise DataError(f"--data {text}: '{name}' is not prepared in {folder}; {fetch}, "
                        "or pass --tfds-dir DIR")
    return builder


def load_tfds(text: str, data_dir: str | None = None, skip_bad_images: bool = False,
              storage_size: int = 160) -> Dataset:
    """The dataset `text` names, read on first use; its splits and labels checked now."""
    name, splits = parse(text)
    tfds = _tfds(text)
    builder = _builder(tfds, text, name, data_dir)
    info = builder.info
    keys = info.supervised_keys
    if not keys or len(keys) != 2:
        raise DataError(f"--data {text}: expected a dataset with (image, label) supervised keys; "
                        f"received {keys}")
    image, label = info.features[keys[0]], info.features[keys[1]]
    counts = []
    for split in splits:
        try:
            counts.append(info.splits[split].num_examples)
        except (KeyError, ValueError) as err:
            raise DataError(f"--data {text}: expected splits among "
                            f"{', '.join(info.splits)}; received '{split}'") from err
    height, width, channels = image.shape
    uniform = height is not None and width is not None and max(height, width) <= storage_size
    shape = (height, width, 3) if uniform else (storage_size, storage_size, 3)
    identity = _identity(name, str(info.version), splits, Path(builder.data_dir),
                         None if uniform else storage_size)
    notes = [f"TFDS {name} {info.version}, splits {splits[0]} / {splits[1]}"]
    if not uniform:
        notes.append(f"images of several sizes, or larger, stored at {storage_size}x"
                     f"{storage_size} (resize_with_pad, bilinear, rounded to uint8)")

    def make() -> Dataset:
        arrays = [_read(tfds, builder, s, n, shape) for s, n in zip(splits, counts, strict=True)]
        return from_arrays(arrays[0][0], arrays[0][1], arrays[1][0], arrays[1][1],
                           class_names=label.names, source=text, kind="tfds", identity=identity)

    return LazyDataset(make, identity=identity, class_names=label.names, source=text,
                       kind="tfds", image_shape=shape, counts=tuple(counts), notes=notes)


def _identity(name: str, version: str, splits: tuple[str, str], folder: Path,
              stored_at: int | None) -> str:
    """sha256 over the name, version, splits, the stored size (mixed sizes) and the prepared
    files' names and bytes."""
    digest = hashlib.sha256(json.dumps([name, version, list(splits), stored_at]).encode())
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder).as_posix()}\0".encode())
        with open(path, "rb") as f:
            for block in iter(lambda f=f: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _read(tfds, builder, split: str, n: int, shape: tuple[int, int, int]
          ) -> tuple[np.ndarray, np.ndarray]:
    """One split's images into one uint8 array of `shape`, a batch at a time, and its labels."""
    from bench.engine.decode import resize_into

    images = np.empty((n, *shape), dtype=np.uint8)
    labels = np.empty(n, dtype=np.int64)
    ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
    i = 0
    batch: list[tuple[int, np.ndarray]] = []
    for pixels, label in tfds.as_numpy(ds):
        if pixels.shape[-1] == 1:
            pixels = np.repeat(pixels, 3, axis=-1)
        labels[i] = label
        if pixels.shape == shape:
            images[i] = pixels
        else:
            batch.append((i, pixels))
        if len(batch) == _BATCH:
            resize_into(images, batch)
            batch = []
        i += 1
    resize_into(images, batch)
    return images[:i], labels[:i]
