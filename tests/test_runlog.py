"""runs.jsonl: durable appends, tolerant reads, the latest row of each run, safe file names."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import as_schema_1, make_row

from bench.result import SCHEMA, RunResult
from bench.runlog import (
    RUNS_FILE,
    append_record,
    group_key,
    latest_records,
    read_records,
    upgrade,
    upgrade_log,
)


def row(backbone: str, val: float = 0.5, **overrides) -> dict:
    """A stored row: a successful run under the lesson's protocol."""
    fields = dict(
        backbone=backbone,
        status="ok",
        test_accuracy=val,
        epochs_run=5,
        history={"test_loss": [1.5, 1.2, 1.0]},
        image_size=160,
        preprocess="native",
        pooling="max",
        route="cached",
        weights="imagenet",
        seed=2,
        epochs=30,
        patience=5,
        batch_size=32,
        data="data/dataset_dollarstreet",
    )
    fields.update(overrides)
    return make_row(**fields)


def run(backbone: str, val: float = 0.5, **overrides) -> RunResult:
    return RunResult.from_dict(row(backbone, val, **overrides))


# ---------------------------------------------------------------------------------------------
# append and read


def test_append_read_round_trip(tmp_path: Path) -> None:
    records = [row("DenseNet121", 0.7), row("NASNetLarge", status="error", error="OOM")]
    for record in records:
        path = append_record(tmp_path / "new" / "dir", record)
    assert path == tmp_path / "new" / "dir" / RUNS_FILE
    assert read_records(tmp_path / "new" / "dir") == records


def test_append_writes_one_sorted_json_line_per_record(tmp_path: Path) -> None:
    records = [row(f"Model{i}", 0.5 + i / 10) for i in range(3)]
    for record in records:
        append_record(tmp_path, record)
    text = (tmp_path / RUNS_FILE).read_text(encoding="utf-8")
    assert text.endswith("\n")
    lines = text.split("\n")[:-1]
    assert lines == [json.dumps(record, sort_keys=True) for record in records]


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
    record = row("A")
    append_record(tmp_path, record)
    assert [name for name, _ in calls] == ["write", "fsync"]
    assert calls[0][1] == (json.dumps(record, sort_keys=True) + "\n").encode()


def test_missing_file_reads_as_no_records(tmp_path: Path) -> None:
    assert read_records(tmp_path) == []
    assert read_records(tmp_path / "does-not-exist") == []


def test_blank_lines_are_ignored(tmp_path: Path) -> None:
    record = row("VGG16", 0.6)
    (tmp_path / RUNS_FILE).write_text("\n" + json.dumps(record) + "\n\n   \n", encoding="utf-8")
    assert read_records(tmp_path) == [record]


def test_torn_last_line_is_skipped_with_a_warning(tmp_path: Path) -> None:
    first, second = row("A", 0.5), row("B", 0.6)
    append_record(tmp_path, first)
    append_record(tmp_path, second)
    with (tmp_path / RUNS_FILE).open("a", encoding="utf-8") as f:
        f.write(json.dumps(row("C", 0.7))[:40])  # killed mid-write: no newline
    with pytest.warns(UserWarning, match=r"runs\.jsonl:3"):
        assert read_records(tmp_path) == [first, second]


def test_append_after_torn_line_keeps_the_file_readable(tmp_path: Path) -> None:
    first, third = row("A", 0.5), row("C", 0.7)
    append_record(tmp_path, first)
    with (tmp_path / RUNS_FILE).open("a", encoding="utf-8") as f:
        f.write('{"backbone": "B", "sta')
    with pytest.warns(UserWarning, match="torn"):
        append_record(tmp_path, third)
    assert read_records(tmp_path) == [first, third]


def test_append_after_complete_line_without_newline_keeps_it(tmp_path: Path) -> None:
    first, second = row("A", 0.5), row("B", 0.6)
    (tmp_path / RUNS_FILE).write_text(json.dumps(first), encoding="utf-8")  # hand-edited file
    append_record(tmp_path, second)
    assert read_records(tmp_path) == [first, second]


@pytest.mark.parametrize("bad", ['{"backbone": "B", "sta', "[1, 2]", "not json"])
def test_invalid_middle_line_is_skipped_with_its_line_number(tmp_path: Path, bad: str) -> None:
    lines = [json.dumps(row("A", 0.5)), "", bad, json.dumps(row("C", 0.7))]
    (tmp_path / RUNS_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.warns(UserWarning, match=r"runs\.jsonl:3"):
        assert read_records(tmp_path) == [row("A", 0.5), row("C", 0.7)]


def test_nan_and_infinity_are_written_as_null(tmp_path: Path) -> None:
    record = row("A", math.nan, best_epoch_accuracy=math.inf)
    record["history"]["test_loss"][2] = -math.inf
    append_record(tmp_path, record)
    text = (tmp_path / RUNS_FILE).read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text
    back = json.loads(text)  # strict parsers must accept it too
    assert back["test_accuracy"] is None
    assert back["best_epoch_accuracy"] is None
    assert back["history"]["test_loss"] == [1.5, 1.2, None]


def test_numpy_values_are_written_as_plain_json(tmp_path: Path) -> None:
    record = row("A", 0.5)
    record["test_accuracy"] = np.float32(0.5)
    record["epochs_run"] = np.int64(5)
    record["history"]["accuracy"] = np.array([0.1, np.nan])
    append_record(tmp_path, record)
    back = read_records(tmp_path)[0]
    assert back["test_accuracy"] == 0.5 and back["epochs_run"] == 5
    assert back["history"]["accuracy"] == [0.1, None]


# ---------------------------------------------------------------------------------------------
# Rows as RunResults


def test_rows_of_schema_1_read_with_the_defaults_of_fields_added_later() -> None:
    old = {k: v for k, v in as_schema_1(row("A")).items() if k not in ("protocol", "kind", "notes")}
    result = RunResult.from_dict(upgrade({**old, "a_field_of_a_later_version": 1}))
    assert (result.protocol, result.kind, result.notes, result.schema) == (
        "lesson", "backbone", [], SCHEMA)
    # null where the field has a default means the default too; null stays where None is one
    nulled = RunResult.from_dict(upgrade({**old, "protocol": None, "notes": None,
                                          "val_accuracy": None}))
    assert (nulled.protocol, nulled.notes, nulled.test_accuracy) == ("lesson", [], None)
    assert nulled.config_hash and nulled.group and nulled.configuration


def test_a_row_of_the_current_schema_is_not_touched() -> None:
    record = row("A")
    assert upgrade(record) is record


def old_runs(*records: dict) -> list[RunResult]:
    return [RunResult.from_dict(r) for r in upgrade_log(list(records))]


def test_latest_records_keeps_the_last_of_each_run() -> None:
    failed = run("A", status="error", error="boom")
    rerun = run("A", 0.8)
    other_size = run("A", 0.6, image_size=224)
    b = run("B", 0.7)
    b_lesson = run("B", 0.3, preprocess="lesson")
    kept = latest_records([failed, b, other_size, rerun, b_lesson])
    assert kept == [b, other_size, rerun, b_lesson]


@pytest.mark.parametrize(
    ("knob", "value"),
    [
        ("image_size", 224),
        ("preprocess", "lesson"),
        ("pooling", "avg"),
        ("weights", "random"),
        ("seed", 3),
        ("route", "end-to-end"),
        ("epochs", 10),
        ("patience", 0),
        ("batch_size", 16),
        ("data", "other"),
        ("protocol", "holdout"),
    ],
)
def test_rows_of_schema_1_without_a_hash_are_told_apart_by_every_knob(knob: str,
                                                                     value: object) -> None:
    base, variant = as_schema_1(row("A", 0.5)), as_schema_1(row("A", 0.6, **{knob: value}))
    kept = latest_records(old_runs(base, variant))
    assert [r.watched_accuracy for r in kept] == [0.5, 0.6]
    kept = latest_records(old_runs(base, variant, base))
    assert [r.watched_accuracy for r in kept] == [0.6, 0.5]


def test_latest_records_keeps_every_seed_and_the_last_rerun() -> None:
    first, second, rerun = run("A", 0.5, seed=2), run("A", 0.6, seed=3), run("A", 0.7, seed=2)
    assert latest_records([first, second, rerun]) == [second, rerun]


def test_the_config_hash_decides_where_rows_have_one() -> None:
    old = as_schema_1(row("A", 0.5))  # written before the hash existed
    new = row("A", 0.6, config_hash="h-frac-0.2")  # the same run, rerun: replaces it
    other = row("A", 0.7, config_hash="h-frac-0.3")  # e.g. another --val-fraction: kept
    rerun = row("A", 0.8, config_hash="h-frac-0.2")  # replaces new

    def kept(*records):
        return [r.test_accuracy for r in latest_records(old_runs(*records))]

    assert kept(old, new) == [0.6]
    assert kept(new, old) == [0.5]
    assert kept(old, new, other) == [0.6, 0.7]
    assert kept(old, new, other, rerun) == [0.7, 0.8]
    # the hash covers the data's checksum, not its folder: a moved data set is the same run
    moved = row("A", 0.9, config_hash="h-frac-0.3", data="elsewhere")
    assert kept(other, moved) == [0.9]
    # ... and a row without a hash is the run of a hashed row with its own knobs only
    assert kept(moved, old) == [0.9, 0.5]


def test_group_key_prefers_the_runner_group_to_the_knobs() -> None:
    assert group_key(run("A", seed=2)) == group_key(run("A", seed=3))
    assert group_key(run("A")) != group_key(run("A", image_size=224))
    assert group_key(run("A", group="g1")) == group_key(run("A", group="g1", data="moved"))
    assert group_key(run("A", group="g1")) != group_key(run("A", group="g2"))
    assert group_key(run("A", group="g1")) != group_key(run("B", group="g1"))


# --- rows already on users' disks ------------------------------------------------------------

FIXTURE = Path(__file__).parent / "fixtures" / "results-efb0071"


def test_a_results_folder_of_an_earlier_version_still_reports(tmp_path: Path) -> None:
    """runs.jsonl as bench wrote it at efb0071 (schema 1, the old names) reports through
    runlog.upgrade: leaderboard-now.md is what this version says of it (regenerated on purpose
    when the report changes: BENCH_UPDATE_GOLDEN=1), numbers within their last printed digit.
    Until the statistics changed, the report equalled efb0071's own (leaderboard.md)."""
    from conftest import board_differences

    from bench.report import write_report

    (tmp_path / RUNS_FILE).write_bytes((FIXTURE / RUNS_FILE).read_bytes())
    written = write_report(tmp_path)["markdown"].read_text()
    expected = FIXTURE / "leaderboard-now.md"
    if os.environ.get("BENCH_UPDATE_GOLDEN"):
        expected.write_text(written)
    assert not board_differences(written, expected.read_text())
    assert "## Table 2: **holdout protocol**" in written and "scratch-cnn" in written
