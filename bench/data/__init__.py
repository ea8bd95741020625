"""Load, check and normalise an image-classification dataset: `load_dataset` dispatches on what
`--data` names.

- the lesson's four .npy files in a folder (`npy`; the default folder is Dollar Street 10,
  downloaded from Zenodo when missing: `dollarstreet`);
- a folder of images per class (`folder`, decoded with Pillow by `images`);
- ``tfds:NAME[:SPLITS]``, a prepared TensorFlow Datasets dataset (`tfds`).

Layers: `dataset` (the types, DataError, the checks) at the bottom; one module per source above
it; this dispatcher on top. No TensorFlow at import: Keras is loaded only to download the
lesson's data, and TensorFlow only to read TFDS or to resize images of mixed sizes.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.config import LESSON_IMAGE_SIZE
from bench.data import dollarstreet, folder, npy, tfds
from bench.data.dataset import DataError, Dataset, LazyDataset, arrays_checksum, from_arrays
from bench.data.npy import FILES

__all__ = ["FILES", "DataError", "Dataset", "LazyDataset", "arrays_checksum", "from_arrays",
           "load_dataset"]


def load_dataset(path: str | os.PathLike | None = None, download: bool = True, *,
                 test_fraction: float = 0.25, skip_bad_images: bool = False,
                 storage_size: int | None = None, tfds_dir: str | None = None) -> Dataset:
    """The dataset `path` names (default ``data/dataset_dollarstreet``): ``tfds:NAME[:SPLITS]``,
    a folder of images per class, or the lesson's four .npy files.

    Only the default folder is downloaded when missing, and only with ``download=True``.
    `test_fraction` splits a ``<class>/``-only image folder; `storage_size` is the side images
    of mixed sizes are stored at (default the lesson's 160); `skip_bad_images` turns corrupt
    images into a warning; `tfds_dir` is TFDS's data folder (default $TFDS_DATA_DIR).
    """
    images = dict(skip_bad_images=skip_bad_images, storage_size=storage_size or LESSON_IMAGE_SIZE)
    if isinstance(path, str) and path.startswith("tfds:"):

        return tfds.load_tfds(path, data_dir=tfds_dir, **images)
    where = dollarstreet.DEFAULT_DIR if path is None else Path(path)
    if folder.is_image_folder(where):
        return folder.load_image_folder(where, test_fraction=test_fraction, **images)
    # a copy of the lesson's data keeps its class names wherever it lies
    names = dollarstreet.CLASSES if where.name == dollarstreet.DEFAULT_DIR.name else None
    if not dollarstreet.is_default(where):
        return npy.load_folder(where, default_names=names)
    if not all((where / name).is_file() for name in FILES):
        if download:
            try:
                dollarstreet.download(where)
            except dollarstreet.DownloadError as err:
                raise DataError(str(err)) from err
        elif not where.is_dir():
            raise DataError(f"Data folder {where} not found (downloading is off): expected a "
                            f"folder holding {', '.join(FILES)} (test = validation); put the "
                            "four files there, or pass --data DIR.")
    if problem := dollarstreet.verify(where, refetch=download):
        raise DataError(problem)
    return npy.load_folder(where, default_names=names)
