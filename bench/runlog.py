"""runs.jsonl, the one store of results: append a row durably, read rows tolerantly, keep the
latest row of each run, group a run's seeds, and name files safely after a row's label.

Pure Python and numpy: the sweep, resume, the feature cache and the report all read it, and none
of them needs TensorFlow for it.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.result import RunResult

RUNS_FILE = "runs.jsonl"

# What tells runs apart in rows without a config hash or group (written before those fields
# existed, or failed before the run was identified); with the backbone. Newer rows use the hash.
RUN_KNOBS: tuple[str, ...] = (
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
GROUP_KNOBS: tuple[str, ...] = tuple(k for k in RUN_KNOBS if k != "seed")

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


def _knob_key(result: RunResult, knobs: tuple[str, ...]) -> str:
    # json text as the key: hashable whatever the field types are.
    return json.dumps([result.backbone, *(getattr(result, k) for k in knobs)])


def group_key(result: RunResult) -> str:
    """What the rows of one multi-seed run share: the runner's group, else the knobs but seed."""
    if result.group:
        return json.dumps(["group", result.backbone, result.group])
    return json.dumps(["knobs", _knob_key(result, GROUP_KNOBS)])


def latest_records(results: Sequence[RunResult]) -> list[RunResult]:
    """Keeps the last row of each run, in file order.

    Two rows are the same run when their config hashes agree (the hash covers every knob, the
    weights, the data's checksum and the seed). A row without one, written before the field
    existed or failed before its run was identified, is the same run as any row with its knobs.
    """
    latest: dict[str, int] = {}  # run key -> index of its latest row
    knobs_of: dict[int, str] = {}
    hashed: dict[str, set[str]] = {}  # knob key -> run keys of the hashed rows with those knobs
    for index, result in enumerate(results):
        knobs = knobs_of[index] = _knob_key(result, RUN_KNOBS)
        if result.config_hash:
            key = "hash:" + result.config_hash
            hashed.setdefault(knobs, set()).add(key)
            replaced = [key, knobs]
        else:
            key = knobs
            replaced = [knobs, *hashed.pop(knobs, ())]
        for old in replaced:
            # a hash seen earlier under other knobs (e.g. the data moved) is not this run's
            if old in latest and (old == key or knobs_of[latest[old]] == knobs):
                del latest[old]
        latest[key] = index
    return [results[i] for i in sorted(latest.values())]


def safe_name(name: str) -> str:
    """A file-name-safe version of name: [A-Za-z0-9._-] only, no leading dot, never empty."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", str(name)).lstrip(".")[:_SAFE_NAME_MAX]
    return cleaned or "_"
