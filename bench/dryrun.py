"""python -m bench --dry-run: what a sweep will cost, before anything is trained or downloaded.

The prediction itself is bench.engine.cost's; it is imported (with TensorFlow) only when a dry
run is asked for.
"""

from __future__ import annotations

from pathlib import Path

from bench.config import RunConfig
from bench.data import FILES, dollarstreet, load_dataset


def dry_run(specs: list, config: RunConfig, data_dir: Path) -> None:
    """Prints each backbone's GFLOPs per image and predicted extraction time, and the total.

    Nothing is trained, downloaded or written (but the calibration's graph statistics, cached).
    """
    n_images, shape, source = _images(data_dir)
    from bench.engine.quiet import import_tensorflow

    import_tensorflow()
    from bench.engine import cost

    _print(f"Dry run: {len(specs)} backbones, {source} {'x'.join(map(str, shape))}, "
           f"extraction batch {config.extract_batch_size}")
    calibrations = {}
    for runtime in cost.runtimes_to_calibrate(config):
        _print(f"Calibrating {runtime} on this machine ...")
        calibration = calibrations[runtime] = cost.calibrate(config, shape, runtime=runtime)
        _print(f"Calibration ({runtime}): " + ", ".join(
            f"{name} {n} images in {s:.2f} s" for name, n, s, _ in calibration.timings)
            + f" -> {calibration.seconds_per_gflop * 1e3:.2f} ms/GFLOP, "
            f"{calibration.seconds_per_mvalue * 1e3:.3f} ms per million activations, "
            f"{calibration.trace_seconds_per_op * 1e3:.2f} ms per graph op")
    rows = cost.estimate(specs, config, n_images, calibrations, shape,
                         progress=lambda i, n, name: _print(f"[{i}/{n}] {name}"))
    _print_table(rows)


def _images(data_dir: Path) -> tuple[int, tuple[int, ...], str]:
    """How many images of which shape the sweep would read, and where they come from: the
    source when it is there (an image folder or a TFDS dataset is counted, not decoded), else
    the lesson's data (the default folder before its download)."""
    is_default = data_dir.resolve() == dollarstreet.DEFAULT_DIR.resolve()
    absent = not data_dir.exists() and not str(data_dir).startswith("tfds:")
    if absent or (is_default and not all((data_dir / name).is_file() for name in FILES)):
        return (dollarstreet.N_IMAGES, dollarstreet.IMAGE_SHAPE,
                f"the lesson's Dollar Street 10 (not in {data_dir}): {dollarstreet.N_IMAGES} "
                "images")
    # a DataError says what is wrong with the source
    data = load_dataset(str(data_dir), download=False)
    return (data.n_train + data.n_test, data.image_shape,
            f"{data.source}: {data.n_train} + {data.n_test} images")


def _print_table(rows: list[dict]) -> None:
    from tabulate import tabulate

    def seconds(value):
        return None if value is None else round(value, 1)

    table = [{"backbone": r["backbone"], "size": r["image_size"],
              "GFLOPs/image": None if r["gflops"] is None else round(r["gflops"], 3),
              "runtime": r.get("runtime"),
              "predicted extraction s": seconds(r["predicted_extract_s"]),
              "conversions cached": seconds(r.get("predicted_warm_s")),
              "note": r["note"]} for r in rows]
    print(tabulate(table, headers="keys", tablefmt="github", missingval="-"))
    cold = sum(r["predicted_extract_s"] or 0.0 for r in rows)
    warm = sum(r.get("predicted_warm_s") or 0.0 for r in rows)
    print(f"Predicted extraction for the sweep: {_minutes(cold)} with nothing cached "
          f"(tracing and OpenVINO's conversions included), {_minutes(warm)} with the "
          "conversions cached from an earlier run on this machine.")
    if all(r.get("predicted_tensorflow_s") is not None for r in rows if r["gflops"]):
        alone = sum(r.get("predicted_tensorflow_s") or 0.0 for r in rows)
        if alone and cold and warm:
            print(f"TensorFlow alone: {_minutes(alone)} ({alone / cold:.2f}x the time with "
                  f"nothing cached, {alone / warm:.2f}x with conversions cached).")
    print("The head's epochs and from-scratch baselines come on top. Features already in the "
          "cache cost nothing.")


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s ({seconds / 60:.1f} min)"


def _print(line: str) -> None:
    print(line, flush=True)
