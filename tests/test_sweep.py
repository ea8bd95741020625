"""Sweeps that never lose work: isolation, resume, kills, Ctrl-C, and bad input at the door."""

from __future__ import annotations

import ast
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import assert_histories_close, read_rows

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--weights", "random", "--image-size", "32", "--epochs", "3", "--patience", "0",
        "--quiet"]


def _env(cache: Path) -> dict:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT),
            "BENCH_EXTRA_BACKBONES": "tests.crashers", "BENCH_CACHE_DIR": str(cache)}


def _as_a_terminal_job() -> None:
    """In the child before exec: Ctrl-C's signal delivered and handled as in a terminal's
    foreground job, whatever this test process inherited or a library changed in it (an
    ignored or blocked SIGINT passes on to the child, and Python then keeps it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _start(args, cache: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=ROOT, env=_env(cache),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,  # its own process group, as a terminal job
                            preexec_fn=_as_a_terminal_job)


def _children(pid: int) -> list[int]:
    """The processes `pid` started and that are still running (Linux)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _bench(args, cache: Path, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, env=_env(cache),
                          capture_output=True, text=True, timeout=timeout)


def test_a_crashing_backbone_is_one_error_row_and_the_sweep_goes_on(tiny_data_dir, tmp_path):
    out = tmp_path / "out"
    proc = _bench(["Test_tiny", "Test_segfault", "Test_oom", "MobileNet_0.25",
                   "--data", str(tiny_data_dir), "--out", str(out), *FAST], tmp_path / "c")
    assert proc.returncode == 1, proc.stderr
    rows = {r["backbone"]: r for r in read_rows(out)}
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
    (row,) = read_rows(out)
    assert row["status"] == "error" and "timed out after 0.25 min" in row["error"]


def test_a_failure_is_replaced_by_the_later_success_of_the_same_run(tiny_data_dir, tmp_path):
    """Both time out, then run: the report lists no failure (a failed row has the config hash
    of the ok row it stands for, so the ok row replaces it)."""
    args = ["dense", "scratch-cnn", "--epochs", "2", "--data", str(tiny_data_dir), "--out",
            str(tmp_path / "out"), "--quiet"]
    timed_out = _bench([*args, "--timeout-min", "0.005"], tmp_path / "cache")
    assert timed_out.returncode == 1, timed_out.stderr
    failed = read_rows(tmp_path / "out")
    assert [r["status"] for r in failed] == ["error", "error"]
    assert all(r["config_hash"] for r in failed)
    assert "## Failed" in (tmp_path / "out" / "leaderboard.md").read_text()
    again = _bench(args, tmp_path / "cache")
    assert again.returncode == 0, again.stderr
    ok = read_rows(tmp_path / "out")[2:]
    assert [r["config_hash"] for r in ok] == [r["config_hash"] for r in failed]
    assert "## Failed" not in (tmp_path / "out" / "leaderboard.md").read_text()


def test_a_second_run_skips_finished_backbones_and_rerun_forces_them(tiny_data_dir, tmp_path):
    out, cache = tmp_path / "out", tmp_path / "c"
    args = ["MobileNet_0.25", "Test_tiny", "--data", str(tiny_data_dir), "--out", str(out),
            "--no-isolate", *FAST]
    first = _bench(args, cache)
    assert first.returncode == 0, first.stderr
    second = _bench(args, cache)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count(": skipped, runs.jsonl already has an ok row") == 2
    assert len(read_rows(out)) == 2
    # another seed is another run
    third = _bench([*args, "--seed", "3"], cache)
    assert "skipped" not in third.stdout and len(read_rows(out)) == 4
    forced = _bench([*args, "--rerun"], cache)
    assert "skipped" not in forced.stdout and len(read_rows(out)) == 6
    assert "Test_tiny" in (out / "leaderboard.md").read_text()


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_loses_and_duplicates_nothing(tiny_data_dir,
                                                                          tmp_path):
    """Fault injection: 5 kills at random moments of an isolated 4-backbone sweep."""
    names = ["MobileNet_0.25", "MobileNetV3Small", "Test_tiny", "MobileNetV2_0.35"]
    common = [*names, "--data", str(tiny_data_dir), *FAST]
    reference = _bench([*common, "--out", str(tmp_path / "ref")], tmp_path / "ref-cache")
    assert reference.returncode == 0, reference.stderr
    expected = {r["backbone"]: r["history"] for r in read_rows(tmp_path / "ref")}

    out, cache = tmp_path / "out", tmp_path / "cache"
    rng = random.Random(20261129)
    for _ in range(5):
        proc = _start([*common, "--out", str(out)], cache)
        time.sleep(rng.uniform(2.0, 30.0))
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its child, like a pre-emption
        proc.communicate()
    final = _bench([*common, "--out", str(out)], cache)
    assert final.returncode == 0, final.stderr

    rows = read_rows(out)
    ok = [r for r in rows if r["status"] == "ok"]
    assert sorted(r["backbone"] for r in ok) == sorted(names)  # exactly one each
    for r in ok:
        assert_histories_close(r["history"], expected[r["backbone"]], n=r["n_test"])


def test_ctrl_c_keeps_finished_rows_and_says_how_to_resume(tiny_data_dir, tmp_path):
    out = tmp_path / "out"
    proc = _start(["MobileNet_0.25", "Test_hang", "--data", str(tiny_data_dir), "--out",
                   str(out), *FAST], tmp_path / "c")
    deadline = time.monotonic() + 300
    while not read_rows(out) and time.monotonic() < deadline:
        time.sleep(0.5)
    while not _children(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)  # Test_hang's child process has started
    time.sleep(2)  # and is running the backbone that hangs
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends on Ctrl-C
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Run the same command again to resume" in stderr
    assert [r["backbone"] for r in read_rows(out)] == ["MobileNet_0.25"]
    assert "MobileNet_0.25" in (out / "leaderboard.md").read_text()


PICKLERS = {"pickle", "cloudpickle", "dill", "joblib", "shelve", "marshal"}


def _pickle_uses(source: str) -> list[str]:
    """Where source can unpickle: a pickling module imported, np.load without
    allow_pickle=False, allow_pickle set to anything but False, pandas' read_pickle."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"{node.lineno}: import {a.name}" for a in node.names
                      if a.name.split(".")[0] in PICKLERS]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLERS:
            found.append(f"{node.lineno}: from {node.module} import")
        elif isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            allow = [k.value for k in node.keywords if k.arg == "allow_pickle"]
            refused = [isinstance(v, ast.Constant) and v.value is False for v in allow]
            if name in ("np.load", "numpy.load") and refused != [True]:
                found.append(f"{node.lineno}: {name} without allow_pickle=False")
            elif allow and refused != [True]:
                found.append(f"{node.lineno}: {name}(allow_pickle={ast.unparse(allow[0])})")
            elif name.endswith("read_pickle"):
                found.append(f"{node.lineno}: {name}")
    return found


@pytest.mark.parametrize("source, found", [
    ("import pickle", 1), ("import cloudpickle as cp", 1), ("from dill import loads", 1),
    ("np.load(path)", 1), ("numpy.load(path, allow_pickle=True)", 1),
    ("np.load(path, allow_pickle=flag)", 1), ("np.save(path, array, allow_pickle=True)", 1),
    ("pd.read_pickle(path)", 1), ("np.load(path, allow_pickle=False)", 0),
    ("np.save(path, array, allow_pickle=False)", 0), ("import json; json.loads(text)", 0),
])
def test_the_pickle_check_sees_each_way_to_unpickle(source, found):
    assert len(_pickle_uses(source)) == found


def test_no_pickle_anywhere_in_the_package():
    sources = {p: p.read_text() for d in ("bench", "backbones") for p in (ROOT / d).rglob("*.py")}
    offenders = {str(p.relative_to(ROOT)): uses for p, text in sources.items()
                 if (uses := _pickle_uses(text))}
    assert offenders == {}
    # the check read the modules that load arrays (a wrong glob would pass vacuously)
    assert sum(text.count("np.load(") for text in sources.values()) >= 2


class _Recorder:
    """An executor that runs nothing and remembers what it was handed."""

    def __init__(self):
        self.seeds: dict[str, list[int]] = {}

    def map(self, tasks, data, data_checksum, on_start=None):
        for spec, configs in tasks:
            self.seeds[spec.name] = [c.seed for c in configs]
        return iter(())


def test_resume_runs_again_a_cached_row_that_lacks_a_probe_asked_for(tiny_data, tmp_path):
    """Probes add columns, not a new run: a finished cached row without them runs again (its
    new row replaces it), while rows of routes without features are never asked for them."""
    from backbones import get
    from bench import runlog
    from bench.config import RunConfig
    from bench.identity import identify
    from bench.sweep import run_sweep

    specs = [get("MobileNet_0.25"), get("dense")]
    config = RunConfig(weights="random", image_size=32, verbose=0)
    for spec, path in zip(specs, ("cached", "from-scratch"), strict=True):
        runlog.append_record(tmp_path, {"backbone": spec.name, "status": "ok", "route": path,
                                        "config_hash": identify(spec, config, tiny_data)
                                        .config_hash})
    recorder = _Recorder()
    run_sweep(specs, config, tiny_data, tmp_path, executor=recorder)
    assert recorder.seeds == {}  # both done
    with_probes = RunConfig(weights="random", image_size=32, verbose=0, probes=("linear",))
    recorder = _Recorder()
    run_sweep(specs, with_probes, tiny_data, tmp_path, executor=recorder)
    assert recorder.seeds == {"MobileNet_0.25": [2]}


def _ok_run(**fields):
    from bench.result import RunResult

    return RunResult(backbone="MobileNet_0.25", status="ok", seed=2, test_accuracy=0.6,
                     best_epoch_accuracy=0.62, best_epoch=4, epochs_run=6, epoch_s=0.01,
                     **fields)


def test_a_resumed_row_says_its_features_came_from_the_cache_not_what_they_cost_now():
    from bench.sweep import describe_result

    fresh = describe_result(1, 1, _ok_run(route="cached", extract_s=4.3, total_s=5.2))
    assert "extraction 4.3 s, 0.010 s/epoch, total 5.2 s" in fresh
    resumed = describe_result(1, 1, _ok_run(route="cached", extract_s=4.3, total_s=1.9,
                                            features_cached=True))
    assert "features from the cache (extracted earlier in 4.3 s), 0.010 s/epoch, total 1.9 s" \
        in resumed
    for route in ("from-scratch", "end-to-end"):  # no extraction to speak of
        line = describe_result(1, 1, _ok_run(route=route, extract_s=0.0, total_s=3.0))
        assert "extract" not in line and line.endswith("6 epochs, 0.010 s/epoch, total 3.0 s")


def test_run_shows_every_knob_with_its_default():
    """help(bench.run) and a notebook's completion list the protocol's knobs, not **kwargs."""
    import dataclasses
    import inspect

    import bench
    from bench.config import RunConfig

    parameters = inspect.signature(bench.run).parameters.values()
    assert not any(p.kind is p.VAR_KEYWORD for p in parameters)
    knobs = {p.name: p.default for p in parameters if p.kind is p.KEYWORD_ONLY}
    assert knobs == {f.name: f.default for f in dataclasses.fields(RunConfig)
                     if f.name not in ("verbose", "backbone_seed")}  # verbose: bench.run's own
    assert knobs["epochs"] == 30 and knobs["preprocess"] == "native"
