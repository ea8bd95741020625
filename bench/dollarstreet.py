"""The lesson's dataset: Dollar Street 10 on Zenodo, its folder, files, size and class names.

Pure: Keras is imported only inside `download`, for keras.utils.get_file.
"""

from __future__ import annotations

import os
from pathlib import Path

# Where the lesson's notebooks keep it; the one folder bench downloads when it is missing.
DEFAULT_DIR = Path("data") / "dataset_dollarstreet"
# The record's four files. Every dataset folder bench reads has this layout (test = validation).
FILES = ("train_images.npy", "train_labels.npy", "test_images.npy", "test_labels.npy")
# 64x64x3, 878 train + 293 test: what a dry run assumes before the download.
N_IMAGES, IMAGE_SHAPE = 878 + 293, (64, 64, 3)

ZENODO_RECORD = "https://zenodo.org/records/10970014"
# name -> (url, md5). The md5 values are None because the record's checksums could not be
# confirmed from any source available when this was written; inventing them would make every
# download fail. Fill them in from the record's file list to have get_file verify each file.
DOWNLOADS: dict[str, tuple[str, str | None]] = {
    name: (f"{ZENODO_RECORD}/files/{name}?download=1", None) for name in FILES
}
# Label order as given by the lesson ("Advanced layer types", table "Category | label").
CLASSES = (
    "day bed",
    "dishrag",
    "plate",
    "running shoe",
    "soap dispenser",
    "street sign",
    "table lamp",
    "tile roof",
    "toilet seat",
    "washing machine",
)


class DownloadError(OSError):
    """The download failed; str(err) is one line saying what to do instead."""


def download(dest: Path) -> None:
    """Download the four Dollar Street 10 files from Zenodo into ``dest`` (present ones kept).

    Each file is fetched under a ``.part`` name and renamed only when complete (and, where an
    md5 is known, verified), so an interrupted download never leaves a file that looks whole.
    """
    import keras  # deferred: importing Keras starts TensorFlow, which plain loading never needs

    dest = Path(dest)
    created = not dest.exists()
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _download_error(dest, f"cannot create the folder: {err.strerror or err}") from err
    for name, (url, md5) in DOWNLOADS.items():
        target = dest / name
        if target.is_file():
            continue
        part = dest / f"{name}.part"
        try:
            got = keras.utils.get_file(
                fname=part.name,
                origin=url,
                file_hash=md5,
                hash_algorithm="md5",
                cache_dir=str(dest.parent),
                # An absolute subdir is used as is; a relative one lands under /tmp/.keras
                # when get_file finds cache_dir unwritable.
                cache_subdir=str(dest.resolve()),
                force_download=True,  # never take a stale .part from an earlier attempt
            )
            if Path(got).resolve() != part.resolve():
                raise OSError(f"get_file wrote {got} instead of {part}")
            os.replace(part, target)
        except Exception as err:
            raise _download_error(dest, f"{name}: {_short_reason(err, url)}") from err
        finally:
            part.unlink(missing_ok=True)
            if created and not any(dest.iterdir()):
                dest.rmdir()  # leave no empty folder behind a first, failed attempt


def _download_error(dest: Path, reason: str) -> DownloadError:
    return DownloadError(
        f"Could not download the Dollar Street 10 dataset into {dest} ({reason}). "
        f"Download the four files of {ZENODO_RECORD} into that folder, or pass --data DIR."
    )


def _short_reason(err: BaseException, url: str) -> str:
    """The gist of a download failure, without the URL get_file repeats."""
    text = str(err).replace(f"URL fetch failure on {url}: ", "").strip() or type(err).__name__
    text = " ".join(text.split())
    return text if len(text) <= 160 else text[:157] + "..."
