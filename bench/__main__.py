"""python -m bench: parse arguments, call the library, map errors to exit codes.

Exit codes: 0 every selected backbone ran; 1 some rows failed (all rows still written);
2 usage or data error (one line on stderr); 130 interrupted (finished rows kept).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.config import DEFAULT_DATA_DIR, DEFAULT_OUT_DIR, RunConfig
from bench.engine.quiet import import_tensorflow

EXIT_OK, EXIT_FAILED_ROWS, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """A user error: printed as one line on stderr, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        raise UsageError(f"{message} (see: python -m bench --help)")


def _image_size(text: str) -> int | str:
    if text == "native":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer or 'native'; received {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; received {value}")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer; received {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0; received {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number; received {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1; received {value}")
    return value


def _positive(text: str) -> int:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected an integer >= 1; received 0")
    return value


def _amount(text: str) -> float:
    """A Ray resource request: a number >= 0, fractions allowed (0.5 GPU: two tasks share one)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number; received {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0; received {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    defaults = RunConfig()
    p = _Parser(
        prog="python -m bench",
        description="Train the Carpentries transfer-learning lesson's head on frozen "
        "keras.applications backbones and write a leaderboard. "
        "Every default is the lesson's value.",
        epilog="Rebuild the leaderboard from runs.jsonl: python -m bench report --out DIR",
    )
    p.add_argument("backbones", nargs="*", metavar="NAME",
                   help="backbone names or globs, case-insensitive ('EfficientNet*', "
                        "'MobileNet_0.25'); see --list")
    p.add_argument("--all", action="store_true",
                   help="every keras.applications constructor (the 40 canonical entries)")
    p.add_argument("--list", action="store_true", help="print the registry and exit")
    p.add_argument("--dry-run", action="store_true",
                   help="train nothing: print each backbone's GFLOPs per image at its size and "
                        "its extraction time predicted from a short calibration on this machine")
    p.add_argument("--data", default=str(DEFAULT_DATA_DIR), metavar="DIR",
                   help="folder with train/test _images/_labels .npy files (default: %(default)s, "
                        "downloaded from Zenodo record 10970014 when missing)")
    p.add_argument("--out", default=str(DEFAULT_OUT_DIR), metavar="DIR",
                   help="where runs.jsonl, the leaderboard and plots go (default: %(default)s)")
    p.add_argument("--image-size", type=_image_size, default=defaults.image_size, metavar="N",
                   help="square side images are resized to, or 'native' for each backbone's "
                        "ImageNet size (default: %(default)s, the lesson's)")
    p.add_argument("--pooling", choices=("max", "avg"), default=defaults.pooling,
                   help="global pooling of the backbone (default: %(default)s)")
    p.add_argument("--batch-size", type=_positive, default=defaults.batch_size,
                   help="head training batch size (default: %(default)s)")
    p.add_argument("--epochs", type=_positive, default=defaults.epochs,
                   help="maximum epochs (default: %(default)s)")
    p.add_argument("--patience", type=_non_negative, default=defaults.patience,
                   help="early-stopping patience on val_accuracy; 0 turns it off "
                        "(default: %(default)s)")
    p.add_argument("--seed", type=int, default=defaults.seed,
                   help="keras.utils.set_random_seed value (default: %(default)s)")
    p.add_argument("--seeds", type=_positive, default=defaults.seeds, metavar="K",
                   help="train the head K times (seeds --seed, --seed+1, ...) on one feature "
                        "extraction; the leaderboard shows mean ± sd (default: %(default)s)")
    p.add_argument("--protocol", choices=("lesson", "holdout"), default=defaults.protocol,
                   help="lesson: early stopping watches the test file, as the episode; "
                        "holdout: a stratified split of train drives early stopping (best "
                        "weights restored) and the test file is evaluated once "
                        "(default: %(default)s)")
    p.add_argument("--val-fraction", type=_fraction, default=defaults.val_fraction,
                   metavar="F", help="holdout: share of each training class held out "
                                     "(default: %(default)s)")
    p.add_argument("--preprocess", choices=("native", "lesson"), default=defaults.preprocess,
                   help="native: each model's own preprocess_input on 0-255 pixels; lesson: "
                        "pixels/255 for every model, as the episode (default: %(default)s)")
    p.add_argument("--end-to-end", action="store_true",
                   help="the episode's model.fit on the full model every epoch, instead of "
                        "training the head on features computed once (same results, slower)")
    p.add_argument("--weights", default=defaults.weights, metavar="imagenet|random|FILE",
                   help="imagenet (Keras' download and cache), random (weights=None), or a "
                        "weights file for a single backbone (default: %(default)s)")
    p.add_argument("--weights-dir", metavar="DIR",
                   help="folder searched first for Keras' own ImageNet weights file names")
    p.add_argument("--extract-batch-size", type=_positive, default=defaults.extract_batch_size,
                   help="inference batch for the frozen backbone (default: %(default)s)")
    p.add_argument("--no-isolate", action="store_true",
                   help="run every backbone in this process (default: a sweep of several runs "
                        "each backbone in its own child process, so a crash is one error row)")
    p.add_argument("--timeout-min", type=float, metavar="N",
                   help="wall-clock limit per backbone in minutes (isolated runs only)")
    p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="run each (backbone, seed) as a Ray task on the cluster at ADDRESS (as "
                        "ray.init takes it: HOST:PORT, auto, ray://HOST:10001), or on a local "
                        "Ray instance when no ADDRESS is given; needs pip install -e .[ray]")
    p.add_argument("--gpus-per-task", type=_amount, metavar="N",
                   help="GPUs each Ray task asks for (default: 1 if the cluster has GPUs, else 0)")
    p.add_argument("--cpus-per-task", type=_amount, metavar="N",
                   help="CPUs each Ray task asks for (default: 1)")
    p.add_argument("--rerun", action="store_true",
                   help="run backbones again even when runs.jsonl has an ok row for the same "
                        "config hash (default: skip them, so a re-run resumes)")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="feature cache (default: $BENCH_CACHE_DIR or ~/.cache/bench/features)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write cached features")
    p.add_argument("--quiet", action="store_true", help="no Keras progress bars")
    return p


def _report_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m bench report",
                description="Rebuild leaderboard.md, leaderboard.csv and plots from runs.jsonl.")
    p.add_argument("--out", default=str(DEFAULT_OUT_DIR), metavar="DIR",
                   help="the folder holding runs.jsonl (default: %(default)s)")
    return p


def _print_registry() -> None:
    from tabulate import tabulate

    from backbones import rows

    table = rows()
    print(tabulate(table, headers="keys", tablefmt="github", intfmt=","))
    n_canonical = sum(1 for r in table if r["canonical"])
    n_baselines = sum(1 for r in table if r["family"] == "baseline")
    print(f"\n{n_canonical} keras.applications constructors and {n_baselines} from-scratch "
          f"baselines (--all), {len(table) - n_canonical - n_baselines} width variants "
          f"(select by name or glob).")


def _report(argv: list[str]) -> int:
    from bench import report, runlog

    args = _report_parser().parse_args(argv)
    out = Path(args.out)
    if not (out / runlog.RUNS_FILE).is_file():
        raise UsageError(f"No {runlog.RUNS_FILE} in {out}: nothing to report")
    paths = report.write_report(out)
    print(f"Wrote {paths['markdown']}")
    return EXIT_OK


def _ray_executor(args: argparse.Namespace):
    """The Ray executor for --ray, connected now: no Ray, a bad address or a task no node can
    hold is a usage error before anything runs. None without --ray."""
    if args.ray is None:
        if args.gpus_per_task is not None or args.cpus_per_task is not None:
            raise UsageError("--gpus-per-task and --cpus-per-task apply to --ray runs")
        return None
    if args.no_isolate or args.timeout_min is not None:
        raise UsageError("--no-isolate and --timeout-min do not apply to --ray runs (each "
                         "(backbone, seed) is a Ray task in a Ray worker process)")
    from bench.executors.ray_cluster import ClusterError, RayExecutor

    executor = RayExecutor(args.ray or None, gpus_per_task=args.gpus_per_task,
                           cpus_per_task=args.cpus_per_task,
                           log=lambda line: print(line, flush=True))
    try:
        executor.connect()
    except ClusterError as err:
        raise UsageError(str(err)) from None
    return executor


# The lesson's data (Dollar Street 10, Zenodo 10970014), for a dry run before the download.
LESSON_IMAGES, LESSON_IMAGE_SHAPE = 878 + 293, (64, 64, 3)


def _dry_run(specs: list, config: RunConfig, data_dir: Path) -> int:
    """Predicted cost of the sweep (engine.cost): nothing is trained, downloaded or written."""
    from tabulate import tabulate

    from bench.data import FILES, DataError, load_dataset

    if all((data_dir / name).is_file() for name in FILES):
        try:
            data = load_dataset(data_dir)
        except DataError as err:
            raise UsageError(str(err)) from None
        n_images, shape = data.n_train + data.n_val, data.image_shape
        source = f"{data.source}: {data.n_train} + {data.n_val} images"
    else:
        n_images, shape = LESSON_IMAGES, LESSON_IMAGE_SHAPE
        source = f"the lesson's Dollar Street 10 (not in {data_dir}): {n_images} images"
    import_tensorflow()
    from bench.engine import cost

    print(f"Dry run: {len(specs)} backbones, {source} {'x'.join(map(str, shape))}, "
          f"extraction batch {config.extract_batch_size}", flush=True)
    print("Calibrating on this machine ...", flush=True)
    calibration = cost.calibrate(config, shape)
    print("Calibration: " + ", ".join(f"{name} {n} images in {s:.2f} s"
                                      for name, n, s, _ in calibration.timings)
          + f" -> {calibration.seconds_per_gflop * 1e3:.2f} ms/GFLOP, "
          f"{calibration.seconds_per_mvalue * 1e3:.3f} ms per million activations, "
          f"{calibration.trace_seconds_per_op * 1e3:.2f} ms per graph op", flush=True)
    rows = cost.estimate(specs, config, n_images, calibration, shape,
                         progress=lambda i, n, name: print(f"[{i}/{n}] {name}", flush=True))
    table = [{"backbone": r["backbone"], "size": r["image_size"],
              "GFLOPs/image": None if r["gflops"] is None else round(r["gflops"], 3),
              "predicted extraction s": (None if r["predicted_extract_s"] is None
                                         else round(r["predicted_extract_s"], 1)),
              "note": r["note"]} for r in rows]
    print(tabulate(table, headers="keys", tablefmt="github", missingval="-"))
    total = sum(r["predicted_extract_s"] or 0.0 for r in rows)
    print(f"Predicted extraction for the sweep: {total:.0f} s ({total / 60:.1f} min), "
          f"tracing included; the head's epochs and from-scratch baselines come on top. "
          f"Features already in the cache cost nothing.")
    return EXIT_OK


def _main(argv: list[str]) -> int:
    if argv[:1] == ["report"]:
        return _report(argv[1:])
    args = build_parser().parse_args(argv)
    if args.list:
        _print_registry()
        return EXIT_OK
    if not args.backbones and not args.all:
        raise UsageError("name at least one backbone, or pass --all (see: python -m bench --list)")

    from backbones import UnknownBackboneError, baselines, canonical, select
    from bench.data import FILES, DataError, load_dataset

    try:
        specs = (canonical() + baselines() if args.all else []) + (
            select(args.backbones) if args.backbones else [])
    except UnknownBackboneError as err:
        raise UsageError(str(err)) from None
    specs = list({s.name: s for s in specs}.values())
    if args.weights not in ("imagenet", "random"):
        if len(specs) != 1:
            raise UsageError(f"--weights FILE applies to a single backbone; received "
                             f"{len(specs)} ({', '.join(s.name for s in specs[:4])}...)")
        if not Path(args.weights).is_file():
            raise UsageError(f"--weights: no such file '{args.weights}' (expected imagenet, "
                             f"random or a weights file)")
    if args.weights_dir and not Path(args.weights_dir).is_dir():
        raise UsageError(f"--weights-dir: no such folder '{args.weights_dir}'")
    if args.timeout_min is not None and (args.timeout_min <= 0 or args.no_isolate):
        extra = " with --no-isolate" if args.no_isolate else ""
        raise UsageError("--timeout-min needs a positive number of minutes and isolated runs "
                         f"(received {args.timeout_min}{extra})")
    config = RunConfig(
        image_size=args.image_size, pooling=args.pooling, batch_size=args.batch_size,
        epochs=args.epochs, patience=args.patience, seed=args.seed, seeds=args.seeds,
        protocol=args.protocol, val_fraction=args.val_fraction, preprocess=args.preprocess,
        end_to_end=args.end_to_end, weights=args.weights, weights_dir=args.weights_dir,
        extract_batch_size=args.extract_batch_size,
        # progress bars redraw in a terminal; in a log, one line per extraction reads better
        verbose=0 if args.quiet else (1 if sys.stdout.isatty() else 2),
        cache=not args.no_cache, cache_dir=args.cache_dir,
    )
    if args.dry_run:
        return _dry_run(specs, config, Path(args.data))
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".bench-write-test"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise UsageError(f"--out: cannot write to '{out}' ({err.strerror or err})") from None
    if not all((Path(args.data) / name).is_file() for name in FILES):
        import_tensorflow()  # the download goes through keras.utils.get_file
    try:
        data = load_dataset(args.data)
    except DataError as err:
        raise UsageError(str(err)) from None
    print(f"Data: {data.source}: {data.n_train} train / {data.n_val} validation images "
          f"{'x'.join(map(str, data.image_shape))}, {data.n_classes} classes", flush=True)
    for note in data.notes:
        print(f"Data: {note}", flush=True)

    from bench.executors.isolated import make_executor
    from bench.sweep import run_sweep

    isolate = not args.no_isolate and (len(specs) > 1 or args.timeout_min is not None)
    executor = _ray_executor(args) or make_executor(isolate, args.timeout_min)
    try:
        outcome = run_sweep(specs, config, data, out, log=lambda line: print(line, flush=True),
                            executor=executor, rerun=args.rerun)
    except KeyboardInterrupt:
        print(f"bench: interrupted; finished rows are kept in {out / 'runs.jsonl'}. Run the "
              f"same command again to resume (finished backbones are skipped)", file=sys.stderr)
        return EXIT_INTERRUPTED
    failed = outcome.failed
    ok = len(outcome.results) - len(failed)
    skipped = f", {len(outcome.skipped)} skipped (already done)" if outcome.skipped else ""
    print(f"Leaderboard: {out / 'leaderboard.md'} ({ok} ok, {len(failed)} failed{skipped})")
    return EXIT_FAILED_ROWS if failed else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except UsageError as err:
        print(f"bench: error: {err}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
