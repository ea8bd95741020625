"""runs.jsonl, the one store of results: append a row durably, read rows tolerantly, keep the
latest row of each run, group a run's seeds, and name files safely after a row's label.

Pure Python and numpy: the sweep, resume, the feature cache and the report all read it, and none
of them needs TensorFlow for it.
"""

from __future__ import annotations

import hashlib
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


def json_line(record: dict) -> str:
    """The record as runs.jsonl stores it: one line of sorted, plain json, newline included."""
    # allow_nan=False: _json_safe already turned NaN into null; anything left is a bug.
    return json.dumps(_json_safe(record), sort_keys=True, allow_nan=False) + "\n"


def _needs_newline(fd: int, path: Path) -> bool:
    """Whether the file does not end on a line break, so an append must start with one.

    A kill mid-write leaves a partial last line. It is never cut off here: under the folder's
    lock the file has one writer, and a repair that truncates could erase a row another writer
    had just appended. The torn line is kept on its own line instead, and read_records skips it.
    """
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return False
    data = os.pread(fd, size, 0)
    tail = data[data.rfind(b"\n") + 1:]
    try:
        json.loads(tail.decode("utf-8"))
    except ValueError:
        warnings.warn(f"{path}: a torn last line ({len(tail)} bytes) is kept on its own line; "
                      "readers skip it", stacklevel=3)
    return True


def append_record(out_dir: Path, record: dict) -> Path:
    """Appends one record as one json line to out_dir/runs.jsonl, durably; returns the file.

    An OSError (disk full, read-only, I/O) propagates; the rows already in the file are never
    touched, whatever happened to this one.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / RUNS_FILE
    data = json_line(record).encode("utf-8")
    # One write on an O_APPEND descriptor: a kill leaves at worst one torn last line, and the
    # fsync means a finished record survives a crash of the machine.
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if _needs_newline(fd, path):
            data = b"\n" + data
        written = os.write(fd, data)
        while written < len(data):  # short writes are rare on regular files, but legal
            written += os.write(fd, data[written:])
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def log_state(data: bytes) -> str:
    """What identifies one content of runs.jsonl: its size and sha256."""
    return f"{len(data)}:{hashlib.sha256(data).hexdigest()}"


def read_log(out_dir: Path) -> tuple[list[dict], str | None]:
    """out_dir/runs.jsonl's records and log_state of the bytes they came from; ([], None) if
    there is no file."""
    path = Path(out_dir) / RUNS_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], None
    return _parse(path, data), log_state(data)


def read_records(out_dir: Path) -> list[dict]:
    """Reads out_dir/runs.jsonl, [] if missing. Every reader goes through here: a damaged line
    (torn by a kill, bad json, bytes that are not UTF-8, not an object) is skipped with a
    warning naming its line number, and the other records are kept."""
    return read_log(out_dir)[0]


def _parse(path: Path, data: bytes) -> list[dict]:
    # split on "\n" only: str.splitlines would also split inside strings on e.g. U+2028.
    lines = [(number, raw) for number, raw in enumerate(data.split(b"\n"), start=1)
             if raw.strip()]
    records: list[dict] = []
    for position, (number, raw) in enumerate(lines):
        try:
            record = json.loads(raw.decode("utf-8"))  # UnicodeDecodeError is a ValueError
            if not isinstance(record, dict):
                raise ValueError(f"expected a json object, found {type(record).__name__}")
        except ValueError as exc:
            # A run killed mid-append leaves a torn last line: the record is lost, not the file.
            what = "a torn or invalid last line" if position == len(lines) - 1 else "a damaged line"
            reason = " ".join(str(exc).split())[:200]
            warnings.warn(f"{path}:{number}: skipping {what} ({reason})", stacklevel=4)
            continue
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
