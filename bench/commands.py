"""What python -m bench's commands do, once their arguments are parsed: run, list, report.

No argparse here and no TensorFlow at import: a command that needs no model never loads it.
A user's mistake raises UsageError (or ConfigError, from the options) with a one-line message;
a results folder another bench process is writing raises bench.fsio.FolderBusy.
"""

from __future__ import annotations

import math
import os
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from backbones import UnknownBackboneError, baselines, canonical, load_extras, rows, select
from bench import runlog
from bench.config import LESSON_IMAGE_SIZE, ConfigError, RunConfig, knob
from bench.data import FILES, DataError, LazyDataset, load_dataset
from bench.data.dollarstreet import DEFAULT_DIR
from bench.dryrun import dry_run
from bench.executors import make_executor
from bench.executors.ray_cluster import ClusterError, RayExecutor
from bench.fsio import LOCK_FILE, writer_lock
from bench.identity import identify
from bench.report import write_report
from bench.sweep import run_sweep
from bench.weights import WEIGHTS_ENV, WeightsError, weights_folder

DEFAULT_OUT_DIR = Path("results")


class UsageError(Exception):
    """A user error: printed as one line on stderr, exit code 2."""


class Interrupted(Exception):
    """Ctrl-C during a sweep; str(err) says where the finished rows are and how to resume."""


@dataclass(frozen=True)
class SweepOptions:
    """How a sweep is run (what, where, on which executor), as opposed to the protocol."""

    backbones: Sequence[str] = knob(
        (), "backbone names or globs, case-insensitive ('EfficientNet*', 'MobileNet_0.25'); "
        "see --list", metavar="NAME", nargs="*", positional=True)
    all: bool = knob(False, "every keras.applications constructor (the 40 canonical entries)")
    list: bool = knob(False, "print the registry and exit")
    dry_run: bool = knob(
        False, "train nothing: predict each entry's seconds (start-up, extraction, training) "
        "and the sweep's total on this machine, from the registry's stored FLOP counts and "
        "speeds measured once (about 20 s) and remembered in the cache folder; measured again "
        "when a reference convolution, timed each time, says the machine's speed has changed")
    data: str = knob(
        str(DEFAULT_DIR), "the dataset: a folder with train/test _images/_labels .npy files (the "
        "default one is downloaded from Zenodo record 10970014 when missing); a folder of images "
        "per class (DIR/train/<class>/ with DIR/test/<class>/ or DIR/val/<class>/, or "
        "DIR/<class>/ alone, split by --test-fraction); or tfds:NAME[:SPLITS], a TensorFlow "
        "Datasets dataset already prepared in the TFDS data folder", metavar="DIR|tfds:NAME")
    # the split of a <class>/-only folder is drawn with a fixed seed, not --seed: every seed
    # and every later run sees the same split
    test_fraction: float = knob(
        0.25, "a DIR/<class>/-only image folder: share of each class held out for evaluation",
        metavar="F")
    skip_bad_images: bool = knob(
        False, "leave corrupt or truncated images out with a warning (their names go in every "
        "row) instead of stopping")
    tfds_dir: str | None = knob(
        None, "tfds:NAME: the TFDS data folder (default: $TFDS_DATA_DIR, else "
        "~/tensorflow_datasets)", metavar="DIR")
    out: str = knob(str(DEFAULT_OUT_DIR), "the folder of runs.jsonl, the leaderboard and plots",
                    metavar="DIR")
    # a crash, an out-of-memory kill or a hang of one backbone must not end a sweep of several
    no_isolate: bool = knob(
        False, "run every backbone in this process (default: a sweep of several runs each "
        "backbone in its own child process, so a crash is one error row)")
    timeout_min: float | None = knob(
        None, "wall-clock limit per backbone in minutes (isolated runs only)", metavar="N",
        type=float)
    ray: str | None = knob(
        None, "run each (backbone, seed) as a Ray task on the cluster at ADDRESS (as ray.init "
        "takes it: HOST:PORT, auto, ray://HOST:10001), or on a local Ray instance when no "
        "ADDRESS is given; needs pip install -e .[ray]", metavar="ADDRESS", nargs="?", const="")
    # fractions allowed: 0.5 GPU puts two tasks on one GPU
    gpus_per_task: float | None = knob(
        None, "GPUs each Ray task asks for (default: 1 if the cluster has GPUs, else 0)",
        metavar="N", type=float)
    cpus_per_task: float | None = knob(
        None, "CPUs each Ray task asks for (default: 1)", metavar="N", type=float)
    rerun: bool = knob(
        False, "run backbones again even when runs.jsonl has an ok row for the same config hash "
        "(default: skip them, so a re-run resumes)")
    quiet: bool = knob(False, "no Keras progress bars")
    # the recommendation bounds how much worse the cheaper entry may be; the report's, not the
    # runs': change it and `report` rebuilds the answer from the same rows
    margin: float = knob(
        2.0, "the recommendation: the cheapest entry shown at most this many accuracy points "
        "below the best (95 %%, the choice of the best included)", metavar="POINTS")

    def __post_init__(self) -> None:
        # nan fails no `<= 0` and inf passes every bound: both are refused outright
        if self.timeout_min is not None and (not (math.isfinite(self.timeout_min)
                                                  and self.timeout_min > 0) or self.no_isolate):
            extra = " with --no-isolate" if self.no_isolate else ""
            raise ConfigError("timeout_min", "needs a positive, finite number of minutes and "
                              f"isolated runs (received {self.timeout_min}{extra})")
        for name in ("gpus_per_task", "cpus_per_task"):
            amount = getattr(self, name)
            if amount is not None and not (math.isfinite(amount) and amount >= 0):
                raise ConfigError(name, f"must be a finite number >= 0; received {amount}")
        if self.ray is None and (self.gpus_per_task, self.cpus_per_task) != (None, None):
            raise ConfigError("gpus_per_task", "and --cpus-per-task apply to --ray runs")
        if not (math.isfinite(self.margin) and 0 <= self.margin <= 100):
            raise ConfigError("margin", f"must be accuracy points between 0 and 100; received "
                              f"{self.margin}")
        if self.ray is not None and (self.no_isolate or self.timeout_min is not None):
            raise ConfigError("no_isolate", "and --timeout-min do not apply to --ray runs (each "
                              "(backbone, seed) is a Ray task in a Ray worker process)")

    @property
    def verbose(self) -> int:
        """RunConfig.verbose: progress bars redraw in a terminal; a log reads better with one
        line per extraction."""
        return 0 if self.quiet else (1 if sys.stdout.isatty() else 2)


_LIST_WIDTH = 100  # --list fits a terminal: the weights files, the widest, get their own table


def list_backbones() -> None:
    """Prints the registry in a terminal's width: one line of facts per row, what the columns
    mean, each family's constraints, then the weights file each backbone loads."""
    from tabulate import tabulate

    _load_extras()
    table = rows()
    n_canonical = sum(1 for r in table if r["canonical"])
    n_baselines = sum(1 for r in table if r["family"] == "baseline")
    facts = [{"name": r["name"], "family": r["family"],
              "--all": "yes" if r["canonical"] or r["family"] == "baseline" else "",
              "size": r["input_size"], "min": r["min_size"], "preprocess": r["preprocess"],
              "width": r["feature_width"],
              "params": None if r["params"] is None else f"{r['params'] / 1e6:.3g}M",
              "top-1": r["top1"]} for r in table]
    print(tabulate(facts, headers="keys", tablefmt="simple", intfmt=",", floatfmt=".1f",
                   colalign=("left", "left", "left", "right", "right", "left", "right",
                             "right", "right")))
    legend = (f"--all: yes for what --all runs, the {n_canonical} keras.applications "
              f"constructors and the {n_baselines} from-scratch baselines; the "
              f"{len(table) - n_canonical - n_baselines} others are width variants, run by "
              "name or glob. size: the side the ImageNet weights were trained at; min: the "
              "smallest side Keras accepts; width: the features the head sees; params: the "
              "frozen backbone's; top-1: its published ImageNet top-1 % "
              "(keras.io/api/applications).")
    print("", textwrap.fill(legend, _LIST_WIDTH), "", sep="\n")
    for who, text in _list_notes(table):
        print(f"{who}: {text}")
    weights = [(r["name"], r["weights_file"]) for r in table if r["weights_file"]]
    print("\nKeras' ImageNet weights file of each backbone at its size (--weights-dir holds "
          "these names):\n")
    print(tabulate(weights, headers=("name", "weights file"), tablefmt="simple"))


def _list_notes(table: list[dict]) -> list[tuple[str, str]]:
    """(family, constraint) when a family's rows share one, else (name, constraint)."""
    by_family: dict[str, set[str]] = {}
    for r in table:
        by_family.setdefault(r["family"], set()).add(r["constraints"] or "")
    notes = {}
    for r in table:
        shared = len(by_family[r["family"]]) == 1
        if r["constraints"]:
            notes.setdefault((r["family"] if shared else r["name"], r["constraints"]), None)
    return list(notes)


def report(out: str, margin_points: float = 2.0) -> None:
    """Rebuilds leaderboard.md, leaderboard.csv and the plots from out/runs.jsonl."""
    folder = Path(out)
    if not (folder / runlog.RUNS_FILE).is_file():
        raise UsageError(f"No {runlog.RUNS_FILE} in {folder}: nothing to report")
    with writer_lock(folder):
        print(f"Wrote {write_report(folder, margin=margin_points / 100)['markdown']}")


def run(options: SweepOptions, config: RunConfig) -> int:
    """The sweep (or its dry run) the options ask for; returns how many rows failed."""
    specs = _select(options)
    _check_weights(specs, config)
    # $BENCH_WEIGHTS_DIR made explicit: child processes and Ray workers get the folder itself
    config = replace(config, weights_dir=weights_folder(config.weights_dir))
    _check_sizes(specs, config)
    _check_engine(config)
    if options.dry_run:
        try:
            dry_run(specs, config, Path(options.data), isolated=_isolates(options, specs))
        except DataError as err:
            raise UsageError(str(err)) from None
        except KeyboardInterrupt:
            raise Interrupted("a dry run writes nothing but the calibrations, each kept once "
                              "measured; run it again to go on") from None
        return 0
    created = not Path(options.out).exists()
    out = _writable(Path(options.out))
    try:
        # held from before the data is read to the last report file: a second process on
        # this folder is told at once, before it does any work
        with writer_lock(out):
            return _sweep(options, config, specs, out)
    except UsageError:
        if created:  # bad data or executor: leave no folder holding only the lock file
            _remove_if_only_lock(out)
        raise


def _remove_if_only_lock(out: Path) -> None:
    if [p.name for p in out.iterdir()] == [LOCK_FILE]:
        (out / LOCK_FILE).unlink()
        out.rmdir()


def _sweep(options: SweepOptions, config: RunConfig, specs: list, out: Path) -> int:
    """The sweep itself, under out's writer lock; how many rows failed."""
    data = _load(options.data, options, specs, config)
    executor = _executor(options, specs)
    try:
        outcome = run_sweep(specs, config, data, out, log=_print, executor=executor,
                            rerun=options.rerun, margin=options.margin / 100)
    except KeyboardInterrupt:
        raise Interrupted(f"finished rows are kept in {out / 'runs.jsonl'}. Run the same "
                          "command again to resume (finished backbones are skipped)") from None
    failed = len(outcome.failed)
    skipped = f", {len(outcome.skipped)} skipped (already done)" if outcome.skipped else ""
    print(f"Leaderboard: {out / 'leaderboard.md'} ({len(outcome.results) - failed} ok, "
          f"{failed} failed{skipped})")
    return failed


def _print(line: str) -> None:
    print(line, flush=True)


def _select(options: SweepOptions) -> list:
    """The registry entries the options name, each once, in the order given."""
    if not options.backbones and not options.all:
        raise UsageError("name at least one backbone, or pass --all (see: python -m bench --list)")
    _load_extras()
    try:
        specs = (canonical() + baselines() if options.all else []) + (
            select(list(options.backbones)) if options.backbones else [])
    except UnknownBackboneError as err:
        raise UsageError(str(err)) from None
    return list({s.name: s for s in specs}.values())


def _load_extras() -> None:
    """The rows of the modules named in $BENCH_EXTRA_BACKBONES join the registry."""
    try:
        load_extras()
    except (ImportError, ValueError) as err:  # a module that is not there, a name taken
        raise UsageError(f"BENCH_EXTRA_BACKBONES: {err}") from None


def _check_weights(specs: list, config: RunConfig) -> None:
    """Weights files and folders exist before anything runs."""
    if config.weights not in ("imagenet", "random"):
        if len(specs) != 1:
            raise UsageError(f"--weights FILE applies to a single backbone; received "
                             f"{len(specs)} ({', '.join(s.name for s in specs[:4])}...)")
        if not Path(config.weights).is_file():
            raise UsageError(f"--weights: no such file '{config.weights}' (expected imagenet, "
                             f"random or a weights file)")
    folder = weights_folder(config.weights_dir)
    if folder and not Path(folder).is_dir():
        flag = "--weights-dir" if config.weights_dir else f"${WEIGHTS_ENV}"
        raise UsageError(f"{flag}: no such folder {folder!r}")


def _batch_bytes(config: RunConfig) -> int:
    """A lower bound of the memory one extraction batch takes at config.image_size: float32
    images, and the first convolution's output, which every keras.applications backbone makes
    at least 2.7x larger (32 or more channels at half the side, from 3): 4 bytes x 3 channels
    x side^2, times 1 + 2.7, rounded up to 4."""
    side = int(config.image_size)
    return 4 * 3 * side * side * config.extract_batch_size * 4


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not every platform tells
        return None


def _check_engine(config: RunConfig) -> None:
    """--runtime openvino needs its package, which a minimal install may lack; auto does not."""
    import importlib.util

    if config.runtime == "openvino" and importlib.util.find_spec("openvino") is None:
        raise UsageError("--runtime openvino needs the openvino package (pip install openvino), "
                         "which is not installed; --runtime auto or tensorflow run without it")


def _check_sizes(specs: list, config: RunConfig) -> None:
    """--image-size fits every selected backbone, and this machine's memory, before any data
    is read or downloaded."""
    if config.image_size == "native":
        return
    need = _batch_bytes(config)
    have = _physical_memory()
    if have and need > have:
        raise UsageError(
            f"--image-size {config.image_size}: one batch of {config.extract_batch_size} images "
            f"at that size needs at least {need / 2**30:,.0f} GiB of memory, this machine has "
            f"{have / 2**30:,.0f} GiB; expected a smaller size (the lesson's is 160)")
    small = [s for s in specs if s.kind != "baseline" and config.image_size < s.min_size]
    if small:
        need = max(s.min_size for s in small)
        names = ", ".join(f"{s.name} ({s.min_size})" for s in small[:4])
        more = f" and {len(small) - 4} more" if len(small) > 4 else ""
        raise UsageError(f"--image-size {config.image_size} is below the smallest input side "
                         f"of {names}{more}: expected at least {need}, or native")


def _writable(out: Path) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".bench-write-test"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise UsageError(f"--out: cannot write to '{out}' ({err.strerror or err})") from None
    return out


def _load(folder: str, options: SweepOptions | None = None, specs: Sequence = (),
          config: RunConfig | None = None):
    """The dataset, checked, with what the loader changed said on stdout.

    An image folder or a TFDS dataset is decoded here when a run of the sweep needs its pixels,
    so that a bad image is a usage error before any model is built; when every run is already
    done, it is not decoded at all. Images of mixed sizes are stored at the largest size the
    selected backbones need.
    """
    options = options or SweepOptions(data=folder)
    is_default = not folder.startswith("tfds:") and Path(folder).resolve() == DEFAULT_DIR.resolve()
    if is_default and not all((Path(folder) / name).is_file() for name in FILES):
        from bench.engine.quiet import import_tensorflow

        import_tensorflow()  # the download goes through keras.utils.get_file
    try:
        data = load_dataset(folder, test_fraction=options.test_fraction,
                            skip_bad_images=options.skip_bad_images,
                            storage_size=_storage_size(specs, config), tfds_dir=options.tfds_dir)
        _print(f"Data: {data.source} ({data.kind}): {data.n_train} train / {data.n_test} "
               f"test images {'x'.join(map(str, data.image_shape))}, "
               f"{data.n_classes} classes")
        for note in data.notes:
            _print(f"Data: {note}")
        if isinstance(data, LazyDataset) and _needs_pixels(data, options, specs, config):
            data.loaded  # noqa: B018 -- decoded now: a bad image stops the sweep before it starts
    except DataError as err:
        raise UsageError(str(err)) from None
    return data


def _storage_size(specs: Sequence, config: RunConfig | None) -> int | None:
    """The side images of mixed sizes are stored at: the largest any selected backbone needs."""
    if config is None:
        return None

    sizes = [config.size_for(s.input_size) for s in specs if s.kind != "baseline"]
    return max(sizes, default=config.size_for(LESSON_IMAGE_SIZE))


def _needs_pixels(data, options: SweepOptions, specs: Sequence, config: RunConfig | None
                  ) -> bool:
    """Whether some (backbone, seed) has no ok row in runs.jsonl yet (the sweep will run it)."""
    if config is None or options.rerun:
        return True

    done = {r.get("config_hash") for r in runlog.read_records(Path(options.out))
            if r.get("status") == "ok"}
    for spec in specs:
        for seed_config in config.per_seed():
            try:
                if identify(spec, seed_config, data).config_hash not in done:
                    return True
            except (WeightsError, ValueError, OSError):  # the run will report it
                return True
    return False


def _isolates(options: SweepOptions, specs: list) -> bool:
    """Whether each backbone runs in a process of its own: a child, or a Ray worker."""
    return options.ray is not None or not options.no_isolate and (
        len(specs) > 1 or options.timeout_min is not None)


def _executor(options: SweepOptions, specs: list):
    """The executor the options ask for; a Ray cluster is connected now, so that no Ray, a bad
    address or a task no node can hold is a usage error before anything runs."""
    if options.ray is None:
        return make_executor(_isolates(options, specs), options.timeout_min)

    executor = RayExecutor(options.ray or None, gpus_per_task=options.gpus_per_task,
                           cpus_per_task=options.cpus_per_task, log=_print)
    try:
        executor.connect()
    except ClusterError as err:
        raise UsageError(str(err)) from None
    return executor
