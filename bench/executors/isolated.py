"""The sweep with one child process per backbone (all its seeds).

Isolation turns a crash, an out-of-memory kill, a segfault or a hang of one backbone into that
backbone's error row; the sweep goes on. Children speak JSON only (see bench.executors.worker):
a request file in, rows out as a runs.jsonl of their own, each row's head weights as an .npz.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from bench import runlog
from bench.config import RunConfig
from bench.data import Dataset
from bench.executors.common import (
    OnStart,
    Task,
    child_data_folder,
    child_pythonpath,
    with_source,
)
from bench.headfile import child_head_path, load_head
from bench.identity import failed_row
from bench.result import RunResult

# Temporary folders carry the driver's pid: one whose driver is gone is a leftover to remove.
TMP_PREFIX = "bench-isolated-"
# TensorFlow's start-up lines, printed whatever happened: never the reason a child failed.
_TF_LOG_PREFIXES = ("I0000", "W0000")


class IsolatedExecutor:
    """One child process per backbone (all its seeds), with an optional wall-clock limit."""

    def __init__(self, timeout_min: float | None = None):
        self.timeout_s = timeout_min * 60 if timeout_min else None

    def map(self, tasks: Sequence[Task], data: Dataset, data_checksum: str,
            on_start: OnStart | None = None) -> Iterator[list[RunResult]]:
        remove_stale_folders()
        with tempfile.TemporaryDirectory(prefix=f"{TMP_PREFIX}{os.getpid()}-") as tmp:
            folder = child_data_folder(data, Path(tmp))
            for i, (spec, configs) in enumerate(tasks):
                request = {
                    "backbone": spec.name,
                    "configs": [c.to_dict() for c in configs],
                    "data": str(folder),
                    "data_checksum": data_checksum,
                    "parent_pid": os.getpid(),
                }
                if on_start:
                    on_start(spec)
                yield self._run_child(spec, configs, data, request, Path(tmp) / f"child-{i}")

    def _run_child(self, spec, configs: list[RunConfig], data: Dataset, request: dict,
                   folder: Path) -> list[RunResult]:
        """The child's rows; the seeds it did not finish get the reason as their error."""
        folder.mkdir()
        (folder / "request.json").write_text(json.dumps(request))
        start = time.perf_counter()
        code, reason = self._wait_for_child(folder)
        rows = [_with_head(with_source(RunResult.from_dict(r), data), folder, i)
                for i, r in enumerate(_finished_rows(folder))]
        if reason is None and code == 0 and len(rows) == len(configs):
            return rows
        if reason is None:
            reason = _crash_reason(code, folder / "stderr")
        seconds = time.perf_counter() - start
        return rows + [failed_row(spec, config, data, reason, seconds, request["data_checksum"])
                       for config in configs[len(rows):]]

    def _wait_for_child(self, folder: Path) -> tuple[int, str | None]:
        """Runs the child on folder/request.json; its exit code, and why it was killed if it
        was."""
        with open(folder / "stderr", "wb") as stderr:
            proc = subprocess.Popen(
                _child_command(folder), stderr=stderr,
                env={**os.environ, "PYTHONPATH": child_pythonpath()},
                # its own process group, so that whatever it starts can be ended with it
                start_new_session=True,
            )
            try:
                code = proc.wait(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                _kill(proc)
                return proc.returncode, (f"timed out after {self.timeout_s / 60:g} min "
                                         f"(--timeout-min); the child process was killed")
            except BaseException:  # Ctrl-C reaches this session only: end the child's too
                _kill(proc)
                raise
            _kill_group(proc.pid)  # what a finished or crashed child left running
            return code, None


def _finished_rows(folder: Path) -> list[dict]:
    """The rows a child finished. A line it was killed while writing is skipped: its run gets
    the crash as its error, so runlog's warning about the torn line would say nothing more."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return runlog.read_records(folder)


def _with_head(result: RunResult, folder: Path, index: int) -> RunResult:
    """The row with the head weights its child left beside it (an .npz, no pickle)."""
    path = child_head_path(folder, index)
    if not result.ok or not path.is_file():
        return result
    return replace(result, head_weights=load_head(path).weights)


def _child_command(folder: Path) -> list[str]:
    return [sys.executable, "-m", "bench.executors.worker", str(folder / "request.json"),
            str(folder)]


def _kill(proc: subprocess.Popen) -> None:
    """The child and every process of its group, before the child is reaped (so its pid, the
    group's id, cannot have been reused)."""
    _kill_group(proc.pid)
    proc.wait()


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # nothing left in it
        os.killpg(pgid, signal.SIGKILL)


def remove_stale_folders(root: Path | None = None) -> None:
    """Removes the temporary folders of drivers that are gone (killed before they could clean
    up): this user's, named after a pid that no longer runs."""
    root = Path(tempfile.gettempdir()) if root is None else root
    for folder in root.glob(f"{TMP_PREFIX}*-*"):
        pid = folder.name.removeprefix(TMP_PREFIX).split("-", 1)[0]
        try:
            if not pid.isdigit() or folder.lstat().st_uid != os.getuid() or _alive(int(pid)):
                continue
        except OSError:
            continue
        shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: running
        return True
    return True


def _crash_reason(code: int, stderr_path: Path) -> str:
    if code < 0:
        sig = signal.Signals(-code).name
        what = {
            "SIGKILL": "killed by SIGKILL (the kernel's out-of-memory killer sends this)",
            "SIGSEGV": "crashed with SIGSEGV (segmentation fault)",
            "SIGABRT": "aborted (SIGABRT)",
        }.get(sig, f"killed by {sig}")
    else:
        what = f"exited with code {code} without a result"
    tail = _last_line(stderr_path)
    return f"child process {what}" + (f"; last stderr line: {tail}" if tail else "")


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [line for line in lines if line and not line.startswith(_TF_LOG_PREFIXES)]
    return lines[-1][:300] if lines else ""
