"""The sweep in this process: run_one per (backbone, seed), one after the other."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from bench.data import Dataset
from bench.executors.common import OnStart, Task
from bench.result import RunResult


class InProcessExecutor:
    """run_one in this process; memory is released between backbones by clearing the session."""

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
