"""The dry run: how fast it answers (`--all`, a fresh cache folder, then a second time), and
how close its prediction comes to a measured 6-backbone sweep, entry by entry and in total.

Both run the CLI as a user would, in child processes, with a fresh cache folder each: the
sweep is cold (nothing extracted, converted or calibrated before). Targets (results/PERF.md):
the first dry run of --all within 30 s on an idle machine, the sweep's total and each
backbone's extraction within 25 %, here and on a machine 1.5x slower:

    python benchmarks/slower.py 1.5 -- python -m pytest benchmarks/test_dry_run.py -k sweep

BENCH_DRY_RUN_STORE names a cache folder for the sweep's dry run instead of a fresh one: one
whose calibrations were remembered at another speed (the same run without slower.py, with
that variable set, fills it), which the dry run must notice and measure again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from os import getloadavg
from pathlib import Path

SWEEP = ("MobileNet_0.25", "MobileNetV3Small", "EfficientNetB0", "ResNet50", "DenseNet121",
         "InceptionV3")


def _bench(*args: str) -> tuple[float, str]:
    """(wall seconds, stdout) of python -m bench ARGS."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True,
                          text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return time.perf_counter() - start, proc.stdout


def _reference_ms() -> float:
    """This machine's speed now: bench's reference convolution, ms a call, in a fresh child."""
    code = "from bench.engine import calibration; print(calibration.reference_seconds() * 1e3)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, check=True)
    return float(proc.stdout.split()[-1])


def _table(stdout: str) -> dict[str, dict[str, str]]:
    """backbone -> {column: cell} from the dry run's markdown table."""
    lines = [[c.strip() for c in line.strip().strip("|").split("|")]
             for line in stdout.splitlines() if line.startswith("| ")]
    header, *rows = lines
    return {row[0]: dict(zip(header, row, strict=True)) for row in rows}


def test_dry_run_of_all_answers_in_seconds(ds10, report, benchmark, tmp_path):
    args = ("--all", "--dry-run", "--data", str(ds10.source), "--cache-dir", str(tmp_path))
    before = getloadavg()[0]
    cold, stdout = benchmark.pedantic(_bench, args=args, rounds=1, iterations=1)
    warm, _ = _bench(*args)
    total = next(line for line in stdout.splitlines() if line.startswith("Predicted sweep"))
    report(f"dry run --all: {cold:.1f} s with a fresh cache folder (target 30 s), {warm:.1f} s "
           f"the second time; load {before:.2f}. {total}")


def test_dry_run_predicts_a_6_backbone_sweep(ds10, report, tmp_path):
    common = ("--data", str(ds10.source), "--weights", "random", "--quiet")
    before = getloadavg()[0]
    store = os.environ.get("BENCH_DRY_RUN_STORE") or str(tmp_path / "dry")
    _, stdout = _bench(*SWEEP, *common, "--dry-run", "--cache-dir", store)
    for line in stdout.splitlines():
        if line.startswith(("Speed reference", "Calibration")):
            report(f"dry run: {line}")
    predicted = _table(stdout)
    # a shared VM's speed moves between minutes: the reference is timed around the sweep, so
    # that a miss can be told apart from the machine changing under the prediction
    before_ms = _reference_ms()
    wall, _ = _bench(*SWEEP, *common, "--cache-dir", str(tmp_path / "cache"), "--out",
                     str(tmp_path / "out"))
    after_ms = _reference_ms()
    rows = [json.loads(line) for line in (Path(tmp_path) / "out" / "runs.jsonl").open()]
    ratios = []
    for row in rows:
        guess = predicted[row["backbone"]]
        ratio = float(guess["extraction s"]) / row["extract_s"]
        ratios.append(ratio)
        report(f"dry run {row['backbone']}: extraction predicted {guess['extraction s']} s "
               f"({guess['runtime']}), measured {row['extract_s']:.1f} s "
               f"({row['runtime']}): {ratio:.2f}; whole run predicted {guess['whole run s']} s, "
               f"head {sum(row['epoch_times']):.1f} s in {row['epochs_run']} epochs")
    total = sum(float(p["whole run s"]) for p in predicted.values())
    report(f"dry run against the 6-backbone sweep: predicted {total:.0f} s, measured {wall:.0f} s"
           f" wall ({total / wall:.2f}; target within 25 %), extraction ratios "
           f"{min(ratios):.2f}..{max(ratios):.2f}; load {before:.2f} -> {getloadavg()[0]:.2f}; "
           f"reference convolution {before_ms:.1f} ms before the sweep, {after_ms:.1f} ms after")
    assert all(0.75 <= r <= 1.25 for r in (total / wall, *ratios)), "outside 25 %"
