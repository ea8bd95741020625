"""The command line as a user meets it: exit codes, one-line errors, files written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import main

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--weights", "random", "--image-size", "32", "--epochs", "2", "--quiet"]


def _bench(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def _one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_list_shows_every_constructor_and_the_variants():
    proc = _bench("--list")
    assert proc.returncode == 0, proc.stderr
    for name in ("DenseNet121", "EfficientNetV2L", "NASNetLarge", "ConvNeXtXLarge",
                 "MobileNet_0.25", "MobileNetV2_1.4", "MobileNetV3Large_minimalistic"):
        assert f" {name} " in proc.stdout
    assert "40 keras.applications constructors" in proc.stdout


def test_unknown_backbone_is_one_line_with_a_suggestion(capsys, tiny_data_dir):
    assert main(["densenet12", "--data", str(tiny_data_dir)]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "densenet12" in line and "DenseNet121" in line


def test_unknown_backbone_in_a_real_process_prints_no_traceback(tiny_data_dir):
    proc = _bench("densenet12", "--data", str(tiny_data_dir))
    assert proc.returncode == 2
    assert "Did you mean DenseNet121" in _one_line_error(proc.stderr)


@pytest.mark.parametrize("args, fragment", [
    ([], "at least one backbone"),
    (["MobileNet*", "--weights", "x.h5"], "single backbone"),
    (["DenseNet121", "--weights", "missing.h5"], "missing.h5"),
    (["DenseNet121", "--epochs", "0"], "--epochs"),
    (["DenseNet121", "--image-size", "huge"], "huge"),
    (["DenseNet121", "--weights-dir", "/no/such/dir"], "/no/such/dir"),
])
def test_usage_errors_exit_2_with_one_line(capsys, tiny_data_dir, args, fragment):
    assert main([*args, "--data", str(tiny_data_dir)]) == 2
    assert fragment in _one_line_error(capsys.readouterr().err)


def test_missing_data_folder_exits_2_naming_it(capsys, tmp_path):
    missing = tmp_path / "nowhere"
    assert main(["MobileNet_0.25", "--data", str(missing), "--out", str(tmp_path / "o")]) == 2
    assert str(missing) in _one_line_error(capsys.readouterr().err)


def test_unwritable_out_exits_2(capsys, tiny_data_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["MobileNet_0.25", "--data", str(tiny_data_dir), "--out", str(blocker / "o")]) == 2
    assert "--out" in _one_line_error(capsys.readouterr().err)


def test_sweep_writes_rows_leaderboard_and_plots(capsys, tiny_data_dir, tmp_path):
    out = tmp_path / "out"
    code = main(["MobileNet_0.25", "MobileNetV3Small", "--data", str(tiny_data_dir),
                 "--out", str(out), *FAST])
    assert code == 0, capsys.readouterr().err
    stdout = capsys.readouterr().out
    assert "[1/2] MobileNet_0.25: starting" in stdout
    assert "[2/2] MobileNetV3Small (seed 2): ok" in stdout
    rows = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert [r["backbone"] for r in rows] == ["MobileNet_0.25", "MobileNetV3Small"]
    assert all(r["status"] == "ok" and r["weights"] == "random" for r in rows)
    table = (out / "leaderboard.md").read_text()
    assert "MobileNet_0.25" in table and "MobileNetV3Small" in table
    assert (out / "leaderboard.csv").is_file()
    assert sorted(p.name for p in (out / "plots").glob("*.png")) == [
        "confusion_MobileNetV3Small.png", "confusion_MobileNet_0.25.png",
        "history_MobileNetV3Small.png", "history_MobileNet_0.25.png", "summary.png"]


def test_a_failed_row_gives_exit_1_and_keeps_the_others(capsys, tiny_data_dir, tmp_path):
    out = tmp_path / "out"
    code = main(["MobileNet_0.25", "Xception", "--data", str(tiny_data_dir), "--out", str(out),
                 *FAST])
    assert code == 1
    rows = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert {r["backbone"]: r["status"] for r in rows} == {"MobileNet_0.25": "ok",
                                                          "Xception": "error"}
    assert "71" in (out / "leaderboard.md").read_text()  # the error is listed under the table


def test_report_rebuilds_from_runs_jsonl(capsys, tiny_data_dir, tmp_path):
    out = tmp_path / "out"
    assert main(["MobileNet_0.25", "--data", str(tiny_data_dir), "--out", str(out), *FAST]) == 0
    (out / "leaderboard.md").unlink()
    (out / "leaderboard.csv").unlink()
    assert main(["report", "--out", str(out)]) == 0
    assert "MobileNet_0.25" in (out / "leaderboard.md").read_text()
    assert (out / "leaderboard.csv").is_file()


def test_report_without_runs_is_a_usage_error(capsys, tmp_path):
    assert main(["report", "--out", str(tmp_path)]) == 2
    assert "runs.jsonl" in _one_line_error(capsys.readouterr().err)


def test_python_api_returns_a_dataframe(tiny_data, tmp_path):
    import bench

    df = bench.run(["MobileNet_0.25"], data=tiny_data, image_size=32, epochs=2,
                   weights="random", out=tmp_path)
    assert list(df["backbone"]) == ["MobileNet_0.25"]
    assert df.loc[0, "status"] == "ok" and 0 <= df.loc[0, "val_accuracy"] <= 1
    assert (tmp_path / "runs.jsonl").is_file()


def _dry_run_table(stdout: str) -> dict[str, list[str]]:
    """backbone -> its cells, from the printed markdown table."""
    cells = [[c.strip() for c in line.strip("|").split("|")]
             for line in stdout.splitlines() if line.startswith("| ")]
    return {row[0]: row[1:] for row in cells[1:]}


def test_dry_run_predicts_from_flops_and_trains_nothing(capsys, tiny_data_dir, tmp_path):
    out = tmp_path / "out"
    code = main(["MobileNet_0.25", "DenseNet121", "dense", "--dry-run", "--image-size", "32",
                 "--data", str(tiny_data_dir), "--out", str(out),
                 "--cache-dir", str(tmp_path / "cache")])
    assert code == 0, capsys.readouterr().err
    stdout = capsys.readouterr().out
    table = _dry_run_table(stdout)
    assert list(table) == ["MobileNet_0.25", "DenseNet121", "dense"]
    (m_size, m_gflops, m_s, _), (d_size, d_gflops, d_s, _) = table["MobileNet_0.25"], \
        table["DenseNet121"]
    assert m_size == d_size == "32"
    # DenseNet121 costs ~10x MobileNet_0.25 per image at any size
    assert float(d_gflops) > 5 * float(m_gflops) > 0
    assert float(d_s) > float(m_s) > 0
    assert "no extraction" in table["dense"][-1]
    assert "[3/3] dense" in stdout and "Calibration: VGG16" in stdout
    assert not out.exists()  # nothing ran, nothing written
    assert (tmp_path / "cache" / "graph-stats.json").is_file()  # a second dry run is instant


def test_dry_run_without_the_data_assumes_the_lessons(capsys, tmp_path):
    code = main(["MobileNet_0.25", "--dry-run", "--image-size", "32", "--data",
                 str(tmp_path / "absent"), "--out", str(tmp_path / "out"), "--no-cache"])
    assert code == 0, capsys.readouterr().err
    stdout = capsys.readouterr().out
    assert "the lesson's Dollar Street 10" in stdout and "1171 images 64x64x3" in stdout
    assert not (tmp_path / "absent").exists()  # no download
