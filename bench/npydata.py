"""The lesson's four-.npy folder beside its arrays (read by bench.npyfile): class-name files,
and the identity record bench leaves beside arrays it saved for a child process.

Checking and normalising the arrays is bench.data's job; every problem here is a DataError.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from bench.data import DataError, Dataset

# Written by bench beside the arrays of a decoded image folder saved for a child process: the
# child's dataset keeps the folder's identity, kind and source instead of its arrays' checksum.
IDENTITY_FILE = ".bench-identity.json"


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
