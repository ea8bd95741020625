"""The sweep as a library: select backbones, run them, stream rows to disk, rebuild the report."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from backbones import load_extras, select
from bench import report, runlog
from bench.config import RunConfig
from bench.data import Dataset, load_dataset
from bench.executors import InProcessExecutor, make_executor
from bench.fsio import os_error_line, writer_lock
from bench.headfile import with_head_file
from bench.identity import identify
from bench.report import is_current
from bench.report.ranking import MARGIN
from bench.result import RunResult
from bench.runlog import RUNS_FILE
from bench.weights import WeightsError

if TYPE_CHECKING:
    import pandas as pd

Log = Callable[[str], None]


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def describe_start(i: int, n: int, spec, config: RunConfig, seeds: int = 1) -> str:
    seeds_text = f", {seeds} seeds" if seeds > 1 else ""
    if spec.kind == "baseline":
        return (f"[{i}/{n}] {spec.name}: starting (from scratch on raw images, "
                f"protocol {config.protocol}{seeds_text})")
    size = config.size_for(spec.input_size)
    return (f"[{i}/{n}] {spec.name}: starting ({size}px, preprocess {config.preprocess}, "
            f"weights {config.weights}, {'end-to-end' if config.end_to_end else 'cached'}, "
            f"protocol {config.protocol}{seeds_text})")


def describe_result(i: int, n: int, r: RunResult) -> str:
    name = f"[{i}/{n}] {r.backbone} (seed {r.seed})"
    if not r.ok:
        return f"{name}: error: {r.error}"
    source = "cached features" if r.features_cached else "extraction"
    holdout = (f", holdout_accuracy {r.holdout_accuracy:.3f}" if r.holdout_accuracy is not None
               else "")
    return (f"{name}: ok, test_accuracy {r.test_accuracy:.3f}{holdout} (best "
            f"{r.best_epoch_accuracy:.3f} at epoch {r.best_epoch}), {r.epochs_run} epochs, "
            f"{source} {_fmt(r.extract_s, '.1f')} s, {_fmt(r.epoch_s, '.3f')} s/epoch, "
            f"total {r.total_s:.1f} s")


@dataclass
class SweepOutcome:
    results: list[RunResult] = field(default_factory=list)  # rows produced by this sweep
    skipped: list[str] = field(default_factory=list)  # "name (seed N)" with an ok row already

    @property
    def failed(self) -> list[RunResult]:
        return [r for r in self.results if not r.ok]


def _finished(row: dict, probes: Sequence[str]) -> bool:
    """An ok row of a run that needs no repeat. Probes add columns without changing the run
    (they are not in its hash): a cached row lacking a probe asked for now runs again, and the
    new row replaces it."""
    if row.get("status") != "ok" or not row.get("config_hash"):
        return False
    missing = set(probes) - set(row.get("probes") or {})
    return not (missing and row.get("route") == "cached")


def run_sweep(specs: Sequence, config: RunConfig, data: Dataset, out: str | os.PathLike | None,
              log: Log | None = None, executor=None, rerun: bool = False,
              margin: float = MARGIN) -> SweepOutcome:
    """Runs each spec for each of config.seeds seeds; rows go to `out`/runs.jsonl as they come.

    A (backbone, seed) that already has an ok row with the same config hash in runs.jsonl is
    skipped unless `rerun`. The report is rebuilt from runs.jsonl at the end, and also when the
    sweep is interrupted, so finished rows are never lost. The sweep holds `out`'s writer lock
    throughout (bench.fsio.FolderBusy when another process has it), so which rows are done is
    decided by the only writer. A row that cannot be appended is printed on stderr as its json
    line and the sweep stops with the OSError. `margin` is the report's recommendation margin
    (an accuracy difference).
    """
    if out is None:
        return _sweep(specs, config, data, None, log, executor, rerun, margin)
    with writer_lock(out):
        return _sweep(specs, config, data, Path(out), log, executor, rerun, margin)


def _sweep(specs: Sequence, config: RunConfig, data: Dataset, out: Path | None, log: Log | None,
           executor, rerun: bool, margin: float) -> SweepOutcome:
    executor = executor or InProcessExecutor()
    checksum = data.checksum()
    outcome = SweepOutcome()
    done: set[str] = set()
    if out is not None and not rerun:
        done = {r["config_hash"] for r in runlog.read_records(out)
                if _finished(r, config.probes)}
    order = {spec.name: i for i, spec in enumerate(specs, 1)}
    n = len(specs)
    tasks = _plan(specs, config, data, checksum, done, outcome, log)
    seeds_of = {spec.name: len(configs) for spec, configs in tasks}

    def started(spec):
        if log:
            log(describe_start(order[spec.name], n, spec, config, seeds_of[spec.name]))

    try:
        for rows in executor.map(tasks, data, checksum, on_start=started):
            for result in rows:
                if out is not None:
                    # the head file first: a row never names a file that is not there
                    result = _append(out, result, data.image_shape)
                outcome.results.append(result)
                if log:
                    log(describe_result(order.get(result.backbone, 0), n, result))
    except OSError:
        # the disk that refused a row would refuse the report too; its stale marker makes the
        # next run rebuild it
        out = None
        raise
    finally:
        if out is not None and (outcome.results or not _report_is_current(out)):
            report.write_report(out, margin=margin)
    return outcome


def _plan(specs: Sequence, config: RunConfig, data: Dataset, checksum: str, done: set[str],
          outcome: SweepOutcome, log: Log | None) -> list:
    """The (spec, seed configs) still to run; a (backbone, seed) in `done` is skipped, and said."""
    order = {spec.name: i for i, spec in enumerate(specs, 1)}
    tasks = []
    for spec in specs:
        configs = []
        for seed_config in config.per_seed():
            try:
                key = identify(spec, seed_config, data, checksum).config_hash
            except (WeightsError, ValueError, OSError):  # the run will report it as its error
                key = None
            if key in done:
                outcome.skipped.append(f"{spec.name} (seed {seed_config.seed})")
                if log:
                    log(f"[{order[spec.name]}/{len(specs)}] {spec.name} (seed "
                        f"{seed_config.seed}): skipped, runs.jsonl already has an ok row for "
                        f"this exact run ({key}); --rerun runs it again")
            else:
                configs.append(seed_config)
        if configs:
            tasks.append((spec, configs))
    return tasks


def _append(out: Path, result: RunResult, image_shape: Sequence[int] | None) -> RunResult:
    """Saves the row's head file, then appends the row to out/runs.jsonl; returns the row as
    stored. When either fails (disk full, read-only, I/O) the row goes to stderr as its json
    line, so it is not lost, and the OSError says so in one line."""
    try:
        stored = with_head_file(out, result, image_shape)
        runlog.append_record(out, stored.to_dict())
    except OSError as err:
        print(runlog.json_line(result.to_dict()), end="", file=sys.stderr, flush=True)
        raise OSError(err.errno, f"cannot save a row in {out} ({os_error_line(err)}); the row "
                      "is the json line above; the rows before it are kept") from err
    return stored


def _report_is_current(out: Path) -> bool:
    """The report was built, to its end, from runs.jsonl as it is now: nothing to rebuild."""
    return not (out / RUNS_FILE).exists() or is_current(out)


def run(backbones: Sequence[str] | str, data: Dataset | str | os.PathLike | None = None,
        out: str | os.PathLike | None = None, verbose: int = 0, isolate: bool = False,
        **config) -> pd.DataFrame:
    """Runs backbones (names or globs) under the lesson protocol; one DataFrame row per backbone.

    `config` takes any RunConfig field (image_size=224, preprocess="lesson", epochs=10, ...).
    With `out`, rows also go to out/runs.jsonl (finished runs there are skipped) and the
    leaderboard is written there. `isolate=True` runs each backbone in its own process.

        import bench
        df = bench.run(["DenseNet121", "EfficientNet*"], data="data/dataset_dollarstreet")
    """
    load_extras()  # the modules named in $BENCH_EXTRA_BACKBONES, as the command line does
    names = [backbones] if isinstance(backbones, str) else list(backbones)
    specs = select(names)
    cfg = RunConfig(verbose=verbose, **config)
    if not isinstance(data, Dataset):
        data = load_dataset(data)
    outcome = run_sweep(specs, cfg, data, out, log=print if verbose else None,
                        executor=make_executor(isolate))
    import pandas as pd  # the notebook's table; the command line never needs pandas

    return pd.DataFrame([r.to_dict() for r in outcome.results])
