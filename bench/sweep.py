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
    stage = (f", then fine-tuned up to {config.fine_tune_epochs} epochs at lr "
             f"{config.fine_tune_lr:g}" if config.fine_tune else "")
    return (f"[{i}/{n}] {spec.name}: starting ({size}px, preprocess {config.preprocess}, "
            f"weights {config.weights}, {'end-to-end' if config.end_to_end else 'cached'}, "
            f"protocol {config.protocol}{seeds_text}{stage})")


def describe_result(i: int, n: int, r: RunResult) -> str:
    name = f"[{i}/{n}] {r.backbone}{' fine-tuned' if r.stage else ''} (seed {r.seed})"
    if not r.ok:
        return f"{name}: error: {r.error}"
    holdout = (f", holdout_accuracy {r.holdout_accuracy:.3f}" if r.holdout_accuracy is not None
               else "")
    if r.frozen_accuracy is not None:
        holdout += f", frozen stage {r.frozen_accuracy:.3f}"
    return (f"{name}: ok, test_accuracy {r.test_accuracy:.3f}{holdout} (best "
            f"{r.best_epoch_accuracy:.3f} at epoch {r.best_epoch}), {r.epochs_run} epochs, "
            f"{_features_text(r)}{_fmt(r.epoch_s, '.3f')} s/epoch, total {r.total_s:.1f} s")


def _features_text(r: RunResult) -> str:
    """Where the head's features came from. Features read from the cache cost this run
    nothing: the extraction time the row keeps is the earlier run's, outside this total."""
    if r.route != "cached":  # end to end the backbone runs in every epoch; a baseline has none
        return ""
    if r.features_cached:
        return f"features from the cache (extracted earlier in {_fmt(r.extract_s, '.1f')} s), "
    return f"extraction {_fmt(r.extract_s, '.1f')} s, "


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
    run = _Runner(specs, data, checksum, out, log, executor, outcome)
    try:
        # --fine-tune: each backbone's frozen runs, then its fine-tuned ones, in one task (the
        # second stage reuses the features the first left in memory); --fine-tune-top K: the
        # frozen sweep first, then the K best entries fine-tuned
        frozen = config.frozen() if config.fine_tune else config
        tasks = _plan(specs, frozen, data, checksum, done, outcome, log)
        if config.fine_tune and not config.fine_tune_top:
            tasks = _merge(tasks, _plan(_tunable(specs), config, data, checksum, done, outcome,
                                        log))
        run(tasks, frozen if config.fine_tune_top else config)
        if config.fine_tune_top:
            best = _best_entries(specs, frozen, data, checksum, out, outcome, config.fine_tune_top)
            if log:
                log(f"Fine-tuning the {len(best)} best of the frozen stage: "
                    f"{', '.join(s.name for s in best) or 'none ran'}")
            run(_plan(best, config, data, checksum, done, outcome, log), config)
    except OSError:
        # the disk that refused a row would refuse the report too; its stale marker makes the
        # next run rebuild it
        out = None
        raise
    finally:
        if out is not None and (outcome.results or not _report_is_current(out)):
            report.write_report(out, margin=margin)
    return outcome


@dataclass
class _Runner:
    """Runs planned tasks on the executor: rows appended to out as they come, and logged."""

    specs: Sequence
    data: Dataset
    checksum: str
    out: Path | None
    log: Log | None
    executor: object
    outcome: SweepOutcome

    def __call__(self, tasks: list, config: RunConfig) -> None:
        order = {spec.name: i for i, spec in enumerate(self.specs, 1)}
        n = len(self.specs)
        seeds_of = {spec.name: len({c.seed for c in configs}) for spec, configs in tasks}

        def started(spec):
            if self.log:
                self.log(describe_start(order[spec.name], n, spec, config, seeds_of[spec.name]))

        for rows in self.executor.map(tasks, self.data, self.checksum, on_start=started):
            for result in rows:
                if self.out is not None:
                    # the head file first: a row never names a file that is not there
                    result = _append(self.out, result, self.data.image_shape)
                self.outcome.results.append(result)
                if self.log:
                    self.log(describe_result(order.get(result.backbone, 0), n, result))


def _tunable(specs: Sequence) -> list:
    """The entries a second stage applies to: pretrained backbones, not the baselines."""
    return [spec for spec in specs if spec.kind != "baseline"]


def _merge(first: list, second: list) -> list:
    """Each spec's configs of `first`, then of `second`, one task per spec in spec order."""
    configs: dict = {}
    for spec, cfgs in first + second:
        configs.setdefault(spec.name, (spec, []))[1].extend(cfgs)
    return list(configs.values())


def _best_entries(specs: Sequence, frozen: RunConfig, data: Dataset, checksum: str,
                  out: Path | None, outcome: SweepOutcome, k: int) -> list:
    """The k backbones with the best mean test accuracy over their frozen runs of this sweep's
    configuration (this sweep's rows and, in `out`, the earlier ones it skipped); ties keep the
    sweep's order."""
    wanted = {}
    for spec in _tunable(specs):
        for seed_config in frozen.per_seed():
            try:
                wanted[identify(spec, seed_config, data, checksum).config_hash] = spec.name
            except (WeightsError, ValueError, OSError):
                pass
    rows = [r.to_dict() for r in outcome.results]
    if out is not None:
        rows += runlog.read_records(out)
    scores: dict[str, dict[str, float]] = {}
    for row in rows:
        name = wanted.get(row.get("config_hash"))
        if name and row.get("status") == "ok" and row.get("test_accuracy") is not None:
            scores.setdefault(name, {})[row["config_hash"]] = float(row["test_accuracy"])
    ranked = sorted((s for s in _tunable(specs) if s.name in scores),
                    key=lambda s: -sum(scores[s.name].values()) / len(scores[s.name]))
    return ranked[:k]


def _plan(specs: Sequence, config: RunConfig, data: Dataset, checksum: str, done: set[str],
          outcome: SweepOutcome, log: Log | None) -> list:
    """The (spec, seed configs) still to run; a (backbone, seed) in `done` is skipped, and said."""
    order = {spec.name: i for i, spec in enumerate(specs, 1)}
    tasks = []
    stage = " fine-tuned" if config.fine_tune else ""
    for spec in specs:
        configs = []
        for seed_config in config.per_seed():
            try:
                key = identify(spec, seed_config, data, checksum).config_hash
            except (WeightsError, ValueError, OSError):  # the run will report it as its error
                key = None
            if key in done:
                outcome.skipped.append(f"{spec.name}{stage} (seed {seed_config.seed})")
                if log:
                    log(f"[{order[spec.name]}/{len(specs)}] {spec.name}{stage} (seed "
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
        out: str | os.PathLike | None = None, verbose: int = 0, isolate: bool = False, *,
        protocol: str = RunConfig.protocol, val_fraction: float = RunConfig.val_fraction,
        image_size: int | str = RunConfig.image_size, preprocess: str = RunConfig.preprocess,
        pooling: str = RunConfig.pooling, end_to_end: bool = RunConfig.end_to_end,
        epochs: int = RunConfig.epochs, patience: int = RunConfig.patience,
        batch_size: int = RunConfig.batch_size, fine_tune: bool = RunConfig.fine_tune,
        fine_tune_layers: int | None = RunConfig.fine_tune_layers,
        fine_tune_lr: float = RunConfig.fine_tune_lr,
        fine_tune_epochs: int = RunConfig.fine_tune_epochs,
        fine_tune_top: int | None = RunConfig.fine_tune_top, augment: bool = RunConfig.augment,
        seed: int = RunConfig.seed, seeds: int = RunConfig.seeds,
        weights: str = RunConfig.weights,
        weights_dir: str | None = RunConfig.weights_dir,
        extract_batch_size: int = RunConfig.extract_batch_size,
        runtime: str = RunConfig.runtime, probes: Sequence[str] = RunConfig.probes,
        cache: bool = RunConfig.cache, cache_dir: str | None = RunConfig.cache_dir,
        ) -> pd.DataFrame:
    """Runs backbones (names or globs) under the lesson protocol; one DataFrame row per run.

    The keyword arguments are RunConfig's knobs, with its defaults (python -m bench run --help
    says what each does). With `out`, rows also go to out/runs.jsonl (finished runs there are
    skipped) and the leaderboard is written there. `isolate=True` runs each backbone in its
    own process.

        import bench
        df = bench.run(["DenseNet121", "EfficientNet*"], data="data/dataset_dollarstreet")
    """
    load_extras()  # the modules named in $BENCH_EXTRA_BACKBONES, as the command line does
    names = [backbones] if isinstance(backbones, str) else list(backbones)
    specs = select(names)
    cfg = RunConfig(
        protocol=protocol, val_fraction=val_fraction, image_size=image_size,
        preprocess=preprocess, pooling=pooling, end_to_end=end_to_end, epochs=epochs,
        patience=patience, batch_size=batch_size, fine_tune=fine_tune,
        fine_tune_layers=fine_tune_layers, fine_tune_lr=fine_tune_lr,
        fine_tune_epochs=fine_tune_epochs, fine_tune_top=fine_tune_top, augment=augment,
        seed=seed, seeds=seeds, weights=weights, weights_dir=weights_dir,
        extract_batch_size=extract_batch_size, runtime=runtime, probes=probes, verbose=verbose,
        cache=cache, cache_dir=cache_dir)
    if not isinstance(data, Dataset):
        data = load_dataset(data)
    outcome = run_sweep(specs, cfg, data, out, log=print if verbose else None,
                        executor=make_executor(isolate))
    import pandas as pd  # the notebook's table; the command line never needs pandas

    return pd.DataFrame([r.to_dict() for r in outcome.results])
