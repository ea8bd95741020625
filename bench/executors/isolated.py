"""The sweep with one child process per backbone (all its seeds).

Isolation turns a crash, an out-of-memory kill, a segfault or a hang of one backbone into that
backbone's error row; the sweep goes on. Children speak JSON only (see bench.executors.worker):
a request file in, rows out as a runs.jsonl of their own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

from bench import runlog
from bench.config import RunConfig
from bench.data import Dataset
from bench.executors.common import (
    OnStart,
    Task,
    child_data_folder,
    child_pythonpath,
    error_row,
    with_source,
)
from bench.result import RunResult

# TensorFlow's start-up lines, printed whatever happened: never the reason a child failed.
_TF_LOG_PREFIXES = ("I0000", "W0000")


class IsolatedExecutor:
    """One child process per backbone (all its seeds), with an optional wall-clock limit."""

    def __init__(self, timeout_min: float | None = None):
        self.timeout_s = timeout_min * 60 if timeout_min else None

    def map(self, tasks: Sequence[Task], data: Dataset, data_checksum: str,
            on_start: OnStart | None = None) -> Iterator[list[RunResult]]:
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
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
        rows = [with_source(RunResult.from_dict(r), data) for r in _finished_rows(folder)]
        if reason is None and code == 0 and len(rows) == len(configs):
            return rows
        if reason is None:
            reason = _crash_reason(code, folder / "stderr")
        return rows + [error_row(spec, config, data, reason, time.perf_counter() - start)
                       for config in configs[len(rows):]]

    def _wait_for_child(self, folder: Path) -> tuple[int, str | None]:
        """Runs the child on folder/request.json; its exit code, and why it was killed if it
        was."""
        with open(folder / "stderr", "wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.executors.worker", str(folder / "request.json"),
                 str(folder)],
                stderr=stderr, env={**os.environ, "PYTHONPATH": child_pythonpath()},
            )
            try:
                return proc.wait(timeout=self.timeout_s), None
            except subprocess.TimeoutExpired:
                _kill(proc)
                return proc.returncode, (f"timed out after {self.timeout_s / 60:g} min "
                                         f"(--timeout-min); the child process was killed")
            except BaseException:  # Ctrl-C: the child got SIGINT too; make sure it is gone
                _kill(proc)
                raise


def _finished_rows(folder: Path) -> list[dict]:
    """The rows a child finished. A line it was killed while writing is skipped: its run gets
    the crash as its error, so runlog's warning about the torn line would say nothing more."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return runlog.read_records(folder)


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


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
