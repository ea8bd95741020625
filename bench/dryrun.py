"""python -m bench --dry-run: what a sweep will cost, before anything is trained or downloaded.

It answers in seconds: each backbone's FLOPs, activations and graph size are the registry's
stored counts (backbones/graph_stats.py), and this machine's speeds are measured once
(bench.engine.calibration: extraction per runtime, the head's and each baseline's training,
a child process's start-up) and remembered in the cache folder. The prediction covers the
whole sweep: start-up, building, extraction (with OpenVINO's conversions, cold and cached),
the head's epochs for every seed, and the from-scratch baselines' training.

TensorFlow is imported only when a dry run is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench import cache
from bench.config import RunConfig
from bench.data import FILES, dollarstreet, load_dataset
from bench.identity import is_baseline


@dataclass(frozen=True)
class Workload:
    """What the sweep will read."""

    n_train: int
    n_test: int
    image_shape: tuple[int, ...]
    n_classes: int
    source: str

    @property
    def n_images(self) -> int:
        return self.n_train + self.n_test


@dataclass(frozen=True)
class Speeds:
    """This machine's training speeds and start-up, as bench.engine.calibration measures them."""

    head_first_s: float  # the head's first epoch, tracing included
    head_per_value_s: float  # a steady epoch, per sample x feature value
    start_up_s: float = 0.0  # an isolated child's start; 0 when backbones run in this process
    # baseline name -> (first epoch s, steady epoch s per image)
    baselines: dict[str, tuple[float, float]] = field(default_factory=dict)
    # --fine-tune: a training step per image against a forward pass (backward included)
    train_per_forward: float = 3.0


def dry_run(specs: list, config: RunConfig, data_dir: Path, isolated: bool = False) -> None:
    """Prints each entry's predicted seconds and the sweep's total, cold and with OpenVINO's
    conversions cached. Nothing is trained, downloaded or written but the calibrations."""
    work = _workload(data_dir)
    from bench.engine.quiet import import_tensorflow

    import_tensorflow()
    from bench.engine import calibration, cost
    _print(f"Dry run: {len(specs)} entries, {work.source} {'x'.join(map(str, work.image_shape))}, "
           f"extraction batch {config.extract_batch_size}")
    _print(f"Speed reference: {calibration.reference_seconds() * 1e3:.1f} ms a call of bench's "
           f"reference convolution now; a remembered speed measured more than "
           f"{calibration.REFERENCE_TOLERANCE:.2f}x away from it is measured again")
    store = Path(config.cache_dir or cache.default_cache_dir())
    calibrations = {}
    for runtime in dict.fromkeys(("tensorflow", *cost.runtimes_to_calibrate(config))):
        calibrations[runtime], how = calibration.extraction(config, work.image_shape, runtime,
                                                           store)
        _print_calibration(calibrations[runtime], how)
    speeds = _speeds(specs, config, work, store, isolated)
    rows = cost.estimate(specs, config, work.n_images, calibrations, work.image_shape,
                         n_train=work.n_train)
    rows = whole_runs(rows, specs, config, work, speeds)
    _print_table(rows, config)
    _print_totals(rows, config, speeds)


def _speeds(specs: list, config: RunConfig, work: Workload, store: Path,
            isolated: bool) -> Speeds:
    from bench.engine import calibration

    head, _ = calibration.head_training(work.n_classes, config, store)
    baselines = {s.name: calibration.baseline_training(s, work.image_shape, work.n_classes,
                                                       config, store)[0]
                 for s in specs if is_baseline(s)}
    start_up = calibration.start_up(store)[0]["seconds"] if isolated else 0.0
    ratio = (calibration.fine_tuning(config, work.image_shape, work.n_classes, store)[0][
        "train_per_forward"] if config.fine_tune else Speeds.train_per_forward)
    return Speeds(head["first_s"], head["per_value_s"], start_up,
                  {k: (v["first_s"], v["per_image_s"]) for k, v in baselines.items()}, ratio)


def whole_runs(rows: list[dict], specs: list, config: RunConfig, work: Workload,
               speeds: Speeds) -> list[dict]:
    """Each estimate row with `train_s` (every seed's training: the head on features, the
    end-to-end model on images, or a baseline; all `config.epochs` epochs, an upper bound
    early stopping usually cuts) and `total_s` / `total_warm_s` (start-up, extraction and
    training; nothing cached / OpenVINO's conversions cached). None where the backbone
    cannot run."""
    fit, watch = _fit_and_watch(config, work)
    by_name = {s.name: s for s in specs}
    out = []
    for row in rows:
        spec = by_name[row["backbone"]]
        extract, warm, epochs = 0.0, 0.0, config.epochs - 1  # after the first epoch
        if is_baseline(spec):
            first, per_image = speeds.baselines[spec.name]
            epoch = per_image * (fit + watch)
        elif row["predicted_extract_s"] is None:
            out.append(dict(row, train_s=None, total_s=None, total_warm_s=None))
            continue
        elif config.end_to_end:  # the backbone runs in every epoch; nothing is extracted
            epoch, epochs = (fit + watch) / row["tensorflow_images_per_s"], config.epochs
            first = row["predicted_build_s"]  # built per seed; tracing is small beside epochs
        else:
            first = speeds.head_first_s
            epoch = speeds.head_per_value_s * (fit + watch) * spec.feature_width
            extract, warm = row["predicted_extract_s"], row["predicted_warm_s"]
        train = config.seeds * (first + epochs * epoch)
        tune = _fine_tuning(row, spec, config, fit, watch, speeds)
        train_all = train + (0.0 if config.fine_tune_top else tune or 0.0)
        out.append(dict(row, train_s=train, tune_s=tune,
                        total_s=speeds.start_up_s + extract + train_all,
                        total_warm_s=speeds.start_up_s + warm + train_all))
    return out


def _fine_tuning(row: dict, spec, config: RunConfig, fit: int, watch: int,
                 speeds: Speeds) -> float | None:
    """The second stage's seconds for every seed (--fine-tune; None without it, and for a
    baseline): the backbone built again, then every fine-tuning epoch (an upper bound, as for
    the head) of training steps over `fit` images and forward passes over `watch`."""
    if not config.fine_tune or is_baseline(spec) or row.get("tensorflow_images_per_s") is None:
        return None
    epoch = (fit * speeds.train_per_forward + watch) / row["tensorflow_images_per_s"]
    return config.seeds * (row["predicted_build_s"] + config.fine_tune_epochs * epoch)


def _fit_and_watch(config: RunConfig, work: Workload) -> tuple[int, int]:
    """Images trained on and watched per epoch: the lesson watches the test file, the
    holdout protocol a part of the training images."""
    if config.protocol == "holdout":
        watch = round(work.n_train * config.val_fraction)
        return work.n_train - watch, watch
    return work.n_train, work.n_test


def _workload(data_dir: Path) -> Workload:
    """How many images of which shape the sweep would read, and where they come from: the
    source when it is there (an image folder or a TFDS dataset is counted, not decoded), else
    the lesson's data (the default folder before its download)."""
    is_default = data_dir.resolve() == dollarstreet.DEFAULT_DIR.resolve()
    absent = not data_dir.exists() and not str(data_dir).startswith("tfds:")
    if absent or (is_default and not all((data_dir / name).is_file() for name in FILES)):
        n = dollarstreet.N_TRAIN + dollarstreet.N_TEST
        return Workload(dollarstreet.N_TRAIN, dollarstreet.N_TEST, dollarstreet.IMAGE_SHAPE,
                        len(dollarstreet.CLASSES),
                        f"the lesson's Dollar Street 10 (not in {data_dir}): {n} images")
    # a DataError says what is wrong with the source
    data = load_dataset(str(data_dir), download=False)
    return Workload(data.n_train, data.n_test, tuple(data.image_shape), data.n_classes,
                    f"{data.source}: {data.n_train} + {data.n_test} images")


def _print_calibration(calibration, how: str) -> None:
    if how == "remembered":
        how = "remembered from an earlier measurement on this machine"
    _print(f"Calibration ({calibration.runtime}, {how}): " + ", ".join(
        f"{name} {n} images in {s:.2f} s" for name, n, s, _ in calibration.timings)
        + f" -> {calibration.seconds_per_gflop * 1e3:.2f} ms/GFLOP, "
        f"{calibration.seconds_per_mvalue * 1e3:.3f} ms per million activations, "
        f"{calibration.trace_seconds_per_op * 1e3:.2f} ms per graph op")


def _print_table(rows: list[dict], config: RunConfig) -> None:
    from tabulate import tabulate

    def seconds(value):
        return None if value is None else round(value, 1)

    table = [{"backbone": r["backbone"], "size": r["image_size"],
              "GFLOPs/image": None if r["gflops"] is None else round(r["gflops"], 3),
              "runtime": r.get("runtime"),
              "extraction s": seconds(r["predicted_extract_s"]),
              "conversions cached": seconds(r.get("predicted_warm_s")),
              "training s": seconds(r.get("train_s")),
              **({"fine-tuning s": seconds(r.get("tune_s"))} if config.fine_tune else {}),
              "whole run s": seconds(r.get("total_s")),
              "note": r["note"]} for r in rows]
    print(tabulate(table, headers="keys", tablefmt="github", missingval="-"))


def _print_totals(rows: list[dict], config: RunConfig, speeds: Speeds) -> None:
    def total(key: str) -> float:
        return sum(r.get(key) or 0.0 for r in rows)

    cold, warm, train = total("total_s"), total("total_warm_s"), total("train_s")
    tunes = sorted((r["tune_s"] for r in rows if r.get("tune_s") is not None), reverse=True)
    tune = sum(tunes[:config.fine_tune_top] if config.fine_tune_top else tunes)
    if config.fine_tune_top:  # which K is not known before the frozen stage: the K dearest
        cold, warm = cold + tune, warm + tune
    extraction = total("predicted_extract_s")
    start_up = speeds.start_up_s * sum(1 for r in rows if r.get("total_s") is not None)
    print(f"Predicted sweep: {_minutes(cold)} with nothing cached: extraction "
          f"{extraction:.0f} s (building, tracing and OpenVINO's conversions included), "
          f"training {train:.0f} s ({config.seeds} seed(s) x {config.epochs} epochs: early "
          f"stopping usually ends runs sooner), {_tuning_text(config, tune, speeds)}start-up "
          f"{start_up:.0f} s; {_minutes(warm)} with the conversions cached from an earlier run "
          "on this machine.")
    extracted = [r for r in rows if r["gflops"]]
    if extracted and all(r.get("predicted_tensorflow_s") is not None for r in extracted):
        alone = total("predicted_tensorflow_s")
        chosen = sum(r["predicted_extract_s"] for r in extracted)
        chosen_warm = sum(r["predicted_warm_s"] for r in extracted)
        if alone and chosen and chosen_warm:
            print(f"Extraction in TensorFlow alone: {_minutes(alone)} ({alone / chosen:.2f}x "
                  f"the time with nothing cached, {alone / chosen_warm:.2f}x with conversions "
                  "cached).")
    print("Features already in the feature cache would cost nothing; the prediction assumes "
          "none are." + (f" The probes ({', '.join(config.probes)}) are not included."
                         if config.probes else ""))


def _tuning_text(config: RunConfig, seconds: float, speeds: Speeds) -> str:
    if not config.fine_tune:
        return ""
    which = (f"the {config.fine_tune_top} dearest entries, as the best are not known yet"
             if config.fine_tune_top else "every backbone")
    return (f"fine-tuning {seconds:.0f} s ({which}; up to {config.fine_tune_epochs} epochs, "
            f"a training step costing {speeds.train_per_forward:.1f} forward passes), ")


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s ({seconds / 60:.1f} min)"


def _print(line: str) -> None:
    print(line, flush=True)
