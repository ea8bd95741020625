"""The sweep on Ray: the same rows as locally, a dead worker is an error row, Ray stays optional.

One local Ray instance (2 CPUs) serves the module; the tests that need it skip without Ray.
It is always a new instance, whatever a Ray killed earlier on this machine left behind.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import assert_histories_close, read_rows

from bench.__main__ import main
from bench.config import RunConfig
from bench.executors.inprocess import InProcessExecutor
from bench.sweep import run_sweep

# one xdist worker runs this file: its module-scoped fixture is set up once
pytestmark = pytest.mark.xdist_group("ray")

FAST = dict(weights="random", image_size=32, epochs=3, patience=0, verbose=0)


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    from bench.executors.ray_cluster import start_local

    with pytest.MonkeyPatch.context() as env:
        # workers resolve Test_* rows by name, through the registry's environment variable
        env.setenv("BENCH_EXTRA_BACKBONES", "tests.crashers")
        start_local(num_cpus=2)
        try:
            yield ray
        finally:
            ray.shutdown()


def _specs(*names: str) -> list:
    """Registry rows, and the test-only rows of tests/crashers.py (this process never loads
    $BENCH_EXTRA_BACKBONES; the Ray workers do, as the fixture sets it for them)."""
    import crashers  # tests/ is on sys.path under pytest

    from backbones import get

    extra = {spec.name: spec for spec in crashers.BACKBONES}
    return [extra[name] if name in extra else get(name) for name in names]


def _ray_executor():
    from bench.executors.ray_cluster import RayExecutor

    return RayExecutor()


def test_an_address_where_nothing_listens_exits_2_at_once(capsys, tiny_data_dir, tmp_path):
    ray = pytest.importorskip("ray")
    if ray.is_initialized():  # a Ray this process already has is used whatever the address
        pytest.skip("this process is already connected to Ray")
    code = main(["dense", "--ray", "127.0.0.1:1", "--data", str(tiny_data_dir), "--out",
                 str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err, err
    assert err.startswith("bench: error: --ray 127.0.0.1:1: nothing answers there")


# Nothing listens on port 1: what a head killed without `ray stop` leaves behind.
DEAD_HEAD = "127.0.0.1:1"


def test_a_local_sweep_starts_its_own_ray_despite_a_dead_heads_address(monkeypatch):
    """RAY_ADDRESS and Ray's address file name a head that is gone: --ray without an address
    still starts (and stops) a new local instance instead of trying to join the dead one."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("this process is already connected to Ray")
    from bench.executors.ray_cluster import RayExecutor

    # Ray's temp dir (a short path: Ray's socket paths have a length limit) holds the file
    # `ray start` writes and a killed head never removes.
    temp_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    (temp_dir / "ray" / "ray_current_cluster").parent.mkdir()
    (temp_dir / "ray" / "ray_current_cluster").write_text(DEAD_HEAD)
    monkeypatch.setenv("RAY_TMPDIR", str(temp_dir))
    monkeypatch.setenv("RAY_ADDRESS", DEAD_HEAD)
    said = []
    executor = RayExecutor(num_cpus=1, log=said.append)
    try:
        executor.connect()
        assert ray.is_initialized()
        assert ray.get(ray.put(7)) == 7
    finally:
        executor.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert not ray.is_initialized()
    assert said and said[0].startswith("Ray: a local instance (stopped at the end), 1 node(s)")
    assert os.environ["RAY_ADDRESS"] == DEAD_HEAD  # hidden for the start only


def test_ray_rows_equal_the_localread_rows(ray_cluster, tiny_data, tmp_path):
    specs = _specs("MobileNet_0.25", "Test_tiny", "dense")
    config = RunConfig(seeds=2, **FAST)
    local = run_sweep(specs, config, tiny_data, tmp_path / "local", executor=InProcessExecutor())
    remote = run_sweep(specs, config, tiny_data, tmp_path / "ray", executor=_ray_executor())

    by_key = {(r.backbone, r.seed): r for r in local.results}
    assert sorted(by_key) == sorted((r.backbone, r.seed) for r in remote.results)
    assert len(by_key) == 6
    for r in remote.results:
        mine = by_key[(r.backbone, r.seed)]
        assert r.status == mine.status == "ok", r.error
        assert_histories_close(r.history, mine.history, n=tiny_data.n_test)
        # predictions of a well-separated synthetic task: exact
        assert (r.config_hash, r.data, r.predictions) == \
            (mine.config_hash, mine.data, mine.predictions)
    # the driver wrote every row, and the leaderboard
    assert len(read_rows(tmp_path / "ray")) == 6
    assert "Test_tiny" in (tmp_path / "ray" / "leaderboard.md").read_text()


def test_fine_tuning_runs_on_ray_as_in_process(ray_cluster, tiny_data, tmp_path):
    """Each stage is a Ray task; the fine-tuned one waits for its frozen one and continues it
    (its features from the shared cache), with the rows an in-process sweep writes."""
    specs = _specs("MobileNet_0.25", "dense")
    config = RunConfig(fine_tune=True, fine_tune_epochs=1, cache_dir=str(tmp_path / "c"),
                       **FAST)
    local = run_sweep(specs, config, tiny_data, tmp_path / "local", executor=InProcessExecutor())
    remote = run_sweep(specs, config, tiny_data, tmp_path / "ray", executor=_ray_executor())
    stages = sorted((r.backbone, r.stage or "frozen", r.status) for r in remote.results)
    assert stages == [("MobileNet_0.25", "fine-tuned", "ok"), ("MobileNet_0.25", "frozen", "ok"),
                      ("dense", "frozen", "ok")]
    by_key = {(r.backbone, r.stage): r for r in local.results}
    for r in remote.results:
        mine = by_key[(r.backbone, r.stage)]
        assert r.config_hash == mine.config_hash
        assert_histories_close(r.history, mine.history, n=tiny_data.n_test)
        assert r.frozen_predictions == mine.frozen_predictions


def test_a_worker_that_dies_is_an_error_row_and_the_sweep_goes_on(ray_cluster, tiny_data,
                                                                   tmp_path):
    outcome = run_sweep(_specs("Test_segfault", "dense"), RunConfig(**FAST), tiny_data,
                        tmp_path / "out", executor=_ray_executor())
    rows = {r.backbone: r for r in outcome.results}
    assert rows["dense"].status == "ok"
    assert rows["Test_segfault"].status == "error"
    assert "worker process died" in rows["Test_segfault"].error
    assert rows["Test_segfault"].data == "synthetic"
    assert {r["backbone"] for r in read_rows(tmp_path / "out")} == {"Test_segfault", "dense"}


def test_resume_on_ray_skips_finished_seeds(ray_cluster, tiny_data, tmp_path):
    out, specs = tmp_path / "out", _specs("Test_tiny")
    first = run_sweep(specs, RunConfig(**FAST), tiny_data, out, executor=_ray_executor())
    assert [r.seed for r in first.results] == [2]
    second = run_sweep(specs, RunConfig(seeds=2, **FAST), tiny_data, out,
                       executor=_ray_executor())
    assert second.skipped == ["Test_tiny (seed 2)"]
    assert [(r.seed, r.status) for r in second.results] == [(3, "ok")]
    assert [r["seed"] for r in read_rows(out)] == [2, 3]


def test_a_task_no_node_can_hold_exits_2_instead_of_waiting(ray_cluster, capsys, monkeypatch,
                                                            tiny_data_dir, tmp_path):
    # the fixture names tests.crashers for the workers; this driver runs no Test_* row
    monkeypatch.delenv("BENCH_EXTRA_BACKBONES")
    code = main(["dense", "--ray", "--cpus-per-task", "64", "--data", str(tiny_data_dir),
                 "--out", str(tmp_path / "o"), "--weights", "random", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err, err
    assert err.startswith("bench: error: --cpus-per-task 64: no node")
    assert ray_cluster.is_initialized()  # a Ray this process already had is left running


def test_ray_flag_without_ray_exits_2_with_how_to_install(monkeypatch, capsys, tiny_data_dir,
                                                         tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    monkeypatch.delenv("BENCH_EXTRA_BACKBONES", raising=False)  # set while ray_cluster lives
    code = main(["dense", "--ray", "--data", str(tiny_data_dir), "--out", str(tmp_path / "o")])
    assert code == 2
    assert capsys.readouterr().err.splitlines() == [
        "bench: error: --ray needs Ray: pip install -e .[ray] (or pip install 'ray>=2.40')"]
    assert not (tmp_path / "o" / "runs.jsonl").exists()


def test_ray_task_flags_without_ray_are_a_usage_error(capsys, tiny_data_dir, tmp_path):
    code = main(["dense", "--gpus-per-task", "1", "--data", str(tiny_data_dir), "--out",
                 str(tmp_path / "o")])
    assert code == 2
    assert "apply to --ray" in capsys.readouterr().err
