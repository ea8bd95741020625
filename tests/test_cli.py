"""The command line as a user meets it: exit codes, one-line errors, files written."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
from conftest import read_rows, write_dataset

from backbones import UnknownBackboneError, registry, select
from bench.__main__ import flag, main, parse, run_options
from bench.commands import SweepOptions
from bench.config import RunConfig

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


@pytest.mark.parametrize("args", [["--list"], ["list"]], ids=" ".join)
def test_list_shows_every_constructor_and_the_variants(capsys, args):
    assert main(args) == 0
    names = {line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()}
    for name in ("DenseNet121", "EfficientNetV2L", "NASNetLarge", "ConvNeXtXLarge",
                 "MobileNet_0.25", "MobileNetV2_1.4", "MobileNetV3Large_minimalistic"):
        assert name in names


def test_list_fits_a_terminal_and_says_what_its_columns_mean(capsys):
    assert main(["--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 120
    text = " ".join(lines)
    assert "--all: yes for what --all runs, the 40 keras.applications constructors" in text
    assert "top-1: its published ImageNet top-1 %" in text and "canonical" not in text
    said = [line.split() for line in lines if line.startswith(("ConvNeXtTiny ", "MobileNet_0."))]
    assert said[0][-1] == "81.3"  # ConvNeXtTiny: Keras publishes ConvNeXt's top-1 too
    assert said[1][1:3] == ["mobilenet", "224"]  # MobileNet_0.25, a variant: not in --all
    assert ["MobileNet_0.25", "mobilenet_2_5_224_tf_no_top.h5"] in said  # its weights file


def _knobs(cls) -> list:
    return [f for f in fields(cls) if "help" in f.metadata]


def test_help_names_the_commands_and_run_help_every_flag(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "{run,list,report,export,predict,weights}" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    stdout = capsys.readouterr().out
    knobs = _knobs(SweepOptions) + _knobs(RunConfig)
    assert len(knobs) > 25  # the fields were found, so the loop below checks something
    for field in knobs:
        if field.name != "backbones":  # the positional NAME
            assert flag(field) in stdout
    assert "--no-cache" in stdout and "--pooling max|avg" in stdout


def test_no_flag_gives_the_dataclass_defaults():
    options, config = run_options(parse(["DenseNet121"]))
    assert options == SweepOptions(backbones=["DenseNet121"])
    assert config == RunConfig(verbose=config.verbose)


def _another_value(field) -> tuple[object, list[str]]:
    """A valid value of the field other than its default, and the arguments that set it."""
    default, choices = field.default, field.metadata.get("choices")
    if isinstance(default, bool):
        return not default, [flag(field)]
    if field.name == "probes":
        return ("linear",), [flag(field), "linear"]
    if choices:
        other = next(c for c in choices if c != default)
        return other, [flag(field), other]
    if field.name == "image_size":
        return "native", [flag(field), "native"]
    if isinstance(default, int) or field.metadata.get("type") is int:
        return (default or 0) + 3, [flag(field), str((default or 0) + 3)]
    if isinstance(default, float) or field.metadata.get("type") is float:
        value = 0.25 if default is None or default > 0.3 else 0.4
        return value, [flag(field), str(value)]
    return "x", [flag(field), "x"]


@pytest.mark.parametrize("field", [f for f in _knobs(SweepOptions) + _knobs(RunConfig)
                                   if f.name != "backbones"], ids=lambda f: f.name)
def test_each_flag_sets_its_field(field):
    value, args = _another_value(field)
    needs = {"gpus_per_task": ["--ray"], "cpus_per_task": ["--ray"],
             "augment": ["--fine-tune"]}.get(field.name, [])  # what the flag applies to
    options, config = run_options(parse(["run", "A", *args, *needs]))
    parsed = options if hasattr(options, field.name) else config
    assert getattr(parsed, field.name) == value != field.default
    other = config if parsed is options else options
    untouched = SweepOptions if other is options else RunConfig
    assert all(getattr(other, f.name) == f.default for f in _knobs(untouched)
               if f.name not in ("backbones", "verbose"))


def test_unknown_backbone_in_a_real_process_is_the_registrys_line(tiny_data_dir):
    proc = _bench("densenet12", "--data", str(tiny_data_dir))
    assert proc.returncode == 2
    with pytest.raises(UnknownBackboneError) as info:
        select(["densenet12"])
    assert _one_line_error(proc.stderr) == f"bench: error: {info.value}"


@pytest.mark.parametrize("args, line", [
    ([], "name at least one backbone"),
    (["MobileNet*", "--weights", "x.h5"], "--weights FILE applies to a single backbone"),
    (["DenseNet121", "--weights", "missing.h5"], "--weights: no such file 'missing.h5'"),
    (["DenseNet121", "--weights-dir", "/no/such/dir"], "--weights-dir: no such folder"),
    # a value RunConfig or SweepOptions refuses: their message, under the flag's name
    (["DenseNet121", "--epochs", "0"], "--epochs must be >= 1; received 0"),
    (["DenseNet121", "--image-size", "huge"], "--image-size must be a positive integer or "
                                              "'native'; received 'huge'"),
    (["DenseNet121", "--timeout-min", "1", "--no-isolate"], "--timeout-min needs a positive"),
    # argparse's own errors, on one line
    (["DenseNet121", "--epochs", "x"], "argument --epochs: invalid int value: 'x'"),
    (["DenseNet121", "--bogus"], "unrecognized arguments: --bogus"),
    (["report", "--all"], "unrecognized arguments: --all"),
])
def test_usage_errors_exit_2_with_one_line(capsys, tiny_data_dir, tmp_path, args, line):
    out = tmp_path / "o"
    assert main([*args, "--data", str(tiny_data_dir), "--out", str(out)]) == 2
    assert _one_line_error(capsys.readouterr().err).startswith(f"bench: error: {line}")
    assert not out.exists()  # refused before anything was written


def test_missing_data_folder_exits_2_naming_it(capsys, tmp_path):
    missing = tmp_path / "nowhere"
    assert main(["MobileNet_0.25", "--data", str(missing), "--out", str(tmp_path / "o")]) == 2
    assert str(missing) in _one_line_error(capsys.readouterr().err)
    assert read_rows(tmp_path / "o") == []  # nothing half-written


def test_a_bad_data_file_exits_2_with_its_line_and_writes_nothing(capsys, tmp_path):
    """The data level words every defect (tests/test_data.py's catalogue); here, that the command
    line turns one into exit 2 and one line before anything is written."""
    folder = write_dataset(tmp_path / "d", train_images=b"\x93NUMPY garbage")
    assert main(["MobileNet_0.25", "--data", str(folder), "--out", str(tmp_path / "o")]) == 2
    assert "train_images.npy" in _one_line_error(capsys.readouterr().err)
    assert read_rows(tmp_path / "o") == []


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
    rows = read_rows(out)
    assert [r["backbone"] for r in rows] == ["MobileNet_0.25", "MobileNetV3Small"]
    assert all(r["status"] == "ok" and r["weights"] == "random" for r in rows)
    table = (out / "leaderboard.md").read_text()
    assert "MobileNet_0.25" in table and "MobileNetV3Small" in table
    assert (out / "leaderboard.csv").is_file()
    assert sorted(p.name for p in (out / "plots").glob("*.png")) == [
        "confusion_MobileNetV3Small.png", "confusion_MobileNet_0.25.png", "cost.png",
        "history_MobileNetV3Small.png", "history_MobileNet_0.25.png", "summary.png"]
    assert all(r["infer_ms"] > 0 and r["gflops"] > 0 for r in rows)  # the cost columns' data


def test_a_failed_row_gives_exit_1_and_keeps_the_others(capsys, tiny_data_dir, tmp_path,
                                                        monkeypatch):
    monkeypatch.setenv("BENCH_EXTRA_BACKBONES", "tests.crashers")
    monkeypatch.setattr(registry, "EXTRAS", {})  # the test rows leave with this test
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1]))  # "tests." in this process too
    out = tmp_path / "out"
    code = main(["MobileNet_0.25", "Test_segfault", "--data", str(tiny_data_dir), "--out",
                 str(out), *FAST])
    assert code == 1
    rows = {r["backbone"]: r for r in read_rows(out)}
    assert {name: r["status"] for name, r in rows.items()} == {"MobileNet_0.25": "ok",
                                                               "Test_segfault": "error"}
    board = (out / "leaderboard.md").read_text()
    assert rows["Test_segfault"]["error"] in board  # the error is listed under the table


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
    assert _one_line_error(capsys.readouterr().err) == (
        f"bench: error: No runs.jsonl in {tmp_path}: nothing to report")


def test_keras_warnings_that_bench_reports_itself_stay_off_stderr(real_weights_dir,
                                                                  tiny_data_dir, tmp_path):
    """MobileNet's 224 px ImageNet file at 32 px: Keras warns about it in two lines; the row
    already names the file loaded, and --list the sizes there are files for."""
    proc = _bench("MobileNet_0.25", "--weights-dir", str(real_weights_dir), "--image-size", "32",
                  "--epochs", "1", "--quiet", "--data", str(tiny_data_dir), "--out",
                  str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert read_rows(tmp_path / "out")[0]["weights_file"] == "mobilenet_2_5_224_tf_no_top.h5"


def test_python_api_returns_a_dataframe(tiny_data, tmp_path):
    import bench

    df = bench.run(["MobileNet_0.25"], data=tiny_data, image_size=32, epochs=2,
                   weights="random", out=tmp_path)
    assert list(df["backbone"]) == ["MobileNet_0.25"]
    assert df.loc[0, "status"] == "ok" and 0 <= df.loc[0, "test_accuracy"] <= 1
    assert (tmp_path / "runs.jsonl").is_file()


def _dry_run_table(stdout: str) -> dict[str, list[str]]:
    """backbone -> its cells, from the printed markdown table."""
    cells = [[c.strip() for c in line.strip("|").split("|")]
             for line in stdout.splitlines() if line.startswith("| ")]
    return {row[0]: row[1:] for row in cells[1:]}


def test_dry_run_predicts_the_whole_sweep_and_trains_nothing(capsys, tiny_data_dir, tmp_path,
                                                             monkeypatch):
    out = tmp_path / "out"
    argv = ["MobileNet_0.25", "DenseNet121", "dense", "--dry-run", "--image-size", "32",
            "--data", str(tiny_data_dir), "--out", str(out), "--cache-dir", str(tmp_path / "c"),
            "--seeds", "2"]
    assert main(argv) == 0, capsys.readouterr().err
    stdout = capsys.readouterr().out
    table = _dry_run_table(stdout)
    assert list(table) == ["MobileNet_0.25", "DenseNet121", "dense"]
    mobile, dense121, dense = ([float(c) if c.replace(".", "").isdigit() else c for c in row]
                               for row in table.values())
    for size, _, runtime, cold, warm, train, whole, _ in (mobile, dense121):
        # each backbone's extraction is that of the runtime --runtime auto would choose;
        # with the conversions cached it is never longer than with nothing cached
        assert size == 32 and runtime in ("tensorflow", "openvino") and 0 < warm <= cold
        # the head's training (two seeds) and a child process's start-up come on top
        assert 0 < train and whole > cold + train
    # DenseNet121 costs ~10x MobileNet_0.25 per image at any size
    assert dense121[1] > 5 * mobile[1] > 0 and dense121[3] > mobile[3]
    assert dense[3] == 0 and dense[5] > 0 and "no extraction" in dense[-1]
    assert "Calibration (tensorflow, measured)" in stdout
    assert "Calibration (openvino, measured)" in stdout  # auto on a CPU weighs both runtimes
    assert "Predicted sweep:" in stdout and "2 seed(s)" in stdout
    assert "with the conversions cached" in stdout and "TensorFlow alone" in stdout
    assert not out.exists()  # nothing ran, nothing written

    # the second dry run on this machine measures nothing and builds no backbone
    from backbones.spec import BackboneSpec
    from bench.engine import cost, routes

    def refuse(*args, **kwargs):
        raise AssertionError("measured or built again")

    for target, name in ((BackboneSpec, "build"), (cost, "calibrate"),
                         (routes, "from_scratch")):
        monkeypatch.setattr(target, name, refuse)
    assert main(argv) == 0, capsys.readouterr().err
    again = capsys.readouterr().out
    assert "Calibration (tensorflow, remembered" in again and _dry_run_table(again) == table


def test_ctrl_c_in_a_dry_run_is_one_line_and_exit_130(capsys, tiny_data_dir, tmp_path,
                                                      monkeypatch):
    from bench.engine import cost

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cost, "estimate", interrupted)
    assert main(["MobileNet_0.25", "--dry-run", "--image-size", "32", "--data",
                 str(tiny_data_dir), "--cache-dir", str(tmp_path / "c")]) == 130
    assert _one_line_error(capsys.readouterr().err).startswith("bench: interrupted; a dry run")


def test_dry_run_without_the_data_assumes_the_lessons(capsys, tmp_path):
    code = main(["MobileNet_0.25", "--dry-run", "--image-size", "32", "--data",
                 str(tmp_path / "absent"), "--out", str(tmp_path / "out"), "--no-cache"])
    assert code == 0, capsys.readouterr().err
    stdout = capsys.readouterr().out
    assert "the lesson's Dollar Street 10" in stdout and "1171 images 64x64x3" in stdout
    assert not (tmp_path / "absent").exists()  # no download


@pytest.mark.parametrize("argv", [
    ["export", "MobileNet_0.25", "--out", "R", "m.keras"],  # as the README writes it
    ["export", "MobileNet_0.25", "m.keras", "--out", "R"],
    ["export", "--out", "R", "MobileNet_0.25", "m.keras"],
])
def test_export_takes_its_name_options_and_file_in_any_order(argv):
    args = parse(argv)
    assert (args.command, args.name, args.file, args.out) == ("export", "MobileNet_0.25",
                                                              "m.keras", "R")


def test_export_without_a_name_takes_the_file():
    args = parse(["export", "--out", "R", "m.keras"])
    assert (args.name, args.file) == (None, "m.keras")


@pytest.mark.parametrize("extra", [[], ["--dry-run"]])
def test_an_image_size_no_memory_holds_is_one_line_before_any_work(capsys, tiny_data_dir,
                                                                   tmp_path, extra):
    out = tmp_path / "out"
    assert main(["MobileNet_0.25", "--image-size", "100000", "--data", str(tiny_data_dir),
                 "--out", str(out), *extra]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "--image-size 100000" in line and "GiB of memory" in line
    assert not out.exists()


def test_a_missing_weights_folder_from_the_environment_is_named(capsys, tiny_data_dir,
                                                               tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path / "nowhere"))
    assert main(["MobileNet_0.25", "--data", str(tiny_data_dir), "--out",
                 str(tmp_path / "out")]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert line.startswith("bench: error: $BENCH_WEIGHTS_DIR: no such folder") and "nowhere" in line
