"""Writing into a results folder safely: one writer at a time, files replaced whole.

A results folder is shared by whatever bench process is pointed at it (a sweep, `report`,
`export`). writer_lock makes them take turns; atomic_path makes every report file appear whole or
not at all, so a kill mid-write never leaves a truncated leaderboard behind. Pure Python.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import secrets
import warnings
from collections.abc import Iterator
from pathlib import Path

from bench.resultsdir import LOCK_FILE, TMP_MARK

# In every temporary name: what a killed writer left behind is recognisable as such.

_HELD: dict[str, int] = {}  # real path of a folder this process holds -> the lock file's fd


class FolderBusy(Exception):
    """Another process holds the folder's writer lock; str(err) names its pid and the folder."""


def _forget_locks_in_child() -> None:
    # A forked child inherits no POSIX lock, but would think it holds the folder.
    for fd in _HELD.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_forget_locks_in_child)


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return f"pid {text}" if text.isdigit() else "pid unknown"


@contextlib.contextmanager
def writer_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Holds an exclusive lock on folder/.bench.lock (with this pid in it) for the block.

    Raises FolderBusy at once when another process holds it. Re-entrant within a process: an
    inner block for a folder already held is a no-op. The OS drops the lock when the process
    ends, however it ends, so a killed holder never leaves the folder locked.
    """
    folder = Path(folder)
    key = os.path.realpath(folder)
    if key in _HELD:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    # A POSIX record lock (lockf), not flock: it belongs to this process alone. A flock belongs
    # to the open file description, which a child forked by a library (between its fork and
    # exec) shares: released here, the lock stayed held a moment longer, and the next writer of
    # the folder in this process was told another process (pid unknown) held it.
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):  # EAGAIN or EACCES: held by another process
        holder = _holder(fd)
        os.close(fd)
        raise FolderBusy(f"another bench process ({holder}) is writing {folder}") from None
    except BaseException:
        os.close(fd)
        raise
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _HELD[key] = fd
        yield
    finally:
        # not ours to close in a forked child, which closed it at the fork
        if _HELD.pop(key, None) == fd:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # releases the lock


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside dest to write to; when the block ends without an exception the
    file is synced and renamed over dest, otherwise removed.

    The temporary name keeps dest's extension (for writers that infer a format from it). The
    rename replaces a symlink at dest instead of writing through it into its target.
    """
    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}-{secrets.token_hex(4)}{TMP_MARK}"
                         f"{dest.suffix}")
    try:
        yield tmp
        _fsync_path(tmp)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(dest: str | os.PathLike, text: str) -> Path:
    """Writes text (UTF-8) to dest through atomic_path; returns dest."""
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(dest)


def remove_stale_temporaries(folder: str | os.PathLike) -> None:
    """Removes the temporary files a killed writer left in folder; call it under writer_lock,
    when no other writer can be midway through one."""
    folder = Path(folder)
    if folder.is_dir():
        for stale in folder.glob(f".*{TMP_MARK}*"):
            with contextlib.suppress(OSError):
                stale.unlink()


def os_error_line(err: OSError) -> str:
    """One line for an OSError: the file it concerns, if any, and the system's reason."""
    reason = err.strerror or str(err) or errno.errorcode.get(err.errno or 0, "I/O error")
    text = f"{err.filename}: {reason}" if err.filename else reason
    return " ".join(str(text).split())


def _entries_digest(entries: dict) -> str:
    return hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()


def read_json_store(path: str | os.PathLike | None) -> dict:
    """The entries of a JSON file bench keeps measurements in (remembered rates, calibrations,
    graph counts), checked against the sha256 written with them. Absent: {}. Unreadable, of no
    or a wrong checksum: one warning, the file removed, {} (what it held is measured again)."""
    if path is None:
        return {}
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        entries = record["entries"]
        valid = isinstance(entries, dict) and record.get("sha256") == _entries_digest(entries)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError, KeyError):
        valid = False
    if not valid:
        warnings.warn(f"{path} is damaged (unreadable or its checksum does not match): "
                      "removed; what it held is measured again", stacklevel=2)
        with contextlib.suppress(OSError):
            path.unlink()
        return {}
    return entries


def remember_json(path: str | os.PathLike | None, key: str, value) -> None:
    """Sets one entry of a read_json_store file: merged, checksummed and renamed into place. A
    file that cannot be written only means the measurement is taken again next time."""
    if path is None:
        return
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        entries = {**read_json_store(path), key: value}
        write_text_atomic(path, json.dumps({"sha256": _entries_digest(entries),
                                            "entries": entries}, indent=0))
    except OSError:
        pass
