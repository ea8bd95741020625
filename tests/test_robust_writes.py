"""Nothing lost: one writer per results folder, report files replaced whole, runs.jsonl read
tolerantly, and environment failures (disk full, read-only) as one line with their own code."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import read_rows

from bench import cache
from bench.__main__ import main
from bench.cache import CachedFeatures, FeatureCache, feature_key
from bench.fsio import writer_lock
from bench.report import write_report
from bench.result import RunResult
from bench.resultsdir import CSV_FILE, LOCK_FILE, MARKDOWN_FILE
from bench.runlog import RUNS_FILE, append_record, read_records
from bench.sweep import _report_is_current

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--weights", "random", "--image-size", "32", "--epochs", "1", "--patience", "0",
        "--quiet"]


def _row(backbone: str, val: float, seed: int = 2) -> dict:
    return RunResult(
        backbone=backbone, status="ok", test_accuracy=val, epochs_run=2, seed=seed,
        history={"accuracy": [0.3, 0.5], "test_accuracy": [0.2, val], "loss": [1.0, 0.8],
                 "test_loss": [1.1, 0.9]},
        image_size=32, weights="random", epochs=2, patience=0, batch_size=32, data="d",
    ).to_dict()


def _results(tmp_path: Path, *backbones: str) -> Path:
    out = tmp_path / "out"
    for i, name in enumerate(backbones):
        append_record(out, _row(name, 0.5 + i / 10))
    return out


def _stderr_lines(capsys: pytest.CaptureFixture) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def _env(cache_dir: Path) -> dict:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT),
            "BENCH_CACHE_DIR": str(cache_dir)}


def _try_lock(folder: Path) -> subprocess.CompletedProcess:
    """Another process trying the folder's lock: prints 'locked' or the FolderBusy message."""
    code = ("import sys; from bench.fsio import writer_lock, FolderBusy\n"
            "try:\n    with writer_lock(sys.argv[1]): print('locked')\n"
            "except FolderBusy as err: print(err)")
    return subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, env={**os.environ,
                                                                "PYTHONPATH": str(ROOT)})


# ---------------------------------------------------------------------------------------------
# one writer per results folder


def test_two_sweeps_on_one_out_the_second_exits_2_at_once(tiny_data_dir, tmp_path):
    out = tmp_path / "out"
    args = [sys.executable, "-m", "bench", "dense", "MobileNet_0.25", "--data",
            str(tiny_data_dir), "--out", str(out), *FAST]
    first = subprocess.Popen(args, cwd=ROOT, env=_env(tmp_path / "c1"), text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(1)
        lock = out / LOCK_FILE
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and first.poll() is None and not (
                lock.is_file() and lock.read_text().strip()):
            time.sleep(0.1)
        assert lock.is_file() and lock.read_text().strip() == str(first.pid)
        start = time.monotonic()
        second = subprocess.run(args, cwd=ROOT, env=_env(tmp_path / "c2"), text=True,
                                capture_output=True, timeout=60)
        took = time.monotonic() - start
        stdout, stderr = first.communicate(timeout=900)
    finally:
        if first.poll() is None:
            first.kill()
    assert second.returncode == 2 and took < 5, (second.returncode, took, second.stderr)
    assert second.stderr.strip().splitlines() == [
        f"bench: error: another bench process (pid {first.pid}) is writing {out}"]
    assert first.returncode == 0, stderr
    rows = read_rows(out)
    assert sorted((r["backbone"], r["status"]) for r in rows) == [
        ("MobileNet_0.25", "ok"), ("dense", "ok")]


def test_the_lock_is_released_and_never_held_by_children(tmp_path):
    out = tmp_path / "out"
    with writer_lock(out):
        with writer_lock(out):  # re-entrant: the sweep inside the command takes it again
            assert _try_lock(out).stdout.strip() == (
                f"another bench process (pid {os.getpid()}) is writing {out}")
        # a child started with every descriptor it may inherit, one forked by Python, and one
        # forked from C as a library starting a helper program does (no at-fork handler runs;
        # with flock it kept the lock): none may keep the lock once this process lets it go
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                                 close_fds=False)
        forked = []
        for fork in (os.fork, ctypes.CDLL(None).fork):
            forked.append(fork())
            if forked[-1] == 0:  # the child: hold every descriptor a while
                time.sleep(30)
                os._exit(0)
    try:
        assert _try_lock(out).stdout.strip() == "locked"
    finally:
        child.kill()
        child.wait()
        for pid in forked:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
    with writer_lock(out):  # and this process can take it again
        assert _try_lock(out).stdout.strip() == (
            f"another bench process (pid {os.getpid()}) is writing {out}")


def test_report_on_a_folder_being_written_exits_2(capsys, tmp_path):
    out = _results(tmp_path, "A")
    code = ("import sys, time; from bench.fsio import writer_lock\n"
            "with writer_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(30)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["report", "--out", str(out)]) == 2
    finally:
        holder.kill()
        holder.wait()
    assert _stderr_lines(capsys) == [
        f"bench: error: another bench process (pid {holder.pid}) is writing {out}"]
    assert not (out / MARKDOWN_FILE).exists()


# ---------------------------------------------------------------------------------------------
# atomic, current reports


def test_a_report_cut_short_leaves_the_old_board_whole_and_is_rebuilt(tmp_path, monkeypatch):
    out = _results(tmp_path, "A", "B")
    write_report(out)
    old = (out / MARKDOWN_FILE).read_text()
    assert _report_is_current(out)
    append_record(out, _row("C", 0.9))
    real_write_text = Path.write_text

    def killed_midway(self, data, *args, **kwargs):
        with open(self, "w") as f:
            f.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", killed_midway)
    with pytest.raises(OSError):
        write_report(out)
    monkeypatch.setattr(Path, "write_text", real_write_text)
    assert (out / MARKDOWN_FILE).read_text() == old
    assert not [p.name for p in out.iterdir() if ".bench-tmp" in p.name]
    assert not _report_is_current(out)  # so the next run rebuilds it
    write_report(out)
    assert "C" in (out / MARKDOWN_FILE).read_text() and _report_is_current(out)


def test_a_truncated_board_with_newer_times_is_not_current(tmp_path):
    out = _results(tmp_path, "A")
    write_report(out)
    append_record(out, _row("B", 0.7))
    board = out / MARKDOWN_FILE
    board.write_text(board.read_text()[:50])  # written after the last row, but not from it
    assert not _report_is_current(out)


def test_a_symlinked_leaderboard_csv_is_replaced_not_followed(capsys, tmp_path):
    out = _results(tmp_path, "A", "B")
    precious = tmp_path / "precious.csv"
    precious.write_text("keep me\n")
    (out / CSV_FILE).symlink_to(precious)
    assert main(["report", "--out", str(out)]) == 0
    assert precious.read_text() == "keep me\n"
    assert not (out / CSV_FILE).is_symlink()
    assert "backbone" in (out / CSV_FILE).read_text().splitlines()[0]


# ---------------------------------------------------------------------------------------------
# environment failures


def test_disk_full_at_append_prints_the_row_and_exits_3(capsys, tiny_data_dir, tmp_path,
                                                         monkeypatch):
    out = tmp_path / "out"
    real_write = os.write
    appends = []

    def write(fd: int, data: bytes) -> int:
        if os.readlink(f"/proc/self/fd/{fd}") == str(out / RUNS_FILE):
            appends.append(data)
            if len(appends) == 2:  # the second seed's row: the disk is full now
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    code = main(["dense", "--seeds", "2", "--data", str(tiny_data_dir), "--out", str(out),
                 *FAST])
    lines = [line for line in _stderr_lines(capsys) if "Warning" not in line]
    assert code == 3, lines
    assert len(lines) == 2, lines
    row = json.loads(lines[0])
    assert (row["backbone"], row["seed"], row["status"]) == ("dense", 3, "ok")
    assert lines[1].startswith(f"bench: error: cannot save a row in {out} ")
    assert "No space left on device" in lines[1]
    assert (out / RUNS_FILE).read_bytes() == appends[0]  # the earlier row, whole, alone
    assert [r["seed"] for r in read_records(out)] == [2]


def test_an_append_after_a_torn_line_never_cuts_the_file(tmp_path):
    append_record(tmp_path, _row("A", 0.5))
    with (tmp_path / RUNS_FILE).open("ab") as f:
        f.write(b'{"backbone": "B", "sta')  # a writer killed mid-line
    before = (tmp_path / RUNS_FILE).read_bytes()
    with pytest.warns(UserWarning, match="torn"):
        append_record(tmp_path, _row("C", 0.7))
    assert (tmp_path / RUNS_FILE).read_bytes().startswith(before)
    with pytest.warns(UserWarning, match=r"runs\.jsonl:2"):
        assert [r["backbone"] for r in read_records(tmp_path)] == ["A", "C"]


def _features() -> CachedFeatures:
    rng = np.random.default_rng(0)
    return CachedFeatures(rng.normal(size=(6, 4)).astype(np.float32),
                          rng.normal(size=(3, 4)).astype(np.float32), 1.5, 1234)


def test_a_cache_that_cannot_save_or_delete_warns(tmp_path, monkeypatch):
    said = []
    store = FeatureCache(tmp_path, warn=said.append)
    key = feature_key(backbone="A")
    path = store.save(key, "A", _features())
    path.write_bytes(b"x" * 100)

    def refuse(self, missing_ok=False):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "unlink", refuse)
    assert store.load(key, "A", 6, 3) is None
    assert len(said) == 1 and "corrupt" in said[0] and "cannot remove it" in said[0]

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache.np, "savez", full)
    assert store.save(feature_key(backbone="B"), "B", _features()) is None
    assert "cannot save" in said[1] and "No space left on device" in said[1]


def test_a_read_only_cache_folder_keeps_the_row_ok(capsys, tiny_data_dir, tmp_path,
                                                   monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(cache, "atomic_path", read_only)  # every cache file is written there
    out = tmp_path / "out"
    code = main(["MobileNet_0.25", "--data", str(tiny_data_dir), "--out", str(out), *FAST])
    lines = _stderr_lines(capsys)
    assert code == 0, lines
    assert [r["status"] for r in read_rows(out)] == ["ok"]
    assert any(line.startswith("bench: warning: Feature cache: cannot save")
               and "Read-only file system" in line for line in lines), lines


# ---------------------------------------------------------------------------------------------
# a damaged runs.jsonl


def _damage(out: Path) -> None:
    """A bad json line and a line that is not UTF-8, in the middle of runs.jsonl."""
    good = (out / RUNS_FILE).read_bytes()
    (out / RUNS_FILE).write_bytes(b'{"backbone": "X", "sta\n' + b'{"a": "\xff\xfe"}\n' + good)


def test_a_damaged_runs_jsonl_is_read_with_warnings_by_report_and_resume(capsys, tiny_data_dir,
                                                                         tmp_path):
    out = tmp_path / "out"
    args = ["dense", "--data", str(tiny_data_dir), "--out", str(out), *FAST]
    assert main(args) == 0
    capsys.readouterr()
    _damage(out)
    assert main(["report", "--out", str(out)]) == 0
    report_err = capsys.readouterr().err
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "skipped, runs.jsonl already has an ok row" in captured.out
    for err in (report_err, captured.err):
        lines = err.strip().splitlines()
        assert any(f"{out / RUNS_FILE}:1: skipping a damaged line" in line for line in lines)
        assert any(f"{out / RUNS_FILE}:2: skipping a damaged line" in line for line in lines)
        assert all(line.startswith("bench: warning: ") for line in lines), lines
    assert "dense" in (out / MARKDOWN_FILE).read_text()


def test_a_json_store_keeps_entries_and_refuses_a_changed_one(tmp_path):
    from bench.fsio import read_json_store, remember_json

    path = tmp_path / "store.json"
    assert read_json_store(path) == {}  # absent: nothing remembered, no warning
    remember_json(path, "a", {"rate": 45.25})
    remember_json(path, "b", [1, 2])
    assert read_json_store(path) == {"a": {"rate": 45.25}, "b": [1, 2]}
    path.write_text(path.read_text().replace("45.25", "95.25"))  # one digit changed on disk
    with pytest.warns(UserWarning, match=r"store\.json is damaged .* removed"):
        assert read_json_store(path) == {}
    assert not path.exists()
    # a file of an older bench, without its checksum, is measured again too
    path.write_text('{"a": {"rate": 45.25}}')
    with pytest.warns(UserWarning, match="is damaged"):
        assert read_json_store(path) == {}
