"""runs.jsonl, the one store of results: append a row durably, read rows tolerantly, keep the
latest row of each run, and name files safely after a row's label.

Pure Python and numpy: the sweep, resume, the feature cache and the report all read it, and none
of them needs TensorFlow for it.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

RUNS_FILE = "runs.jsonl"

# Missing in rows written before the fields existed; these are what those rows were.
_DEFAULTS: dict[str, str] = {"protocol": "lesson", "kind": "backbone"}

# What makes two records "the same run": a rerun of one of these replaces the earlier record.
PROTOCOL_KEYS: tuple[str, ...] = (
    "protocol",
    "image_size",
    "preprocess",
    "pooling",
    "weights",
    "seed",
    "path",
    "epochs",
    "patience",
    "batch_size",
    "data",
)

_SAFE_NAME_MAX = 120  # well under every file system's 255-byte limit, "history_" + ".png" included


class RunLogError(ValueError):
    """runs.jsonl cannot be read as a sequence of records."""



def _json_safe(value: Any) -> Any:
    """Copies value into plain json types; NaN and infinities become None (json has neither)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def _repair_tail(path: Path) -> bool:
    """Makes sure an append starts on a fresh line; returns whether a newline must be prepended.

    A kill mid-write can leave a partial last line. Appending after it would glue two records
    into one invalid middle line, which read_records refuses, so a torn tail is dropped here
    (it holds no recoverable record). A complete record merely missing its newline is kept.
    """
    if not path.exists() or path.stat().st_size == 0:
        return False
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return False
    start = data.rfind(b"\n") + 1
    tail = data[start:]
    try:
        json.loads(tail)
    except ValueError:
        warnings.warn(
            f"{path}: dropping a torn last line ({len(tail)} bytes) before appending",
            stacklevel=3,
        )
        with path.open("r+b") as f:
            f.truncate(start)
            f.flush()
            os.fsync(f.fileno())
        return False
    return True


def append_record(out_dir: Path, record: dict) -> Path:
    """Appends one record as one json line to out_dir/runs.jsonl, durably; returns the file."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / RUNS_FILE
    # allow_nan=False: _json_safe already turned NaN into null; anything left is a bug.
    line = json.dumps(_json_safe(record), sort_keys=True, allow_nan=False) + "\n"
    if _repair_tail(path):
        line = "\n" + line
    data = line.encode("utf-8")
    # One write on an O_APPEND descriptor: a kill leaves at worst one torn last line, and the
    # fsync means a finished record survives a crash of the machine.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
        while written < len(data):  # short writes are rare on regular files, but legal
            written += os.write(fd, data[written:])
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def read_records(out_dir: Path) -> list[dict]:
    """Reads out_dir/runs.jsonl; a torn last line is skipped with a warning, [] if missing."""
    path = Path(out_dir) / RUNS_FILE
    if not path.exists():
        return []
    # split on "\n" only: str.splitlines would also split inside strings on e.g. U+2028.
    lines = [
        (number, text)
        for number, text in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1)
        if text.strip()
    ]
    records: list[dict] = []
    for position, (number, text) in enumerate(lines):
        try:
            record = json.loads(text)
            if not isinstance(record, dict):
                raise ValueError(f"expected a json object, found {type(record).__name__}")
        except ValueError as exc:
            if position == len(lines) - 1:
                # A run killed mid-append leaves exactly this; the record is lost, not the file.
                warnings.warn(
                    f"{path}:{number}: skipping a torn or invalid last line ({exc})", stacklevel=2
                )
                continue
            raise RunLogError(f"{path}:{number}: invalid record: {exc}") from exc
        records.append(record)
    return records


def field_or_default(record: dict, key: str) -> Any:
    """record[key], or what a record written before the field existed meant by its absence."""
    value = record.get(key)
    return _DEFAULTS.get(key) if value is None else value


def _run_key(record: dict) -> str:
    # json text as the key: hashable whatever the field types are.
    knobs = (field_or_default(record, k) for k in PROTOCOL_KEYS)
    return json.dumps([record.get("backbone"), *knobs])


def latest_records(records: list[dict]) -> list[dict]:
    """Keeps the last record of each run, in file order.

    Two records are the same run when backbone and protocol knobs (seed included) agree and,
    where both carry the runner's `group`, their groups do too: the group also covers what
    records do not store (e.g. the holdout fraction, the data's checksum). A record without one
    (written before the field existed) is the same run as any record with its knobs.
    """
    kept: dict[int, dict] = {}
    by_key: dict[str, list[int]] = {}
    for index, record in enumerate(records):
        key, group = _run_key(record), record.get("group")
        earlier = by_key.setdefault(key, [])
        for i in [i for i in earlier if group is None or records[i].get("group") in (None, group)]:
            earlier.remove(i)
            del kept[i]
        earlier.append(index)
        kept[index] = record
    return [kept[i] for i in sorted(kept)]



def safe_name(name: str) -> str:
    """A file-name-safe version of name: [A-Za-z0-9._-] only, no leading dot, never empty."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", str(name)).lstrip(".")[:_SAFE_NAME_MAX]
    return cleaned or "_"
