"""The sweep on Ray: the same rows as locally, a dead worker is an error row, Ray stays optional.

One local Ray instance (2 CPUs) serves the module; the tests that need it skip without Ray.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.__main__ import main
from bench.config import RunConfig
from bench.executors.isolated import InProcessExecutor
from bench.sweep import run_sweep

FAST = dict(weights="random", image_size=32, epochs=3, patience=0, verbose=0)


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    from bench.executors.ray_cluster import job_runtime_env

    with pytest.MonkeyPatch.context() as env:
        # workers resolve Test_* rows by name, through the registry's environment variable
        env.setenv("BENCH_EXTRA_BACKBONES", "tests.crashers")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR", runtime_env=job_runtime_env())
        try:
            yield ray
        finally:
            ray.shutdown()


def _specs(*names: str) -> list:
    """Registry rows, and the test-only rows of tests/crashers.py (this process's registry was
    loaded before BENCH_EXTRA_BACKBONES was set; the Ray workers load theirs with it)."""
    import crashers  # tests/ is on sys.path under pytest

    from backbones import get

    extra = {spec.name: spec for spec in crashers.BACKBONES}
    return [extra[name] if name in extra else get(name) for name in names]


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]


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


def test_ray_rows_equal_the_local_rows(ray_cluster, tiny_data, tmp_path):
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
        np.testing.assert_allclose(r.history["val_accuracy"], mine.history["val_accuracy"],
                                   atol=1e-6)
        assert (r.config_hash, r.data, r.predictions) == \
            (mine.config_hash, mine.data, mine.predictions)
    # the driver wrote every row, and the leaderboard
    assert len(_rows(tmp_path / "ray")) == 6
    assert "Test_tiny" in (tmp_path / "ray" / "leaderboard.md").read_text()


def test_a_worker_that_dies_is_an_error_row_and_the_sweep_goes_on(ray_cluster, tiny_data,
                                                                   tmp_path):
    outcome = run_sweep(_specs("Test_segfault", "dense"), RunConfig(**FAST), tiny_data,
                        tmp_path / "out", executor=_ray_executor())
    rows = {r.backbone: r for r in outcome.results}
    assert rows["dense"].status == "ok"
    assert rows["Test_segfault"].status == "error"
    assert "worker process died" in rows["Test_segfault"].error
    assert rows["Test_segfault"].data == "synthetic"
    assert {r["backbone"] for r in _rows(tmp_path / "out")} == {"Test_segfault", "dense"}


def test_resume_on_ray_skips_finished_seeds(ray_cluster, tiny_data, tmp_path):
    out, specs = tmp_path / "out", _specs("Test_tiny")
    first = run_sweep(specs, RunConfig(**FAST), tiny_data, out, executor=_ray_executor())
    assert [r.seed for r in first.results] == [2]
    second = run_sweep(specs, RunConfig(seeds=2, **FAST), tiny_data, out,
                       executor=_ray_executor())
    assert second.skipped == ["Test_tiny (seed 2)"]
    assert [(r.seed, r.status) for r in second.results] == [(3, "ok")]
    assert [r["seed"] for r in _rows(out)] == [2, 3]


def test_a_task_no_node_can_hold_exits_2_instead_of_waiting(ray_cluster, capsys,
                                                            tiny_data_dir, tmp_path):
    code = main(["dense", "--ray", "--cpus-per-task", "64", "--data", str(tiny_data_dir),
                 "--out", str(tmp_path / "o"), "--weights", "random", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err, err
    assert err.startswith("bench: error: --cpus-per-task 64: no node")
    assert ray_cluster.is_initialized()  # a Ray this process already had is left running


def test_ray_flag_without_ray_exits_2_with_how_to_install(monkeypatch, capsys, tiny_data_dir,
                                                         tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
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
