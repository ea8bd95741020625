"""An isolated child takes everything it started with it: its process group ends on a timeout,
a crash, Ctrl-C or the driver's death, and a killed driver's temporary folder is removed by the
next sweep."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import read_rows

from bench.config import RunConfig
from bench.executors import isolated
from bench.executors.isolated import TMP_PREFIX, IsolatedExecutor, remove_stale_folders

ROOT = Path(__file__).resolve().parent.parent


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's zombie waits for a reaper that a
    container may not have)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _gone_soon(pid: int, within_s: float = 10) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not _running(pid):
            return True
        time.sleep(0.1)
    return False


def _pid_in(path: Path, within_s: float = 10) -> int:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text().strip():
            return int(path.read_text())
        time.sleep(0.05)
    raise AssertionError(f"{path} never got a pid")


def _spawner(pid_file: Path) -> str:
    """Python code that starts a grandchild (sleep 300), records its pid, then hangs."""
    return textwrap.dedent(f"""
        import subprocess, time
        grandchild = subprocess.Popen(["sleep", "300"])
        open({str(pid_file)!r}, "w").write(str(grandchild.pid))
        time.sleep(300)
    """)


@pytest.fixture
def spec():
    from backbones import get

    return get("MobileNet_0.25")


def test_a_timeout_ends_the_childs_whole_process_group(monkeypatch, tmp_path, tiny_data, spec):
    pid_file, folders = tmp_path / "grandchild.pid", []

    def command(folder):
        folders.append(folder)
        return [sys.executable, "-c", _spawner(pid_file)]

    monkeypatch.setattr(isolated, "_child_command", command)
    config = RunConfig(weights="random", image_size=32, verbose=0)
    executor = IsolatedExecutor(timeout_min=3 / 60)
    (rows,) = executor.map([(spec, [config])], tiny_data, tiny_data.checksum())
    assert rows[0].status == "error" and "timed out" in rows[0].error
    grandchild = _pid_in(pid_file)
    try:
        assert _gone_soon(grandchild), "the grandchild outlived the child's timeout"
    finally:
        if _running(grandchild):
            os.kill(grandchild, 9)
    # the temporary folder carries this driver's pid, and is gone with the sweep
    assert folders[0].parent.name.startswith(f"{TMP_PREFIX}{os.getpid()}-")
    assert not folders[0].parent.exists()


def test_a_child_whose_driver_dies_ends_its_group(tmp_path):
    """The worker's watch on its parent, in a child that leads its own group."""
    pid_file = tmp_path / "grandchild.pid"
    code = _spawner(pid_file).replace(
        "time.sleep(300)",
        "from bench.executors.worker import _exit_with_parent\n"
        "_exit_with_parent(0)  # never the real parent: as if the driver had died\n"
        "time.sleep(300)")
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        proc.wait(timeout=60)
        grandchild = _pid_in(pid_file)
        assert _gone_soon(grandchild), "the grandchild outlived its parent's exit"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)


def test_stale_temporary_folders_of_dead_drivers_are_removed(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f"{TMP_PREFIX}{dead.pid}-x1"
    live = tmp_path / f"{TMP_PREFIX}{os.getpid()}-x2"
    other = tmp_path / "bench-something-else"
    for folder in (stale, live, other):
        (folder / "child-0").mkdir(parents=True)
        (folder / "child-0" / "request.json").write_text("{}")
    remove_stale_folders(tmp_path)
    assert not stale.exists() and live.exists() and other.exists()


GRANDCHILD_BACKBONE = '''
import os
import subprocess
import time

from backbones import BackboneSpec


def _spawn_and_hang(**kwargs):
    grandchild = subprocess.Popen(["sleep", "300"])
    with open(os.environ["GRANDCHILD_PID_FILE"], "w") as fh:
        fh.write(str(grandchild.pid))
    time.sleep(3600)


BACKBONES = [BackboneSpec(
    name="Test_grandchild", constructor_name="MobileNet", family="mobilenet", input_size=224,
    min_size=32, preprocess_mode="tf", feature_width=256, params=218_544, top1=None,
    canonical=False, factory=_spawn_and_hang,
)]
'''


@pytest.mark.slow  # a child that imports TensorFlow, then a 45 s timeout
def test_a_backbone_that_starts_a_process_leaves_none_after_its_timeout(tiny_data_dir,
                                                                         tmp_path):
    """The whole path: python -m bench with a registry row whose model build starts a
    grandchild and hangs; --timeout-min ends both."""
    (tmp_path / "grandchild_rows.py").write_text(GRANDCHILD_BACKBONE)
    pid_file, out = tmp_path / "grandchild.pid", tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}",
           "BENCH_EXTRA_BACKBONES": "grandchild_rows", "GRANDCHILD_PID_FILE": str(pid_file),
           "TF_CPP_MIN_LOG_LEVEL": "3", "BENCH_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "Test_grandchild", "--timeout-min", "0.75", "--data",
         str(tiny_data_dir), "--out", str(out), "--weights", "random", "--image-size", "32",
         "--epochs", "1", "--quiet"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    (row,) = read_rows(out)
    assert "timed out" in row["error"]
    grandchild = _pid_in(pid_file, within_s=1)
    try:
        assert _gone_soon(grandchild), "the backbone's grandchild outlived the timeout"
    finally:
        if _running(grandchild):
            os.kill(grandchild, 9)
