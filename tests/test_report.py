"""The reporter: runs.jsonl in, leaderboard.md / leaderboard.csv / plots out. No TensorFlow."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench import report
from bench.report import (
    CSV_COLUMNS,
    LEADERBOARD_COLUMNS,
    RUNS_FILE,
    ReportError,
    append_record,
    latest_records,
    leaderboard,
    read_records,
    safe_name,
    write_report,
)
from bench.result import RunResult

REPO = Path(__file__).resolve().parents[1]


def ok_record(backbone: str, val: float, best: float | None = None, **overrides) -> dict:
    """A successful run under the lesson's protocol, with a plausible 5-epoch history."""
    best = val if best is None else best
    acc = [0.40, 0.55, 0.63, 0.70, 0.74]
    fields = dict(
        backbone=backbone,
        status="ok",
        family="Family" + backbone[:3],
        val_accuracy=val,
        best_val_accuracy=best,
        best_epoch=4,
        epochs_run=5,
        history={
            "accuracy": acc,
            "val_accuracy": [a - 0.1 for a in acc[:-1]] + [val],
            "loss": [1.4, 1.1, 0.9, 0.8, 0.7],
            "val_loss": [1.5, 1.2, 1.0, 0.95, 0.9],
        },
        params_total=7_041_604,
        params_trainable=4_100,
        feature_width=1024,
        extract_s=12.345,
        epoch_s=0.4567,
        epoch_times=[2.5, 0.45, 0.4567, 0.47, 0.44],
        total_s=20.0,
        image_size=160,
        preprocess="native",
        pooling="max",
        path="cached",
        weights="imagenet",
        seed=2,
        epochs=30,
        patience=5,
        batch_size=32,
        data="data/dataset_dollarstreet",
        n_train=878,
        n_val=98,
        n_classes=4,
        keras_version="3.15.1",
        tf_version="2.21.0",
        started_at="2025-01-01T00:00:00+00:00",
    )
    fields.update(overrides)
    return RunResult(**fields).to_dict()


def error_record(backbone: str, error: str, **overrides) -> dict:
    fields = dict(
        backbone=backbone,
        status="error",
        error=error,
        image_size=160,
        preprocess="native",
        pooling="max",
        path="cached",
        weights="imagenet",
        seed=2,
        epochs=30,
        patience=5,
        batch_size=32,
        data="data/dataset_dollarstreet",
    )
    fields.update(overrides)
    return RunResult(**fields).to_dict()


# ---------------------------------------------------------------------------------------------
# runs.jsonl


def test_append_read_round_trip(tmp_path: Path) -> None:
    records = [ok_record("DenseNet121", 0.7), error_record("NASNetLarge", "OOM")]
    for record in records:
        path = append_record(tmp_path / "new" / "dir", record)
    assert path == tmp_path / "new" / "dir" / RUNS_FILE
    assert read_records(tmp_path / "new" / "dir") == records
    assert RunResult.from_dict(read_records(tmp_path / "new" / "dir")[0]).ok


def test_append_writes_one_sorted_json_line_per_record(tmp_path: Path) -> None:
    records = [ok_record(f"Model{i}", 0.5 + i / 10) for i in range(3)]
    for record in records:
        append_record(tmp_path, record)
    text = (tmp_path / RUNS_FILE).read_text(encoding="utf-8")
    assert text.endswith("\n")
    lines = text.split("\n")[:-1]
    assert len(lines) == 3
    for line, record in zip(lines, records, strict=True):
        assert json.loads(line) == record
        assert line == json.dumps(record, sort_keys=True)


def test_append_is_one_write_then_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, object]] = []
    real_write, real_fsync = os.write, os.fsync

    def write(fd: int, data: bytes) -> int:
        calls.append(("write", data))
        return real_write(fd, data)

    def fsync(fd: int) -> None:
        calls.append(("fsync", fd))
        real_fsync(fd)

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "fsync", fsync)
    record = ok_record("A", 0.5)
    append_record(tmp_path, record)
    assert [name for name, _ in calls] == ["write", "fsync"]
    assert calls[0][1] == (json.dumps(record, sort_keys=True) + "\n").encode()


def test_missing_file_reads_as_no_records(tmp_path: Path) -> None:
    assert read_records(tmp_path) == []
    assert read_records(tmp_path / "does-not-exist") == []


def test_blank_lines_are_ignored(tmp_path: Path) -> None:
    record = ok_record("VGG16", 0.6)
    (tmp_path / RUNS_FILE).write_text("\n" + json.dumps(record) + "\n\n   \n", encoding="utf-8")
    assert read_records(tmp_path) == [record]


def test_torn_last_line_is_skipped_with_a_warning(tmp_path: Path) -> None:
    first, second = ok_record("A", 0.5), ok_record("B", 0.6)
    append_record(tmp_path, first)
    append_record(tmp_path, second)
    with (tmp_path / RUNS_FILE).open("a", encoding="utf-8") as f:
        f.write(json.dumps(ok_record("C", 0.7))[:40])  # killed mid-write: no newline
    with pytest.warns(UserWarning, match=r"runs\.jsonl:3"):
        assert read_records(tmp_path) == [first, second]


def test_append_after_torn_line_keeps_the_file_readable(tmp_path: Path) -> None:
    first, third = ok_record("A", 0.5), ok_record("C", 0.7)
    append_record(tmp_path, first)
    with (tmp_path / RUNS_FILE).open("a", encoding="utf-8") as f:
        f.write('{"backbone": "B", "sta')
    with pytest.warns(UserWarning, match="torn"):
        append_record(tmp_path, third)
    assert read_records(tmp_path) == [first, third]


def test_append_after_complete_line_without_newline_keeps_it(tmp_path: Path) -> None:
    first, second = ok_record("A", 0.5), ok_record("B", 0.6)
    (tmp_path / RUNS_FILE).write_text(json.dumps(first), encoding="utf-8")  # hand-edited file
    append_record(tmp_path, second)
    assert read_records(tmp_path) == [first, second]


@pytest.mark.parametrize("bad", ['{"backbone": "B", "sta', "[1, 2]", "not json"])
def test_invalid_middle_line_raises_with_line_number(tmp_path: Path, bad: str) -> None:
    lines = [json.dumps(ok_record("A", 0.5)), "", bad, json.dumps(ok_record("C", 0.7))]
    (tmp_path / RUNS_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ReportError, match=r"runs\.jsonl:3"):
        read_records(tmp_path)


def test_nan_and_infinity_are_written_as_null(tmp_path: Path) -> None:
    record = ok_record("A", math.nan, best=math.inf)
    record["history"]["val_loss"][2] = -math.inf
    append_record(tmp_path, record)
    text = (tmp_path / RUNS_FILE).read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text
    back = json.loads(text)  # strict parsers must accept it too
    assert back["val_accuracy"] is None
    assert back["best_val_accuracy"] is None
    assert back["history"]["val_loss"][2] is None
    assert back["history"]["val_loss"][1] == 1.2


def test_numpy_values_are_written_as_plain_json(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    record = ok_record("A", 0.5)
    record["val_accuracy"] = np.float32(0.5)
    record["epochs_run"] = np.int64(5)
    record["history"]["accuracy"] = np.array([0.1, np.nan])
    append_record(tmp_path, record)
    back = read_records(tmp_path)[0]
    assert back["val_accuracy"] == 0.5 and back["epochs_run"] == 5
    assert back["history"]["accuracy"] == [0.1, None]


# ---------------------------------------------------------------------------------------------
# latest_records and the table


def test_latest_records_keeps_the_last_of_each_run() -> None:
    failed = error_record("A", "boom")
    rerun = ok_record("A", 0.8)
    other_size = ok_record("A", 0.6, image_size=224)
    b = ok_record("B", 0.7)
    b_lesson = ok_record("B", 0.3, preprocess="lesson")
    kept = latest_records([failed, b, other_size, rerun, b_lesson])
    assert kept == [b, other_size, rerun, b_lesson]


def test_latest_records_distinguishes_every_protocol_knob() -> None:
    base = ok_record("A", 0.5)
    variants = [
        ok_record("A", 0.5, **{key: value})
        for key, value in [
            ("image_size", 224),
            ("preprocess", "lesson"),
            ("pooling", "avg"),
            ("weights", "random"),
            ("seed", 3),
            ("path", "end-to-end"),
            ("epochs", 10),
            ("patience", 0),
            ("batch_size", 16),
            ("data", "other"),
        ]
    ]
    assert len(latest_records([base, *variants, base])) == 1 + len(variants)


def test_leaderboard_ranks_ok_rows_only() -> None:
    records = [
        ok_record("Zeta", 0.70, best=0.75),
        error_record("Broken", "ValueError: nope"),
        ok_record("Alpha", 0.70, best=0.75),  # full tie with Zeta: name decides
        ok_record("Mid", 0.70, best=0.80),  # same last epoch, better best: ahead of both
        ok_record("Top", 0.90, epoch_s=1.25),
        ok_record("Low", 0.10),
    ]
    table = leaderboard(records)
    assert list(table.columns) == list(LEADERBOARD_COLUMNS)
    assert list(table["backbone"]) == ["Top", "Mid", "Alpha", "Zeta", "Low"]
    assert list(table["rank"]) == [1, 2, 3, 4, 5]
    top = table.iloc[0]
    assert top["val_acc"] == 0.90
    assert top["s_per_epoch"] == 1.25  # the runner's median, not recomputed
    assert top["epochs"] == 5
    assert top["trainable_params"] == 4_100 and top["total_params"] == 7_041_604
    assert top["extract_s"] == 12.345
    assert (top["image_size"], top["preprocess"], top["weights"], top["path"]) == (
        160,
        "native",
        "imagenet",
        "cached",
    )


def test_leaderboard_puts_missing_accuracy_last() -> None:
    table = leaderboard([ok_record("NoScore", math.nan), ok_record("Scored", 0.2)])
    assert list(table["backbone"]) == ["Scored", "NoScore"]


def test_leaderboard_of_nothing_has_the_columns() -> None:
    table = leaderboard([error_record("X", "e")])
    assert table.empty and list(table.columns) == list(LEADERBOARD_COLUMNS)


# ---------------------------------------------------------------------------------------------
# write_report


def cells(line: str) -> list[str]:
    """The cells of one markdown pipe-table line."""
    return [c.strip() for c in line.strip().strip("|").split("|")]


@pytest.fixture(scope="module")
def mixed_records() -> list[dict]:
    return [
        ok_record("DenseNet121", 0.7123, best=0.75, params_total=1_234_567),
        ok_record(
            "EfficientNetB0",
            0.65,
            preprocess="lesson",
            notes=["lesson preprocessing: EfficientNet expects 0-255 pixels"],
        ),
        error_record("NASNetLarge", "ResourceExhaustedError: OOM\n  when allocating tensor"),
        ok_record("MobileNetV2", 0.8),
    ]


@pytest.fixture(scope="module")
def mixed_report(tmp_path_factory: pytest.TempPathFactory, mixed_records: list[dict]) -> Path:
    """One report over mixed_records, shared: plotting is the slow part of these tests."""
    out = tmp_path_factory.mktemp("mixed")
    write_report(out, mixed_records)
    return out


def test_write_report_returns_what_it_wrote(tmp_path: Path, mixed_records: list[dict]) -> None:
    paths = write_report(tmp_path, mixed_records)
    assert paths["markdown"] == tmp_path / "leaderboard.md"
    assert paths["csv"] == tmp_path / "leaderboard.csv"
    assert paths["plots"][-1] == tmp_path / "plots" / "summary.png"
    assert [p.name for p in paths["plots"][:-1]] == [
        "history_MobileNetV2.png",  # leaderboard order
        "history_DenseNet121.png",
        "history_EfficientNetB0.png",
    ]
    assert all(p.exists() for p in [paths["markdown"], paths["csv"], *paths["plots"]])


def test_markdown_report(mixed_report: Path) -> None:
    text = (mixed_report / "leaderboard.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0].startswith("# ")
    # what was run, said once
    assert "data/dataset_dollarstreet" in text
    for knob in ("epochs 30", "patience 5", "batch size 32", "seed 2", "pooling max"):
        assert knob in text
    # the table: header, then rows best first, readable numbers
    header = next(line for line in lines if line.startswith("|") and "backbone" in line)
    assert cells(header) == list(LEADERBOARD_COLUMNS)
    rows = [line for line in lines if line.startswith("|") and cells(line)[0].isdigit()]
    assert [cells(r)[1] for r in rows] == ["MobileNetV2", "DenseNet121", "EfficientNetB0"]
    assert [cells(r)[0] for r in rows] == ["1", "2", "3"]
    dense = rows[1]
    assert "0.712" in dense and "0.7123" not in dense
    assert "1,234,567" in dense and "4,100" in dense
    assert "12.3" in dense and "0.46" in dense
    assert "NASNetLarge" not in "".join(rows)
    # failures, one line each, newlines collapsed
    assert "## Failed" in text
    assert "- **NASNetLarge**: ResourceExhaustedError: OOM when allocating tensor" in lines
    assert text.index("## Failed") > text.index(header)
    # notes prefixed by the backbone
    assert "## Notes" in text
    assert "- **EfficientNetB0**: lesson preprocessing: EfficientNet expects 0-255 pixels" in lines
    assert "plots/summary.png" in text
    assert "plots/history_DenseNet121.png" in text


def test_markdown_omits_empty_sections(tmp_path: Path) -> None:
    text = write_report(tmp_path, [ok_record("A", 0.5)])["markdown"].read_text(encoding="utf-8")
    assert "## Failed" not in text and "## Notes" not in text
    assert "| A " in text


def test_csv_report(mixed_report: Path) -> None:
    csv = mixed_report / "leaderboard.csv"
    table = pd.read_csv(csv)
    assert list(table.columns) == list(CSV_COLUMNS)
    assert list(table["backbone"]) == [
        "MobileNetV2",
        "DenseNet121",
        "EfficientNetB0",
        "NASNetLarge",
    ]
    assert list(table["status"]) == ["ok", "ok", "ok", "error"]
    assert table["rank"].iloc[:3].tolist() == [1, 2, 3] and pd.isna(table["rank"].iloc[3])
    assert table["val_acc"].iloc[1] == 0.7123  # full precision
    assert table["total_params"].iloc[1] == 1_234_567
    assert table["error"].iloc[3] == "ResourceExhaustedError: OOM when allocating tensor"
    assert table["error"].iloc[:3].isna().all()
    assert "1234567," in csv.read_text(encoding="utf-8")  # integers stay integers


def test_plots_are_real_pngs(mixed_report: Path) -> None:
    plots_dir = mixed_report / "plots"
    plots = list(plots_dir.iterdir())
    names = sorted(p.name for p in plots)
    assert names == sorted(
        [
            "history_DenseNet121.png",
            "history_EfficientNetB0.png",
            "history_MobileNetV2.png",
            "summary.png",
        ]
    )
    assert sorted(p.name for p in plots_dir.iterdir()) == names
    for plot in plots:
        data = plot.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n"), plot
        assert len(data) > 5_000, plot


def test_report_rebuilds_from_runs_file_with_latest_records(tmp_path: Path) -> None:
    append_record(tmp_path, error_record("A", "first try failed"))
    append_record(tmp_path, ok_record("A", 0.4))
    append_record(tmp_path, ok_record("A", 0.6))  # rerun: replaces both
    append_record(tmp_path, ok_record("B", 0.5))
    paths = write_report(tmp_path)
    table = pd.read_csv(paths["csv"])
    assert list(table["backbone"]) == ["A", "B"]
    assert table["val_acc"].tolist() == [0.6, 0.5]
    assert "## Failed" not in paths["markdown"].read_text(encoding="utf-8")


def test_same_backbone_under_two_protocols_gets_two_plots(tmp_path: Path) -> None:
    records = [ok_record("A", 0.6), ok_record("A", 0.5, image_size=224)]
    plots = write_report(tmp_path, records)["plots"]
    histories = [p for p in plots if p.name.startswith("history_")]
    assert len(histories) == 2 and len(set(histories)) == 2
    assert all(p.exists() for p in histories)


def test_empty_report(tmp_path: Path) -> None:
    paths = write_report(tmp_path)
    assert "no runs yet" in paths["markdown"].read_text(encoding="utf-8").lower()
    assert paths["plots"] == []
    assert not (tmp_path / "plots" / "summary.png").exists()
    table = pd.read_csv(paths["csv"])
    assert table.empty and list(table.columns) == list(CSV_COLUMNS)


def test_only_failures(tmp_path: Path) -> None:
    paths = write_report(tmp_path, [error_record("A", "boom")])
    text = paths["markdown"].read_text(encoding="utf-8")
    assert "- **A**: boom" in text
    assert "summary.png" not in text
    assert paths["plots"] == []
    assert pd.read_csv(paths["csv"])["status"].tolist() == ["error"]


def test_stale_plots_are_removed(tmp_path: Path) -> None:
    write_report(tmp_path, [ok_record("A", 0.5), ok_record("B", 0.4)])
    mine = tmp_path / "plots" / "mine.png"
    mine.write_bytes(b"not ours")
    write_report(tmp_path, [ok_record("A", 0.6)])
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "history_A.png",
        "mine.png",  # only files the reporter writes are removed
        "summary.png",
    ]
    write_report(tmp_path, [error_record("A", "boom")])
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["mine.png"]


# ---------------------------------------------------------------------------------------------
# safe_name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ResNet50", "ResNet50"),
        ("efficientnet_v2-b0.x", "efficientnet_v2-b0.x"),
        ("a b/c:d", "a_b_c_d"),
        ("../evil", "_evil"),
        (".hidden", "hidden"),
        ("...", "_"),
        ("", "_"),
        ("Modèle", "Mod_le"),
    ],
)
def test_safe_name(name: str, expected: str) -> None:
    assert safe_name(name) == expected


def test_safe_name_never_escapes_and_is_bounded() -> None:
    for name in ["../../etc/passwd", "/abs/path", "..\\win", "a" * 1000, "\n\t"]:
        cleaned = safe_name(name)
        assert cleaned and not cleaned.startswith(".")
        assert "/" not in cleaned and "\\" not in cleaned and os.sep not in cleaned
        assert len(cleaned) <= 200


def test_hostile_backbone_name_stays_in_plots(tmp_path: Path) -> None:
    plots = write_report(tmp_path / "out", [ok_record("../../evil", 0.5)])["plots"]
    plots_dir = (tmp_path / "out" / "plots").resolve()
    assert plots and all(p.resolve().parent == plots_dir for p in plots)
    assert list(tmp_path.iterdir()) == [tmp_path / "out"]


# ---------------------------------------------------------------------------------------------
# No TensorFlow


def test_report_imports_no_tensorflow_or_keras() -> None:
    # A fresh interpreter: this test process may already hold TensorFlow from other tests.
    code = (
        "import sys, bench.report; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')); "
        "assert not bad, bad"
    )
    path = os.pathsep.join(p for p in [str(REPO), os.environ.get("PYTHONPATH", "")] if p)
    env = {**os.environ, "PYTHONPATH": path}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert report.__name__ == "bench.report"
