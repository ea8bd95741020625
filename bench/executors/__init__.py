"""How a sweep maps run_one over (backbone, seeds) tasks: in this process (inprocess), one child
process per backbone (isolated), or Ray tasks on a cluster (ray_cluster). Executors only move
work and rows; run_sweep alone writes runs.jsonl.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from bench.data import Dataset
from bench.executors.common import OnStart, Task
from bench.executors.inprocess import InProcessExecutor
from bench.executors.isolated import IsolatedExecutor
from bench.result import RunResult


class Executor(Protocol):
    def map(self, tasks: Sequence[Task], data: Dataset, data_checksum: str,
            on_start: OnStart | None = None) -> Iterator[list[RunResult]]:
        """Runs each task's configs; yields rows as they finish, in any order.

        on_start is called with a task's spec as its runs begin.
        """
        ...


def make_executor(isolate: bool, timeout_min: float | None = None) -> Executor:
    """A child process per backbone (with an optional wall-clock limit), or this process."""
    return IsolatedExecutor(timeout_min) if isolate else InProcessExecutor()
