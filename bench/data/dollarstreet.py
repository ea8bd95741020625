"""The lesson's dataset: Dollar Street 10 on Zenodo, its folder, files, size and class names.

Keras is imported only inside `download`, for keras.utils.get_file. The files are
verified on every load of the default folder (`verify`), against the sha256 recorded when
they were downloaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
from pathlib import Path

from bench.data.dataset import DataError
from bench.data.npy import FILES, check_size
from bench.fsio import write_text_atomic

# Where the lesson's notebooks keep it; the one folder bench downloads when it is missing.
DEFAULT_DIR = Path("data") / "dataset_dollarstreet"
# 64x64x3, 878 train + 293 test: what a dry run assumes before the download.
N_TRAIN, N_TEST, IMAGE_SHAPE = 878, 293, (64, 64, 3)

ZENODO_RECORD = "https://zenodo.org/records/10970014"
# name -> url. The record publishes no checksum bench could pin: each file is checked as it
# arrives (length, .npy header), then against the sha256 manifest written on the first complete
# download.
DOWNLOADS: dict[str, str] = {name: f"{ZENODO_RECORD}/files/{name}?download=1" for name in FILES}
# sha256 of each file, recorded next to them once all four are in, checked on every load.
MANIFEST = "SHA256SUMS"
# A server that stops sending fails the download after this long instead of hanging it.
TIMEOUT_S = 60.0
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


def is_default(folder: Path) -> bool:
    """The lesson's folder: the one bench downloads and verifies."""
    return Path(folder).resolve() == DEFAULT_DIR.resolve()


class DownloadError(OSError):
    """The download failed; str(err) is one line saying what to do instead."""


def download(dest: Path) -> None:
    """Download the four Dollar Street 10 files from Zenodo into ``dest`` (present ones kept).

    Each file is fetched under a ``.part`` name and renamed only when complete: as long as the
    server's Content-Length says (urlretrieve checks it), as long as its own .npy header says,
    A failed first attempt leaves no folder behind.
    The first load after it (`verify`) records the files' sha256.
    """
    dest = Path(dest)
    created = [p for p in (dest, *dest.parents) if not p.exists()]
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _download_error(dest, f"cannot create the folder: {err.strerror or err}") from err
    try:
        for name, url in DOWNLOADS.items():
            if not (dest / name).is_file():
                _fetch(dest, name, url)
    except BaseException:
        for folder in created:  # deepest first; one a file was kept in stays
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise


def _fetch(dest: Path, name: str, url: str) -> None:
    import keras  # deferred: importing Keras starts TensorFlow, which plain loading never needs

    part = dest / f"{name}.part"
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(TIMEOUT_S)  # urlretrieve's connection takes the default
    try:
        got = keras.utils.get_file(
            fname=part.name,
            origin=url,
            cache_dir=str(dest.parent),
            # An absolute subdir is used as is; a relative one lands under /tmp/.keras when
            # get_file finds cache_dir unwritable.
            cache_subdir=str(dest.resolve()),
            force_download=True,  # never take a stale .part from an earlier attempt
        )
        if Path(got).resolve() != part.resolve():
            raise OSError(f"get_file wrote {got} instead of {part}")
        try:
            check_size(part)  # a body cut short where the server sent no Content-Length
        except DataError as err:
            raise OSError(f"the download is incomplete: {str(err).split(': ', 1)[-1]}") from None
        os.replace(part, dest / name)
    except Exception as err:
        raise _download_error(dest, f"{name}: {_short_reason(err, url)}") from err
    finally:
        socket.setdefaulttimeout(previous)
        part.unlink(missing_ok=True)


def verify(folder: str | os.PathLike, refetch: bool = True) -> str | None:
    """Checks the default data folder's files against SHA256SUMS (or, before it exists, each
    file's size against its .npy header, then records it); None when they pass, else one line
    naming the files that fail. With ``refetch``, failing files are downloaded once more first.
    Any other folder is the user's own and is not checked here.
    """
    folder = Path(folder)
    if not is_default(folder):
        return None
    failing = _failing(folder)
    if failing and refetch:
        for name in failing:
            (folder / name).unlink(missing_ok=True)
        try:
            download(folder)
        except DownloadError as err:
            return str(err)
        failing = _failing(folder)
    if failing:
        again = " even after downloading them again" if refetch else ""
        return (f"{folder}: {'; '.join(failing.values())}{again}. Delete {folder} to download "
                f"it afresh, or pass --data DIR")
    if not (folder / MANIFEST).is_file():
        _record(folder)
    return None


def _failing(folder: Path) -> dict[str, str]:
    """name -> why, for each file that fails its recorded sha256 (or, unrecorded, its .npy
    header's size)."""
    recorded = _read_manifest(folder / MANIFEST)
    failing = {}
    for name in FILES:
        path = folder / name
        if name in recorded:
            digest = _digest(path, "sha256")
            if digest != recorded[name]:
                failing[name] = (f"{name} has sha256 {digest[:16]}..., not the "
                                 f"{recorded[name][:16]}... recorded in {MANIFEST}")
            continue
        try:
            check_size(path)
        except DataError as err:
            failing[name] = f"{name}: {str(err).split(': ', 1)[-1]}"
    return failing


def _read_manifest(path: Path) -> dict[str, str]:
    """name -> sha256 from a sha256sum-style file; lines it cannot read are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return {}
    pairs = (line.split(maxsplit=1) for line in lines)
    return {p[1].lstrip("*"): p[0].lower() for p in pairs if len(p) == 2 and len(p[0]) == 64}


def _record(folder: Path) -> None:
    """Writes SHA256SUMS (as sha256sum prints it), atomically; a read-only folder goes
    unrecorded rather than failing the load."""
    text = "".join(f"{_digest(folder / name, 'sha256')}  {name}\n" for name in FILES)
    with contextlib.suppress(OSError):
        write_text_atomic(folder / MANIFEST, text)


def _digest(path: Path, algorithm: str) -> str:
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, algorithm).hexdigest()
    except OSError:
        return "unreadable"


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
