"""What every executor shares: the task shape, the row of a run that produced no result, and
what a worker process (an isolated child or a Ray worker) does before its first run.

Pure on the driver's side: the engine is imported only inside `worker_spec`, which runs in the
worker.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from backbones import get, load_extras
from bench.config import RunConfig
from bench.data import Dataset, npy
from bench.result import RunResult

OnStart = Callable[[object], None]  # called with each spec as its run begins
Task = tuple[object, list[RunConfig]]  # a spec and its single-seed configs, run in order


def with_source(result: RunResult, data: Dataset) -> RunResult:
    """Rows name the data as the user gave it, not the copy a worker read."""
    return replace(result, **data.source_fields())


def child_pythonpath() -> str:
    """PYTHONPATH for a worker: it imports the same bench and backbones as this process."""
    root = str(Path(__file__).resolve().parents[2])
    rest = os.environ.get("PYTHONPATH")
    return f"{root}{os.pathsep}{rest}" if rest else root


def child_data_folder(data: Dataset, tmp: Path) -> Path:
    """The data's folder for child processes: its own .npy folder, or the arrays (in memory, or
    an image folder or TFDS dataset decoded now, once for every child) saved under tmp in the
    same layout, with the data's identity beside them, so that the child's dataset has the
    checksum the driver's has."""
    source = Path(data.source)
    if data.kind == "npy" and all((source / f).is_file() for f in npy.FILES):
        return source
    return npy.save_folder(tmp / "data", data)


def worker_spec(backbone: str):
    """In a worker process, before its first run: TensorFlow imported quietly, then the
    registry row of `backbone`, looked up by name as the driver sent it ($BENCH_EXTRA_BACKBONES
    rows included: the driver passes the variable on)."""
    from bench.engine.quiet import import_tensorflow

    import_tensorflow()  # before anything imports Keras: its C++ start-up chatter is captured

    load_extras()
    return get(backbone)
