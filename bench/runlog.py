"""runs.jsonl, the one store of results: append a row durably, read rows tolerantly, keep the
latest row of each run, group a run's seeds, and name files safely after a row's label.

Pure Python and numpy: the sweep, resume, the feature cache and the report all read it, and none
of them needs TensorFlow for it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench import stats
from bench.result import SCHEMA, RunResult
from bench.resultsdir import RUNS_FILE


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
    """Reads out_dir/runs.jsonl, [] if missing, every row upgraded to the current schema.
    Every reader goes through here: a damaged line (torn by a kill, bad json, bytes that are
    not UTF-8, not an object) is skipped with a warning naming its line number, and the other
    records are kept."""
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
    return upgrade_log(records)


def group_key(result: RunResult) -> str:
    """What the rows of one multi-seed run share: the runner's group (every row has one)."""
    return json.dumps([result.backbone, result.group])


def latest_records(results: Sequence[RunResult]) -> list[RunResult]:
    """Keeps the last row of each run, in file order. Two rows are the same run when their
    config hashes agree: the hash covers every knob, the weights, the data's checksum (not its
    folder: a moved data set is the same run) and the seed."""
    latest = {result.config_hash: index for index, result in enumerate(results)}
    return [results[i] for i in sorted(latest.values())]


# --- older rows ---------------------------------------------------------------------------------
# Schema 1 (bench before the schema field): rows may lack fields added later, hold null where a
# field has a default, and lack a config hash, group or configuration (rows of the oldest
# versions, and failures that an executor recorded). What told their runs apart:
_V1_RUN_KNOBS = ("protocol", "image_size", "preprocess", "pooling", "weights", "seed", "route",
                 "epochs", "patience", "batch_size", "data")
# Schema 2 names each thing once: "test" is the file a result is measured on, "holdout" the
# split early stopping watches, "runtime" what runs a frozen backbone, "route" how a run trains.
_V1_RENAMED = {
    "n_val": "n_test", "best_val_accuracy": "best_epoch_accuracy", "path": "route",
    **{f"engine{s}": f"runtime{s}" for s in ("", "_version", "_batch", "_images_per_s",
                                             "_setup_s", "_probe_s", "_note")},
}
_V1_TABLE_KNOBS = ("protocol", "preprocess", "pooling", "epochs", "patience", "batch_size",
                   "data")


def upgrade(row: dict) -> dict:
    """The row in the current schema (RunResult's fields); rows of the current one as they are.
    The one place that knows older rows: everything downstream reads one format."""
    if row.get("schema", 1) >= SCHEMA:
        return row
    row = _defaults_for(_renamed(row))
    knobs = json.loads(_run_knobs(row))
    if not row.get("configuration"):
        row["configuration"] = {**{k: row.get(k) for k in _V1_TABLE_KNOBS},
                                "data_checksum": row.get("data_checksum")}
    if not row.get("config_hash"):
        row["config_hash"] = "v1-" + _digest(knobs)
    if not row.get("group"):
        row["group"] = "v1-" + _digest([k for k, name in zip(knobs, ("backbone", *_V1_RUN_KNOBS),
                                                             strict=True) if name != "seed"])
    for name, function in (("balanced_accuracy", stats.balanced_accuracy),
                           ("macro_f1", stats.macro_f1)):
        if row.get(name) is None and (arrays := _eval_arrays(row)):
            row[name] = function(*arrays)
    row["schema"] = SCHEMA
    return row


def upgrade_log(rows: Sequence[dict]) -> list[dict]:
    """Every row upgraded. A schema-1 row that had no config hash is the run of the first row
    with a real hash and its knobs (the same run, rerun by a version that hashed it): it takes
    that row's hash, group and configuration, so that the newer row replaces it."""
    upgraded = [upgrade(row) for row in rows]
    hashed: dict[str, dict] = {}
    for old, new in zip(rows, upgraded, strict=True):
        if old.get("config_hash"):
            hashed.setdefault(_run_knobs(new), new)
    for i, (old, new) in enumerate(zip(rows, upgraded, strict=True)):
        if not old.get("config_hash") and (same := hashed.get(_run_knobs(new))):
            upgraded[i] = {**new, **{k: same[k] for k in ("config_hash", "group",
                                                           "configuration")}}
    return upgraded


def _run_knobs(row: dict) -> str:
    return json.dumps([row.get("backbone"), *(row.get(k) for k in _V1_RUN_KNOBS)], default=str)


def _digest(values: list) -> str:
    return hashlib.sha256(json.dumps(values, default=str).encode()).hexdigest()[:16]


def _renamed(row: dict) -> dict:
    """Schema 1's names in schema 2's words. Its val_accuracy was the watched split's at the
    last epoch: the test file's under "lesson", the holdout split's under "holdout" (whose
    test_accuracy was already the test file's)."""
    row = {_V1_RENAMED.get(k, k): v for k, v in row.items()}
    watched = "holdout" if row.get("protocol") == "holdout" else "test"
    if "val_accuracy" in row:
        row[f"{watched}_accuracy"] = row.pop("val_accuracy")
    if isinstance(row.get("history"), dict):
        row["history"] = {k.replace("val_", f"{watched}_", 1) if k.startswith("val_") else k: v
                          for k, v in row["history"].items()}
    return row


def _defaults_for(row: dict) -> dict:
    """Missing fields, and null where the field has another default, take the default: what
    rows written before the field existed meant."""
    filled = dict(row)
    for f in dataclasses.fields(RunResult):
        if filled.get(f.name) is None:
            if f.default_factory is not dataclasses.MISSING:
                filled[f.name] = f.default_factory()
            elif f.default is not dataclasses.MISSING:
                filled[f.name] = f.default
    return filled


def _eval_arrays(row: dict) -> tuple[np.ndarray, np.ndarray, int] | None:
    if (arrays := stats.label_arrays(row.get("labels"), row.get("predictions"))) is None:
        return None
    y, p = arrays
    n_classes = max(int(row.get("n_classes") or 0), int(max(y.max(), p.max())) + 1)
    return y, p, n_classes
