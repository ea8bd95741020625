"""A fixed small sweep whose rows and leaderboard must not change while the code moves around.

MobileNet_0.25 (random weights), scratch-cnn and dense, 3 epochs, 2 seeds, on the tiny
synthetic set: `runs.jsonl` (every field but times, dates, versions and where the data lay) and
`leaderboard.md` (but its time columns and the provenance line) are compared with the files in
tests/golden/. A change that means to alter the results rewrites them on purpose:

    BENCH_UPDATE_GOLDEN=1 pytest tests/test_golden.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# one xdist worker runs this file: its module-scoped fixture is set up once
pytestmark = pytest.mark.xdist_group("golden")

GOLDEN = Path(__file__).parent / "golden"
FILES = ("train_images.npy", "train_labels.npy", "test_images.npy", "test_labels.npy")
# What differs from one run, machine or checkout to the next without the results changing.
VOLATILE_FIELDS = frozenset({
    "extract_s", "epoch_s", "epoch_times", "total_s", "infer_ms", "probe_linear_s",
    "probe_knn_s", "started_at", "keras_version",
    "tf_version", "python_version", "numpy_version", "device", "git_commit",
    # which engine --engine auto measures fastest, and how fast, is the machine's, not the
    # result's: the engines' features agree within 1e-5 (tests/test_engines.py)
    "engine", "engine_version", "engine_batch", "engine_images_per_s", "engine_setup_s",
    "engine_probe_s", "engine_note",
})
TIME_COLUMNS = frozenset({"extract_s", "s_per_epoch", "infer_ms"})
DATA = "<data>"


ROOT = Path(__file__).resolve().parent.parent


def _noisy_arrays(n_train: int = 60, n_val: int = 30, side: int = 32, seed: int = 0):
    """Three classes told apart by a faint colour cast under heavy noise: no model is perfect,
    so ranks, intervals and tests all have something to say."""
    rng = np.random.default_rng(seed)

    def split(n):
        labels = rng.permutation(np.arange(n) % 3)
        images = rng.integers(0, 200, size=(n, side, side, 3))
        images[np.arange(n), :, :, labels] += 30
        return images.astype(np.uint8), labels.astype(np.int64)

    return (*split(n_train), *split(n_val))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[Path, Path]:
    """(data folder, results folder) of the sweep, run once as a user would, in a fresh
    process with a feature cache of its own."""
    tmp = tmp_path_factory.mktemp("golden")
    data = tmp / "data"
    data.mkdir()
    for name, array in zip(FILES, _noisy_arrays(), strict=True):
        np.save(data / name, array)
    out = tmp / "out"
    args = ["MobileNet_0.25", "scratch-cnn", "dense", "--weights", "random", "--image-size",
            "32", "--epochs", "3", "--seeds", "2", "--no-isolate", "--quiet",
            "--data", str(data), "--out", str(out), "--cache-dir", str(tmp / "cache")]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return data, out


def _rows(out: Path, data: Path) -> list[dict]:
    rows = []
    for line in (out / "runs.jsonl").read_text().splitlines():
        row = {k: v for k, v in json.loads(line).items() if k not in VOLATILE_FIELDS}
        rows.append(json.loads(json.dumps(row).replace(str(data), DATA)))
    return rows


def _board(out: Path, data: Path) -> str:
    """leaderboard.md with the data folder, provenance and time cells masked; table cells
    stripped (tabulate pads each column to its widest cell, a time among them)."""
    lines, time_cells = [], set()
    for line in (out / "leaderboard.md").read_text().replace(str(data), DATA).splitlines():
        if line.startswith("Provenance:"):
            continue
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if TIME_COLUMNS & set(cells):  # a header row: remember where the times are
                time_cells = {i for i, c in enumerate(cells) if c in TIME_COLUMNS}
            elif not set("".join(cells)) <= set(":-"):
                cells = ["<time>" if i in time_cells else c for i, c in enumerate(cells)]
            else:
                cells = ["---"] * len(cells)
            line = "| " + " | ".join(cells) + " |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def test_the_golden_sweep_is_unchanged(sweep):
    data, out = sweep
    rows, board = _rows(out, data), _board(out, data)
    rows_file, board_file = GOLDEN / "sweep_runs.jsonl", GOLDEN / "sweep_leaderboard.md"
    if os.environ.get("BENCH_UPDATE_GOLDEN"):
        GOLDEN.mkdir(exist_ok=True)
        rows_file.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        board_file.write_text(board)
    expected = [json.loads(line) for line in rows_file.read_text().splitlines()]
    assert len(rows) == len(expected) == 6  # 3 models x 2 seeds
    for got, want in zip(rows, expected, strict=True):
        assert got == want, (got["backbone"], got["seed"],
                             {k for k in got.keys() | want.keys() if got.get(k) != want.get(k)})
    assert board == board_file.read_text()


def test_the_golden_comparison_can_fail(sweep, tmp_path):
    """The masks hide only what they should: a changed accuracy shows in both files."""
    data, out = sweep
    rows = _rows(out, data)
    expected = [json.loads(line) for line in (GOLDEN / "sweep_runs.jsonl").read_text().splitlines()]
    assert rows == expected
    rows[0]["val_accuracy"] += 0.01
    assert rows != expected
    lines = (out / "leaderboard.md").read_text().splitlines()
    header = next(i for i, line in enumerate(lines)
                  if {"rank", "accuracy"} <= {c.strip() for c in line.split("|")})
    names = [c.strip() for c in lines[header].split("|")]
    cells = lines[header + 2].split("|")
    cells[names.index("accuracy")] = " 0.999 "
    lines[header + 2] = "|".join(cells)
    (tmp_path / "leaderboard.md").write_text("\n".join(lines) + "\n")
    assert _board(tmp_path, data) != (GOLDEN / "sweep_leaderboard.md").read_text()
