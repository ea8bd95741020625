"""Sweeps that never lose work: isolation, resume, kills, Ctrl-C, and bad input at the door."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bench.__main__ import main

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--weights", "random", "--image-size", "32", "--epochs", "3", "--patience", "0",
        "--quiet"]


def _env(cache: Path) -> dict:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT),
            "BENCH_EXTRA_BACKBONES": "tests.crashers", "BENCH_CACHE_DIR": str(cache)}


def _start(args, cache: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=ROOT, env=_env(cache),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group, as a terminal job


def _bench(args, cache: Path, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, env=_env(cache),
                          capture_output=True, text=True, timeout=timeout)


def _rows(out: Path) -> list[dict]:
    path = out / "runs.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a torn last line; the reader skips it too
            pass
    return rows


def test_a_crashing_backbone_is_one_error_row_and_the_sweep_goes_on(tiny_data_dir, tmp_path):
    out = tmp_path / "out"
    proc = _bench(["Test_tiny", "Test_segfault", "Test_oom", "MobileNet_0.25",
                   "--data", str(tiny_data_dir), "--out", str(out), *FAST], tmp_path / "c")
    assert proc.returncode == 1, proc.stderr
    rows = {r["backbone"]: r for r in _rows(out)}
    assert [rows[n]["status"] for n in ("Test_tiny", "Test_segfault", "Test_oom",
                                        "MobileNet_0.25")] == ["ok", "error", "error", "ok"]
    assert "SIGSEGV" in rows["Test_segfault"]["error"]
    assert "SIGKILL" in rows["Test_oom"]["error"] and "out-of-memory" in rows["Test_oom"]["error"]
    board = (out / "leaderboard.md").read_text()
    assert "Test_segfault" in board and "SIGSEGV" in board


def test_a_hanging_backbone_times_out_into_an_error_row(tiny_data_dir, tmp_path):
    out = tmp_path / "out"
    start = time.monotonic()
    proc = _bench(["Test_hang", "--timeout-min", "0.25", "--data", str(tiny_data_dir),
                   "--out", str(out), *FAST], tmp_path / "c")
    assert proc.returncode == 1, proc.stderr
    assert time.monotonic() - start < 120
    (row,) = _rows(out)
    assert row["status"] == "error" and "timed out after 0.25 min" in row["error"]


def test_a_second_run_skips_finished_backbones_and_rerun_forces_them(tiny_data_dir, tmp_path):
    out, cache = tmp_path / "out", tmp_path / "c"
    args = ["MobileNet_0.25", "Test_tiny", "--data", str(tiny_data_dir), "--out", str(out),
            "--no-isolate", *FAST]
    first = _bench(args, cache)
    assert first.returncode == 0, first.stderr
    second = _bench(args, cache)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count(": skipped, runs.jsonl already has an ok row") == 2
    assert len(_rows(out)) == 2
    # another seed is another run
    third = _bench([*args, "--seed", "3"], cache)
    assert "skipped" not in third.stdout and len(_rows(out)) == 4
    forced = _bench([*args, "--rerun"], cache)
    assert "skipped" not in forced.stdout and len(_rows(out)) == 6
    assert "Test_tiny" in (out / "leaderboard.md").read_text()


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_loses_and_duplicates_nothing(tiny_data_dir,
                                                                          tmp_path):
    """Fault injection: 5 kills at random moments of an isolated 4-backbone sweep."""
    names = ["MobileNet_0.25", "MobileNetV3Small", "Test_tiny", "MobileNetV2_0.35"]
    common = [*names, "--data", str(tiny_data_dir), *FAST]
    reference = _bench([*common, "--out", str(tmp_path / "ref")], tmp_path / "ref-cache")
    assert reference.returncode == 0, reference.stderr
    expected = {r["backbone"]: r["history"]["val_accuracy"] for r in _rows(tmp_path / "ref")}

    out, cache = tmp_path / "out", tmp_path / "cache"
    rng = random.Random(20261129)
    for _ in range(5):
        proc = _start([*common, "--out", str(out)], cache)
        time.sleep(rng.uniform(2.0, 30.0))
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its child, like a pre-emption
        proc.communicate()
    final = _bench([*common, "--out", str(out)], cache)
    assert final.returncode == 0, final.stderr

    rows = _rows(out)
    ok = [r for r in rows if r["status"] == "ok"]
    assert sorted(r["backbone"] for r in ok) == sorted(names)  # exactly one each
    for r in ok:
        np.testing.assert_allclose(r["history"]["val_accuracy"], expected[r["backbone"]],
                                   atol=1e-6)


def test_ctrl_c_keeps_finished_rows_and_says_how_to_resume(tiny_data_dir, tmp_path):
    out = tmp_path / "out"
    proc = _start(["MobileNet_0.25", "Test_hang", "--data", str(tiny_data_dir), "--out",
                   str(out), *FAST], tmp_path / "c")
    deadline = time.monotonic() + 300
    while not _rows(out) and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2)  # Test_hang's child is now running
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends on Ctrl-C
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Run the same command again to resume" in stderr
    assert [r["backbone"] for r in _rows(out)] == ["MobileNet_0.25"]
    assert "MobileNet_0.25" in (out / "leaderboard.md").read_text()


# --- bad input: exit 2, one line naming what was expected and what was received -------------

FILES = ("train_images.npy", "train_labels.npy", "test_images.npy", "test_labels.npy")


def _folder(tmp_path: Path, **override) -> Path:
    rng = np.random.default_rng(0)
    arrays = {
        "train_images.npy": rng.integers(0, 255, (12, 8, 8, 3), dtype=np.uint8),
        "train_labels.npy": np.arange(12) % 3,
        "test_images.npy": rng.integers(0, 255, (6, 8, 8, 3), dtype=np.uint8),
        "test_labels.npy": np.arange(6) % 3,
    }
    arrays.update(override)
    folder = tmp_path / "d"
    folder.mkdir()
    for name, value in arrays.items():
        if value is None:
            continue
        if isinstance(value, bytes):
            (folder / name).write_bytes(value)
        else:
            np.save(folder / name, value, allow_pickle=True)
    return folder


NAN = np.full((12, 8, 8, 3), 0.5, dtype=np.float32)
NAN[0, 0, 0, 0] = np.nan
CATALOGUE = {
    "one file missing": (dict(test_labels=None), "test_labels.npy"),
    "corrupt npy": (dict(train_images=b"\x93NUMPY garbage"), "train_images.npy"),
    "pickled object array": (dict(train_labels=np.array([{"a": 1}] * 12, dtype=object)),
                             "object"),
    "images not NxHxW(xC)": (dict(train_images=np.zeros((12, 64), np.uint8)), "(12, 64)"),
    "four channels": (dict(train_images=np.zeros((12, 8, 8, 4), np.uint8)), "channels"),
    "lengths differ": (dict(train_labels=np.arange(10) % 3), "one label per image"),
    "labels not integers": (dict(train_labels=np.linspace(0, 2, 12)), "integer class labels"),
    "negative labels": (dict(train_labels=np.arange(12) % 3 - 1), "negative"),
    "gap leaves a class empty": (dict(train_labels=np.array([0, 1, 3] * 4)),
                                 "to have training"),
    "one class": (dict(train_labels=np.zeros(12, int), test_labels=np.zeros(6, int)),
                  "at least 2 classes"),
    "empty split": (dict(test_images=np.zeros((0, 8, 8, 3), np.uint8),
                         test_labels=np.zeros(0, int)), "empty"),
    "nan pixels": (dict(train_images=NAN), "NaN"),
    "val labels outside train": (dict(test_labels=np.array([0, 1, 2, 3, 0, 1])),
                                 "within the training classes"),
}


@pytest.mark.parametrize("defect", list(CATALOGUE))
def test_bad_data_exits_2_with_one_line(capsys, tmp_path, defect):
    override, fragment = CATALOGUE[defect]
    folder = _folder(tmp_path, **{f"{k}.npy": v for k, v in override.items()})
    code = main(["MobileNet_0.25", "--data", str(folder), "--out", str(tmp_path / "o"), *FAST])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert fragment in lines[0] and "Traceback" not in err
    assert not (tmp_path / "o" / "runs.jsonl").exists()  # nothing half-written


def test_image_size_below_a_backbones_minimum_names_it(capsys, tiny_data_dir, tmp_path):
    code = main(["Xception", "--data", str(tiny_data_dir), "--out", str(tmp_path / "o"),
                 *FAST])
    assert code == 1
    (row,) = _rows(tmp_path / "o")
    assert row["status"] == "error" and "at least 71x71" in row["error"]


def test_no_pickle_anywhere_in_the_package():
    sources = [p for d in ("bench", "backbones") for p in (ROOT / d).rglob("*.py")]
    offenders = [str(p) for p in sources
                 if "import pickle" in p.read_text() or "allow_pickle=True" in p.read_text()]
    assert offenders == []
