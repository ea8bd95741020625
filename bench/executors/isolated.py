"""How a sweep maps run_one over backbones: in this process, or one child process per backbone.

Isolation turns a crash, an out-of-memory kill, a segfault or a hang of one backbone into that
backbone's error row; the sweep goes on. Children speak JSON only (see bench.executors.worker).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from bench.config import RunConfig
from bench.data import FILES, Dataset
from bench.identity import path_name, size_or_none
from bench.result import STATUS_ERROR, RunResult

OnStart = Callable[[object], None]  # called with each spec as its run begins


Task = tuple[object, list[RunConfig]]  # a spec and its single-seed configs, run in order


class InProcessExecutor:
    """run_one in this process; memory is released between backbones by clearing the session."""

    name = "in-process"

    def map(self, tasks: Sequence[Task], data: Dataset, data_checksum: str,
            on_start: OnStart | None = None) -> Iterator[list[RunResult]]:
        if not tasks:
            return
        from bench.engine.quiet import import_tensorflow

        import_tensorflow()  # here, not at start-up: a fully resumed sweep never needs it
        from bench.engine.runner import run_one

        for spec, configs in tasks:
            if on_start:
                on_start(spec)
            for config in configs:
                yield [run_one(spec, config, data, data_checksum=data_checksum)]


class IsolatedExecutor:
    """One child process per backbone (all its seeds), with an optional wall-clock limit."""

    name = "isolated"

    def __init__(self, timeout_min: float | None = None):
        self.timeout_s = timeout_min * 60 if timeout_min else None

    def map(self, tasks: Sequence[Task], data: Dataset, data_checksum: str,
            on_start: OnStart | None = None) -> Iterator[list[RunResult]]:
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
            folder = _data_folder(data, Path(tmp))
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
                yield self._run_child(spec, configs, data, request, Path(tmp) / f"{i}")

    def _run_child(self, spec, configs: list[RunConfig], data: Dataset, request: dict,
                   stem: Path) -> list[RunResult]:
        req, res, err = stem.with_suffix(".request.json"), stem.with_suffix(".rows.jsonl"), \
            stem.with_suffix(".stderr")
        req.write_text(json.dumps(request))
        start = time.perf_counter()
        with open(err, "wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.executors.worker", str(req), str(res)],
                stderr=stderr, env={**os.environ, "PYTHONPATH": _pythonpath()},
            )
            try:
                code = proc.wait(timeout=self.timeout_s)
                reason = None
            except subprocess.TimeoutExpired:
                _kill(proc)
                code, reason = proc.returncode, (
                    f"timed out after {self.timeout_s / 60:g} min (--timeout-min); "
                    f"the child process was killed")
            except BaseException:  # Ctrl-C: the child got SIGINT too; make sure it is gone
                _kill(proc)
                raise
        rows = [_with_source(RunResult.from_dict(r), data) for r in _complete_rows(res)]
        if reason is None and code == 0 and len(rows) == len(configs):
            return rows
        if reason is None:
            reason = _crash_reason(code, err)
        # the seeds the child finished are kept; the others get the reason
        return rows + [_error_row(spec, config, data, reason, time.perf_counter() - start)
                       for config in configs[len(rows):]]


def _complete_rows(path: Path) -> list[dict]:
    """The rows a child finished; a line it was killed while writing is ignored."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def _error_row(spec, config: RunConfig, data: Dataset, reason: str, seconds: float) -> RunResult:
    return RunResult(
        backbone=spec.name, status=STATUS_ERROR, error=reason, family=spec.family,
        kind=spec.kind, image_size=size_or_none(spec, config),
        preprocess=config.preprocess, pooling=config.pooling, path=path_name(spec, config),
        protocol=config.protocol, seed=config.seed, epochs=config.epochs,
        patience=config.patience, batch_size=config.batch_size, weights=config.weights,
        data=data.source, n_train=data.n_train, n_val=data.n_val, n_classes=data.n_classes,
        total_s=seconds,
    )


def make_executor(isolate: bool, timeout_min: float | None = None):
    return IsolatedExecutor(timeout_min) if isolate else InProcessExecutor()


def _data_folder(data: Dataset, tmp: Path) -> Path:
    """The data's folder for the children: its own, or a copy of in-memory arrays as .npy."""
    source = Path(data.source)
    if all((source / f).is_file() for f in FILES):
        return source
    folder = tmp / "data"
    folder.mkdir()
    arrays = (data.train_images, data.train_labels, data.val_images, data.val_labels)
    for name, array in zip(FILES, arrays, strict=True):
        np.save(folder / name, np.asarray(array), allow_pickle=False)
    (folder / "classes.txt").write_text("\n".join(data.class_names) + "\n")
    return folder


def _with_source(result: RunResult, data: Dataset) -> RunResult:
    """Rows name the data as the user gave it, not the temporary copy a child read."""
    from dataclasses import replace

    return replace(result, data=data.source)


def _pythonpath() -> str:
    """The child imports the same bench and backbones as this process."""
    root = str(Path(__file__).resolve().parents[2])
    rest = os.environ.get("PYTHONPATH")
    return f"{root}{os.pathsep}{rest}" if rest else root


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
    lines = [line for line in lines if line and not line.startswith(("I0000", "W0000"))]
    return lines[-1][:300] if lines else ""
