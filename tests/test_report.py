"""The reporter: runs.jsonl in, one ranked and tested table per configuration, leaderboard.md /
leaderboard.csv / plots out."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import as_schema_1, make_row, read_rows

from bench import report, resampling, stats
from bench.report import (
    CSV_COLUMNS,
    LEADERBOARD_COLUMNS,
    MARKDOWN_COLUMNS,
    leaderboard,
    write_report,
)
from bench.report.columns import COLUMNS
from bench.report.markdown import leaderboard_markdown, provenance_line
from bench.report.plots import Plots
from bench.report.ranking import RESAMPLES, tables
from bench.report.words import (
    agreement_text,
    could_be_best_text,
    label,
    recommendation_text,
    title_parts,
)
from bench.result import RunResult
from bench.runlog import append_record

# one xdist worker runs this file: its module-scoped fixture is set up once
pytestmark = pytest.mark.xdist_group("report")


def ok_record(backbone: str, val: float, best: float | None = None, **overrides) -> dict:
    """A successful run, with a plausible 5-epoch history; `val` is the last epoch's accuracy
    on the split early stopping watched (the test file under lesson, else the holdout)."""
    best = val if best is None else best
    acc = [0.40, 0.55, 0.63, 0.70, 0.74]
    watched = "holdout" if overrides.get("protocol") == "holdout" else "test"
    fields = dict(
        backbone=backbone,
        status="ok",
        family="Family" + backbone[:3],
        **{f"{watched}_accuracy": val},
        best_epoch_accuracy=best,
        best_epoch=4,
        epochs_run=5,
        history={
            "accuracy": acc,
            f"{watched}_accuracy": [a - 0.1 for a in acc[:-1]] + [val],
            "loss": [1.4, 1.1, 0.9, 0.8, 0.7],
            f"{watched}_loss": [1.5, 1.2, 1.0, 0.95, 0.9],
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
        route="cached",
        weights="imagenet",
        seed=2,
        epochs=30,
        patience=5,
        batch_size=32,
        data="data/dataset_dollarstreet",
        n_train=878,
        n_test=98,
        n_classes=4,
        keras_version="3.15.1",
        tf_version="2.21.0",
        started_at="2025-01-01T00:00:00+00:00",
    )
    fields.update(overrides)
    return make_row(**fields)


def error_record(backbone: str, error: str, **overrides) -> dict:
    fields = dict(
        backbone=backbone,
        status="error",
        error=error,
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


# ---------------------------------------------------------------------------------------------
# The column table


def test_every_column_reads_a_field_runs_have() -> None:
    fields = set(RunResult.__dataclass_fields__)
    sources = {c.source for c in COLUMNS if c.source is not None}
    assert sources <= fields, sources - fields
    assert len({c.name for c in COLUMNS}) == len(COLUMNS)


def test_csv_columns_are_those_users_read() -> None:
    # leaderboard.csv is read by people's own scripts: a renamed or reordered column breaks them
    assert CSV_COLUMNS == (
        "rank", "backbone", "kind", "protocol", "seed", "holdout_accuracy", "test_accuracy",
        "ci_low", "ci_high", "n_eval", "balanced_accuracy", "macro_f1", "best_epoch_accuracy",
        "epochs",
        "trainable_params", "total_params", "extract_s", "s_per_epoch", "image_size",
        "preprocess", "weights", "route", "eval_split", "imagenet_top1", "group", "config_hash",
        "python_version", "keras_version", "tf_version", "numpy_version", "device",
        "weights_sha256", "data_checksum", "git_commit", "started_at", "status", "error",
        # added later, after every earlier column
        "table", "rank_low", "rank_high", "vs_best", "behind_at_least", "behind_at_most",
        "infer_ms", "gflops", "probe_linear_accuracy", "probe_linear_s", "probe_knn_accuracy",
        "probe_knn_s", "weights_file", "weights_substituted_for", "runtime", "runtime_version",
        "runtime_batch", "extract_img_s", "one_class", "data", "data_kind",
        # fine-tuning (--fine-tune)
        "frozen_accuracy", "gain", "gain_low", "gain_high", "gain_p", "fine_tune_epoch_s",
        "fine_tune_images_per_s", "peak_memory_mb",
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# leaderboard()


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
    assert top["test_accuracy"] == 0.90 and pd.isna(top["holdout_accuracy"])
    assert top["s_per_epoch"] == 1.25  # the runner's median, not recomputed
    assert top["epochs"] == 5
    assert top["trainable_params"] == 4_100 and top["total_params"] == 7_041_604
    assert top["extract_s"] == 12.345
    assert (top["image_size"], top["preprocess"], top["weights"], top["route"]) == (
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
    # no stored predictions, no ImageNet top-1: neither confusion matrices nor transfer plot
    assert paths["confusion"] == [] and paths["transfer"] is None
    assert paths["cost"] is None  # no inference times recorded


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
    assert cells(header) == list(MARKDOWN_COLUMNS)
    assert "## Table 1: lesson protocol" in text and "## Table 2" not in text
    rows = [line for line in lines if line.startswith("|") and cells(line)[0].isdigit()]
    assert [cells(r)[1] for r in rows] == ["MobileNetV2", "DenseNet121", "EfficientNetB0"]
    assert [cells(r)[0] for r in rows] == ["1", "2", "3"]
    dense = rows[1]
    assert "0.712" in dense and "0.7123" not in dense
    assert "4,100 / 1,234,567" in dense
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
    assert table["test_accuracy"].iloc[1] == 0.7123  # full precision
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
    assert table["test_accuracy"].tolist() == [0.6, 0.5]
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


def test_hostile_backbone_name_stays_in_plots(tmp_path: Path) -> None:
    plots = write_report(tmp_path / "out", [ok_record("../../evil", 0.5)])["plots"]
    plots_dir = (tmp_path / "out" / "plots").resolve()
    assert plots and all(p.resolve().parent == plots_dir for p in plots)
    assert list(tmp_path.iterdir()) == [tmp_path / "out"]


# ---------------------------------------------------------------------------------------------
# Trustworthy comparisons: seeds, intervals, ties, protocols, per-class, transfer, provenance

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
N_EVAL = 300
EVAL_LABELS = [i % len(CLASSES) for i in range(N_EVAL)]


def correct_first(k: int) -> list[bool]:
    """Right on the first k evaluation images, wrong on the rest."""
    return [i < k for i in range(N_EVAL)]


def predictions_for(correct: Sequence[bool], labels: Sequence[int] = EVAL_LABELS) -> list[int]:
    """Predictions right where correct says so, otherwise the next class."""
    return [y if ok else (y + 1) % len(CLASSES) for y, ok in zip(labels, correct, strict=True)]


def seeded_runs(
    backbone: str,
    accuracies: Sequence[float],
    correct: Sequence[bool] | Sequence[Sequence[bool]],
    first_seed: int = 2,
    **overrides,
) -> list[dict]:
    """One row per seed, as the runner writes them for `--seeds K`: predictions and scores filled.

    correct is one mask for every seed, or one mask per seed.
    """
    masks = correct if isinstance(correct[0], Sequence) else [correct] * len(accuracies)
    protocol = overrides.get("protocol", "lesson")
    rows = []
    for i, (accuracy, mask) in enumerate(zip(accuracies, masks, strict=True)):
        predictions = predictions_for(mask)
        n = len(CLASSES)
        fields = dict(
            seed=first_seed + i,
            n_test=N_EVAL,
            n_classes=n,
            eval_split="test",
            labels=EVAL_LABELS,
            predictions=predictions,
            class_names=CLASSES,
            per_class_accuracy=stats.per_class_accuracy(EVAL_LABELS, predictions, n).tolist(),
            balanced_accuracy=stats.balanced_accuracy(EVAL_LABELS, predictions, n),
            macro_f1=stats.macro_f1(EVAL_LABELS, predictions, n),
            group=f"{backbone}/{protocol}",
        )
        fields.update(overrides)
        rows.append(ok_record(backbone, accuracy, **fields))
    return rows


TOP_ACC = [0.80, 0.81, 0.79, 0.80, 0.82]
TIED_ACC = [0.79, 0.78, 0.80, 0.77, 0.79]
WORSE_ACC = [0.60, 0.61, 0.59, 0.62, 0.60]
# vs the top (right on images 0-239): 5 images only the top gets right (235-239), 2 only the
# tied one (240, 241): exact McNemar p = 2 * (C(7,0) + C(7,1) + C(7,2)) / 2^7 = 58/128.
TIED_MASK = [i < 235 or 240 <= i < 242 for i in range(N_EVAL)]
TIED_P = 58 / 128


@pytest.fixture(scope="module")
def seeded_records() -> list[dict]:
    """3 entries x 5 seeds: a top backbone, one tied with it, a baseline clearly worse."""
    return [
        *seeded_runs("dense", WORSE_ACC, correct_first(180), kind="baseline", family=None),
        *seeded_runs("MobileNet_0.25", TOP_ACC, correct_first(240), imagenet_top1=50.6),
        *seeded_runs("MobileNetV2", TIED_ACC, TIED_MASK, imagenet_top1=71.3),
    ]


@pytest.fixture(scope="module")
def seeded_paths(
    tmp_path_factory: pytest.TempPathFactory, seeded_records: list[dict]
) -> report.ReportPaths:
    """One report over seeded_records, written through runs.jsonl, shared (plots are slow)."""
    out = tmp_path_factory.mktemp("seeded")
    for record in seeded_records:
        append_record(out, record)
    return write_report(out)


@pytest.fixture(scope="module")
def seeded_report(seeded_paths: report.ReportPaths) -> Path:
    return seeded_paths["markdown"].parent


def table_rows(text: str, first_column: str = "rank") -> list[dict[str, str]]:
    """The rows of every markdown table whose first column is first_column, as dicts."""
    lines = text.splitlines()
    rows = []
    for i, line in enumerate(lines):
        if line.startswith("|") and cells(line)[0] == first_column:
            header = cells(line)
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append(dict(zip(header, cells(row), strict=True)))
    return rows


def _resampled(records: list[dict], order: Sequence[str]) -> resampling.Resampled:
    """The table's resampling, redone by hand from the records' predictions (rank order)."""
    correct, seeds = [], []
    for name in order:
        mine = [r for r in records if r["backbone"] == name]
        correct.append(np.array([np.equal(r["predictions"], r["labels"]) for r in mine]))
        seeds.append([r["seed"] for r in mine])
    return resampling.resample(correct, seeds, RESAMPLES, 0)


def test_seeds_are_one_entry_with_mean_and_sd(seeded_records: list[dict]) -> None:
    table = leaderboard(seeded_records)
    order = ["MobileNet_0.25", "MobileNetV2", "dense"]
    assert list(table["backbone"]) == order
    assert list(table["k"]) == [5, 5, 5]
    assert list(table["kind"]) == ["backbone", "backbone", "baseline"]
    res = _resampled(seeded_records, order)
    for i, ((_, row), accuracies) in enumerate(
            zip(table.iterrows(), [TOP_ACC, TIED_ACC, WORSE_ACC], strict=True)):
        assert row["test_accuracy"] == pytest.approx(np.mean(accuracies))
        assert row["test_accuracy_sd"] == pytest.approx(np.std(accuracies, ddof=1))
        # the interval: test images and seeds resampled, the table's one resampling
        assert (row["ci_low"], row["ci_high"]) == resampling.interval(res, i)
        assert row["ci_low"] < row["test_accuracy"] < row["ci_high"]
        assert row["n_eval"] == N_EVAL


def test_vs_best_comes_from_the_same_resampling(seeded_records: list[dict]) -> None:
    table = leaderboard(seeded_records).set_index("backbone")
    assert table.loc["MobileNet_0.25", "vs_best"] == "best"
    # 7 images apart out of 300: not shown worse; far behind: worse, by a bounded amount
    assert table.loc["MobileNetV2", "vs_best"] == "could be best"
    assert table.loc["dense", "vs_best"] == "worse"
    res = _resampled(seeded_records, ["MobileNet_0.25", "MobileNetV2", "dense"])
    verdicts = resampling.could_be_best(res)
    assert table.loc["dense", "behind_at_least"] == verdicts[2].behind_at_least
    assert 0 < table.loc["dense", "behind_at_least"] < 0.2  # the observed gap is 0.2
    assert table.loc["MobileNetV2", "behind_at_least"] <= 0
    bounds = resampling.within_margin(res, 0.02)
    assert table.loc["MobileNetV2", "behind_at_most"] == bounds[1].behind_at_most


def test_identical_entries_are_never_called_worse() -> None:
    rows = [r for i in range(6) for r in seeded_runs(f"E{i}", [0.8, 0.8, 0.8],
                                                     [correct_first(240)] * 3,
                                                     group=f"E{i}")]
    table = leaderboard(rows)
    assert set(table["vs_best"]) == {"best", "could be best"}


def test_seeded_markdown(seeded_report: Path) -> None:
    text = (seeded_report / "leaderboard.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("|") and cells(line)[0] == "rank")
    assert cells(header) == list(MARKDOWN_COLUMNS)
    assert len(MARKDOWN_COLUMNS) <= 10
    rows = table_rows(text)
    assert [r["backbone"] for r in rows] == ["MobileNet_0.25", "MobileNetV2", "dense"]
    top, tied, worse = rows
    frame = leaderboard(read_rows(seeded_report)).set_index("backbone")
    low, high = frame.loc["MobileNet_0.25", "ci_low"], frame.loc["MobileNet_0.25", "ci_high"]
    assert top["test_accuracy"] == f"0.804 ± 0.011 [{low:.3f}, {high:.3f}]"
    ranks = frame[["rank_low", "rank_high"]].to_numpy().tolist()
    assert [r["rank"] for r in rows] == [f"{i} ({low}–{high})"  # every row: even "3 (3–3)"
                                         for i, (low, high) in enumerate(ranks, start=1)]
    behind = frame.loc["dense", "behind_at_least"]
    assert (top["vs best"], tied["vs best"], worse["vs best"]) == (
        "best", "could be best", f"worse, by ≥ {100 * behind:.1f} points")
    assert top["params trainable / total"] == "4,100 / 7,041,604"
    details = table_rows(text, "backbone")
    assert [d["kind"] for d in details[:3]] == ["backbone", "backbone", "baseline"]
    assert [d["K"] for d in details[:3]] == ["5", "5", "5"]
    # balanced accuracy and macro-F1 of the stored predictions (every seed alike here)
    predictions = predictions_for(correct_first(240))
    balanced = stats.balanced_accuracy(EVAL_LABELS, predictions, len(CLASSES))
    assert details[0]["balanced_accuracy"] == f"{balanced:.3f}"
    f1 = stats.macro_f1(EVAL_LABELS, predictions, len(CLASSES))
    assert details[0]["macro_f1"] == f"{f1:.3f}"
    assert details[0]["epochs"] == "5.0"  # a mean over seeds: one decimal
    assert "holdout_accuracy" not in details[0]  # under lesson there is no holdout split
    assert "probe_linear_accuracy" not in details[0]  # no probes were run
    assert "seeds 2–6" in text
    # the answers on top, the method and what the table can resolve under it
    assert "**Could be best:** MobileNet_0.25, MobileNetV2; the 1 other is shown worse" in text
    method = next(line for line in lines if line.startswith("How to read it"))
    assert text.index(method) > text.index(header)
    for phrase in ("95 % interval", "other images of the same kind, with other seeds",
                   "4,000 resamples", "could be best", "never disagree"):
        assert phrase in method
    assert "With n = 300 test images and K = 5 seeds, this table tells two" in text
    for never in ("tied", "not distinguishable", "equal"):
        assert never not in text
    # per-class recall, with class names
    assert "### Per-class accuracy" in text
    per_class = next(line for line in lines if line.startswith("| backbone") and "bird" in line)
    assert cells(per_class) == ["backbone", *CLASSES]


def test_seeded_csv_has_one_line_per_run(seeded_report: Path) -> None:
    table = pd.read_csv(seeded_report / "leaderboard.csv")
    assert list(table.columns) == list(CSV_COLUMNS)
    assert "predictions" not in table.columns and "labels" not in table.columns
    assert len(table) == 15
    assert table["backbone"].tolist() == (
        ["MobileNet_0.25"] * 5 + ["MobileNetV2"] * 5 + ["dense"] * 5
    )
    assert table["rank"].tolist() == [1] * 5 + [2] * 5 + [3] * 5
    assert table["vs_best"].tolist() == ["best"] * 5 + ["could be best"] * 5 + ["worse"] * 5
    assert table["seed"].tolist() == [2, 3, 4, 5, 6] * 3
    assert table["test_accuracy"].tolist() == [*TOP_ACC, *TIED_ACC, *WORSE_ACC]
    assert table["holdout_accuracy"].isna().all()  # one number, one name: not repeated
    assert table["kind"].tolist()[-1] == "baseline" and table["protocol"].eq("lesson").all()
    # the interval is the entry's, on every one of its lines
    assert table["ci_low"][:5].nunique() == 1 and table["ci_low"][0] < 0.8 < table["ci_high"][0]
    assert table["n_eval"].eq(N_EVAL).all()


def test_seeded_plots(seeded_report: Path) -> None:
    plots = seeded_report / "plots"
    confusion = sorted(p.name for p in plots.glob("confusion_*.png"))
    assert confusion == [
        "confusion_MobileNetV2.png",
        "confusion_MobileNet_0.25.png",
        "confusion_dense.png",
    ]
    history = sorted(p.name for p in plots.glob("history_*.png"))
    assert history == [  # one per entry, its 5 seeds drawn together
        "history_MobileNetV2.png",
        "history_MobileNet_0.25.png",
        "history_dense.png",
    ]
    text = (seeded_report / "leaderboard.md").read_text(encoding="utf-8")
    assert "(plots/confusion_MobileNet_0.25.png)" in text


def test_write_report_returns_the_new_plots(seeded_paths: report.ReportPaths) -> None:
    plots = seeded_paths["markdown"].parent / "plots"
    assert seeded_paths["confusion"] == [
        plots / "confusion_MobileNet_0.25.png",  # leaderboard order
        plots / "confusion_MobileNetV2.png",
        plots / "confusion_dense.png",
    ]
    assert seeded_paths["transfer"] is None  # 2 backbones with an ImageNet top-1: no correlation
    assert "at least 3 pretrained backbones" in seeded_paths["markdown"].read_text(
        encoding="utf-8")
    assert seeded_paths["plots"][3:6] == seeded_paths["confusion"]  # after the 3 histories
    assert all(p.exists() for p in seeded_paths["plots"])


def test_comparison_uses_every_seed_not_the_lowest() -> None:
    # seed 2 of both is identical; seeds 3 and 4 of Other miss 40 images the top gets right
    top = seeded_runs("Top", [0.8] * 3, correct_first(240))
    other = seeded_runs("Other", [0.8, 0.67, 0.67], [correct_first(240), *[correct_first(200)] * 2])
    table = leaderboard([*top, *other]).set_index("backbone")
    assert table.loc["Other", "test_accuracy"] == pytest.approx((0.8 + 0.67 + 0.67) / 3)
    assert table.loc["Other", "ci_low"] < 0.8 * 1 / 3 + 0.67 * 2 / 3 < table.loc["Other", "ci_high"]


def test_comparison_needs_the_same_images_and_stored_predictions() -> None:
    top = seeded_runs("Top", [0.9], correct_first(240))
    shuffled = list(reversed(EVAL_LABELS))
    other = seeded_runs("Other", [0.5], correct_first(150), labels=shuffled)
    bare = seeded_runs("Bare", [0.4], correct_first(120), labels=[], predictions=[])
    table = leaderboard([*top, *other, *bare]).set_index("backbone")
    assert table.loc["Other", "vs_best"] == "n/a" and table.loc["Bare", "vs_best"] == "n/a"
    assert pd.isna(table.loc["Bare", "ci_low"]) and pd.isna(table.loc["Bare", "rank_low"])
    # the entry on other images has no interval either; both stay at their accuracy
    assert pd.isna(table.loc["Other", "rank_low"])
    # and Top, compared with nothing, has no rank interval: there is nothing to rank it against
    assert pd.isna(table.loc["Top", "rank_low"]) and table.loc["Top", "vs_best"] == "best"


def test_metrics_missing_from_rows_of_schema_1_are_computed_from_predictions() -> None:
    rows = [{k: v for k, v in r.items() if k != "schema"}
            for r in seeded_runs("A", [0.8], correct_first(240), balanced_accuracy=None,
                                 macro_f1=None)]
    predictions = predictions_for(correct_first(240))
    row = leaderboard(rows).iloc[0]
    assert row["balanced_accuracy"] == pytest.approx(
        stats.balanced_accuracy(EVAL_LABELS, predictions, len(CLASSES))
    )
    assert row["macro_f1"] == pytest.approx(stats.macro_f1(EVAL_LABELS, predictions, len(CLASSES)))


def test_grouping_follows_the_group_field_then_the_knobs() -> None:
    # no group field: the knobs without the seed decide
    plain = [ok_record("A", 0.5, seed=s) for s in (2, 3)] + [ok_record("A", 0.6, image_size=224)]
    table = leaderboard(plain)
    assert sorted(table["k"]) == [1, 2]
    # the runner's group field: same knobs, two groups (e.g. the data changed in between)
    grouped = [
        ok_record("A", 0.5, seed=2, group="aaaaaaaa11"),
        ok_record("A", 0.7, seed=3, group="aaaaaaaa11"),
        ok_record("A", 0.4, seed=4, group="bbbbbbbb22"),
    ]
    table = leaderboard(grouped)
    assert sorted(table["k"]) == [1, 2]
    assert table.iloc[0]["test_accuracy"] == pytest.approx(0.6)


def test_holdout_ranks_by_test_accuracy_and_shows_both(tmp_path: Path) -> None:
    # A looks better on its holdout split, B is better on the test file: B ranks first
    a = seeded_runs("A", [0.90, 0.92], correct_first(210), protocol="holdout", test_accuracy=0.70)
    b = seeded_runs("B", [0.80, 0.82], correct_first(225), protocol="holdout", test_accuracy=0.75)
    table = leaderboard([*a, *b])
    assert list(table["backbone"]) == ["B", "A"]
    assert list(table["test_accuracy"]) == pytest.approx([0.75, 0.70])
    assert list(table["holdout_accuracy"]) == pytest.approx([0.81, 0.91])
    # the interval is on the test file's predictions
    assert table["ci_low"][0] < 225 / N_EVAL < table["ci_high"][0]
    text = write_report(tmp_path, [*a, *b])["markdown"].read_text(encoding="utf-8")
    assert "## Table 1: holdout protocol" in text and "lesson protocol" not in text
    rows = table_rows(text)
    assert [r["backbone"] for r in rows] == ["B", "A"]
    assert rows[0]["test_accuracy"].startswith("0.750 ± 0.000 [")
    assert table_rows(text, "backbone")[0]["holdout_accuracy"] == "0.810 ± 0.014"  # details
    assert "`test_accuracy` is the accuracy on the test file, averaged" in text


def test_mixed_protocols_get_one_table_each(tmp_path: Path) -> None:
    lesson = [
        *seeded_runs("A", [0.8], correct_first(240)),
        *seeded_runs("B", [0.7], correct_first(210)),
    ]
    holdout = seeded_runs("A", [0.9], correct_first(200), protocol="holdout", test_accuracy=0.6)
    paths = write_report(tmp_path, [*holdout, *lesson])
    text = paths["markdown"].read_text(encoding="utf-8")
    assert text.index("## Table 1: **lesson protocol**") < text.index(
        "## Table 2: **holdout protocol**"
    )
    rows = table_rows(text)
    assert [(r["backbone"], r["rank"][0], r["vs best"].split(",")[0]) for r in rows] == [
        ("A", "1", "best"),
        ("B", "2", "worse"),
        ("A", "1", "best"),  # ranks restart per table; nothing is compared across them
    ]
    assert len(paths["confusion"]) == 3
    # the flattery of the test file is measured inside holdout runs, not across tables
    assert "What the lesson protocol inflates" not in text


def configured(backbone: str, accuracy: float, correct: Sequence[bool], **knobs) -> list[dict]:
    """A run as the runner writes it now: with its configuration (every knob but the seed)."""
    configuration = {"protocol": "lesson", "image_size": 160, "preprocess": "native",
                     "pooling": "max", "epochs": 30, "patience": 5, "batch_size": 32,
                     "end_to_end": False, "val_fraction": 0.2, "data_checksum": "ab" * 32}
    configuration.update(knobs)
    return seeded_runs(backbone, [accuracy], correct, configuration=configuration,
                       preprocess=configuration["preprocess"], group=f"{backbone}{knobs}")


def test_two_configurations_are_two_tables_with_their_own_ranks(tmp_path: Path) -> None:
    native = [*configured("A", 0.8, correct_first(240)), *configured("B", 0.6, correct_first(180))]
    lesson = [
        *configured("A", 0.5, correct_first(150), preprocess="lesson"),
        *configured("B", 0.7, correct_first(210), preprocess="lesson"),
    ]
    found = tables(RunResult.from_dict(r) for r in [*native, *lesson])
    assert [[(e.label, e.rank) for e in t.entries] for t in found] == [
        [("A", 1), ("B", 2)],
        [("B", 1), ("A", 2)],  # ranked within its own configuration only
    ]
    assert [t.configuration["preprocess"] for t in found] == ["native", "lesson"]
    # only the knob that differs stands out; the rest is said plainly
    assert [text for text, differs in title_parts(found[1].configuration, found[1].differing)
            if differs] == ["lesson preprocessing"]
    text = write_report(tmp_path, [*native, *lesson])["markdown"].read_text(encoding="utf-8")
    assert "## Table 1: lesson protocol, 160 px, **native preprocessing**" in text
    assert "## Table 2: lesson protocol, 160 px, **lesson preprocessing**" in text
    assert text.count("**Could be best:**") == 2


def test_title_says_the_configuration_in_words() -> None:
    holdout = {"protocol": "holdout", "val_fraction": 0.1, "image_size": "native",
               "end_to_end": True, "data_checksum": "0123456789abcdef"}
    assert [t for t, _ in title_parts(holdout)] == [
        "holdout protocol", "val fraction 0.1", "each backbone's native size", "end-to-end"]
    assert title_parts(holdout, {"data_checksum"})[-1] == ("data 01234567", True)


def cost_entries(**costs: tuple[float | None, int]) -> list[dict]:
    """Entries A (top), B (one image behind), C (far behind), with (infer_ms, params_total)."""
    masks = {"A": correct_first(240), "B": correct_first(239), "C": correct_first(120)}
    accuracies = {"A": 0.80, "B": 0.797, "C": 0.40}
    rows = []
    for name, (ms, params) in costs.items():
        rows += seeded_runs(name, [accuracies[name]], masks[name], infer_ms=ms, params_total=params)
    return rows


def test_recommendation_is_the_cheapest_entry_within_the_margin_of_the_best() -> None:
    rows = cost_entries(A=(10.0, 4_000_000), B=(2.5, 1_000_000), C=(0.5, 100_000))
    (table,) = tables(RunResult.from_dict(r) for r in rows)
    found = table.recommendation
    # C is cheaper still, but far behind: its bound exceeds the margin
    assert (found.best.label, found.chosen.label) == ("A", "B")
    assert (found.speedup, found.param_ratio) == pytest.approx((4.0, 4.0))
    behind = found.chosen.behind_at_most
    assert 1 / N_EVAL < behind <= 0.02  # at least its observed gap, within the margin
    assert recommendation_text(found) == (
        f"Cheapest within 2.0 points of the best: B — at most {100 * behind:.1f} points worse "
        "(95 %), 4.0× faster per image, 4.0× fewer parameters."
    )
    # a tighter margin than B's bound: no cheaper entry, and what would decide it
    (tight,) = tables((RunResult.from_dict(r) for r in rows), margin=behind / 2)
    assert tight.recommendation.chosen is tight.recommendation.best
    said = recommendation_text(tight.recommendation)
    assert said.startswith("No cheaper entry is shown within") and "B is observed within it" in said
    needed = tight.recommendation.needed
    assert needed.images > N_EVAL and f"about {needed.images:,} test images" in said


def test_recommendation_falls_back_to_parameters_and_can_be_the_best_itself() -> None:
    rows = cost_entries(A=(None, 4_000_000), B=(2.5, 8_000_000))
    (table,) = tables(RunResult.from_dict(r) for r in rows)
    found = table.recommendation
    assert found.cost == "params_total" and found.chosen is found.best  # fewer parameters
    assert recommendation_text(found) == (
        "Cheapest within 2.0 points of the best: A, the best entry: no entry compared with it "
        "has fewer parameters.")
    rows = cost_entries(A=(None, 4_000_000), B=(None, 1_000_000))
    (table,) = tables(RunResult.from_dict(r) for r in rows)
    assert table.recommendation.chosen.label == "B"
    assert table.recommendation.speedup is None
    assert recommendation_text(table.recommendation).endswith(", 4.0× fewer parameters.")


def test_a_control_that_predicts_one_class_is_marked() -> None:
    rows = seeded_runs("A", [0.8], correct_first(240), group="A/imagenet")
    constant = [0] * N_EVAL
    rows += seeded_runs("A", [0.1], correct_first(30), weights="random", group="A/random",
                        predictions=constant)
    (table,) = tables(RunResult.from_dict(r) for r in rows)
    random = next(e for e in table.entries if e.random_weights)
    assert random.one_class and "predicts one class" in label(random)
    assert table.entries[0].numbers["one_class"] is False


def test_pretraining_section_pairs_imagenet_with_random_weights(tmp_path: Path) -> None:
    rows = seeded_runs("A", [0.8], correct_first(240), group="A/imagenet")
    rows += seeded_runs("A", [0.4], correct_first(120), weights="random", group="A/random")
    text = write_report(tmp_path, rows)["markdown"].read_text(encoding="utf-8")
    assert "## What pretraining bought" in text
    (row,) = [r for r in table_rows(text, "backbone") if "difference" in r]
    assert (row["backbone"], row["difference"]) == ("A (weights=imagenet)", "+0.400")
    assert "weights=random" in row["against"]
    low, high = (float(x) for x in row["95 % interval"].strip("[]").split(","))
    assert 0 < low < 0.4 < high and row["p"] == "<0.001"


def test_weights_are_file_names_never_local_paths(tmp_path: Path) -> None:
    rows = seeded_runs("MobileNet_0.25", [0.8], correct_first(240),
                       weights="/home/someone/weights/mobilenet_2_5_224_tf_no_top.h5",
                       weights_file="mobilenet_2_5_224_tf_no_top.h5",
                       weights_substituted_for="mobilenet_2_5_160_tf_no_top.h5")
    paths = write_report(tmp_path, rows)
    text = paths["markdown"].read_text(encoding="utf-8")
    csv_text = paths["csv"].read_text(encoding="utf-8")
    assert "/home/someone" not in text and "/home/someone" not in csv_text
    details = table_rows(text, "backbone")[0]
    assert details["weights"] == (
        "mobilenet_2_5_224_tf_no_top.h5 (for mobilenet_2_5_160_tf_no_top.h5)"
    )
    line = pd.read_csv(paths["csv"]).iloc[0]
    assert line["weights"] == "mobilenet_2_5_224_tf_no_top.h5"
    assert line["weights_substituted_for"] == "mobilenet_2_5_160_tf_no_top.h5"


def test_probe_columns_appear_when_probes_ran(tmp_path: Path) -> None:
    rows = seeded_runs("A", [0.8], correct_first(240), probe_linear_accuracy=0.83,
                       probe_knn_accuracy=0.71)
    rows += seeded_runs("B", [0.7], correct_first(210))
    text = write_report(tmp_path, rows)["markdown"].read_text(encoding="utf-8")
    details = table_rows(text, "backbone")
    assert (details[0]["probe_linear_accuracy"], details[0]["probe_knn_accuracy"]) == (
        "0.830", "0.710")
    assert (details[1]["probe_linear_accuracy"], details[1]["probe_knn_accuracy"]) == ("—", "—")


TOP1 = {"MobileNet_0.25": 50.6, "MobileNetV2": 71.3, "DenseNet121": 75.0, "ResNet50": 74.9}


def transfer_records() -> list[dict]:
    accuracies = {
        "MobileNet_0.25": 0.60,
        "MobileNetV2": 0.70,
        "DenseNet121": 0.78,
        "ResNet50": 0.74,
    }
    rows = []
    for name, accuracy in accuracies.items():
        correct = correct_first(round(accuracy * N_EVAL))
        rows += seeded_runs(name, [accuracy], correct, imagenet_top1=TOP1[name])
    # a baseline has no ImageNet score and is left out of the correlation
    rows += seeded_runs("scratch-cnn", [0.4], correct_first(120), kind="baseline")
    return rows


def test_transfer_analysis(tmp_path: Path) -> None:
    paths = write_report(tmp_path, transfer_records())
    text = paths["markdown"].read_text(encoding="utf-8")
    assert "### Transfer analysis" in text
    result = stats.spearman(list(TOP1.values()), [0.60, 0.70, 0.78, 0.74])
    assert result.rho == pytest.approx(1.0)  # accuracies rank exactly as ImageNet top-1 does
    assert f"rho = {result.rho:.2f}, p = {result.p_value:.3g}, n = 4" in text
    assert "rho = 1.00" in text and "n = 4" in text
    assert paths["transfer"] == tmp_path / "plots" / "transfer.png"
    data = paths["transfer"].read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5_000
    assert "(plots/transfer.png)" in text
    assert paths["transfer"] in paths["plots"]


def test_transfer_analysis_needs_three_backbones(tmp_path: Path) -> None:
    records = [r for r in transfer_records() if r["backbone"] in ("MobileNetV2", "scratch-cnn")]
    records += seeded_runs("ResNet50", [0.5], correct_first(150))  # no ImageNet top-1 recorded
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "transfer.png").write_bytes(b"from an earlier report")
    paths = write_report(tmp_path, records)
    text = paths["markdown"].read_text(encoding="utf-8")
    assert "at least 3 pretrained backbones" in text and "this table has 1" in text
    assert paths["transfer"] is None
    assert not (tmp_path / "plots" / "transfer.png").exists()  # the stale one is removed


def test_provenance_line() -> None:
    same = dict(
        python_version="3.11.9",
        numpy_version="2.4.6",
        device="NVIDIA H200",
        git_commit="abc1234",
        data_checksum="f" * 64,
    )
    records = [RunResult(**ok_record(name, 0.5, **same)) for name in ("A", "B")]
    line = provenance_line(records)
    assert line == (
        "Provenance: Python 3.11.9, Keras 3.15.1, TensorFlow 2.21.0, numpy 2.4.6, "
        "device NVIDIA H200, git commit abc1234, data sha256 ffffffffffff…."
    )
    records.append(RunResult(**ok_record("C", 0.7, **{**same, "git_commit": "def5678",
                                                      "device": "CPU"})))
    line = provenance_line(records)
    assert "git commit mixed" in line and "device mixed" in line and "Python 3.11.9" in line


def test_provenance_in_the_report_and_csv(tmp_path: Path) -> None:
    record = ok_record("A", 0.5, python_version="3.11.9", git_commit="abc1234")
    paths = write_report(tmp_path, [record])
    assert "Provenance: Python 3.11.9, Keras 3.15.1" in paths["markdown"].read_text()
    table = pd.read_csv(paths["csv"])
    assert table["git_commit"][0] == "abc1234" and table["keras_version"][0] == "3.15.1"


OLD_FIELDS = (
    "backbone", "status", "error", "family", "val_accuracy", "best_val_accuracy", "best_epoch",
    "epochs_run", "history", "params_total", "params_trainable", "feature_width", "extract_s",
    "epoch_s", "epoch_times", "total_s", "image_size", "preprocess", "pooling", "path", "weights",
    "seed", "epochs", "patience", "batch_size", "data", "n_train", "n_val", "n_classes",
    "keras_version", "tf_version", "started_at", "notes",
)  # fmt: skip


def test_old_rows_without_the_new_fields_still_report(tmp_path: Path) -> None:
    old = [
        {k: v for k, v in as_schema_1(ok_record(name, acc)).items() if k in OLD_FIELDS}
        for name, acc in (("A", 0.5), ("B", 0.7))
    ]
    assert "protocol" not in old[0] and "kind" not in old[0] and "predictions" not in old[0]
    for record in old:
        append_record(tmp_path, record)
    text = write_report(tmp_path)["markdown"].read_text(encoding="utf-8")
    assert "## Table 1: lesson protocol" in text
    rows = table_rows(text)
    # no stored predictions: ranked by their recorded accuracy, compared with nothing
    assert [(r["backbone"], r["test_accuracy"], r["vs best"]) for r in rows] == [
        ("B", "0.700", "n/a"), ("A", "0.500", "n/a")]
    details = table_rows(text, "backbone")[0]
    assert details["kind"] == "backbone"
    assert details["balanced_accuracy"] == "—" and details["macro_f1"] == "—"
    assert "**Could be best:**" not in text  # no predictions: nothing to compare
    # a new row of the same run replaces the old; a key of a later version is ignored
    append_record(tmp_path, {**ok_record("A", 0.6), "a_field_of_a_later_version": [1, 2]})
    paths = write_report(tmp_path)
    text = paths["markdown"].read_text(encoding="utf-8")
    assert [r["backbone"] for r in table_rows(text)] == ["B", "A"]  # one table each
    assert "0.500" not in text and "0.600" in text
    assert paths["confusion"] == []
    table = pd.read_csv(paths["csv"])
    assert table["protocol"].tolist() == ["lesson", "lesson"]


def test_failed_seed_is_named(tmp_path: Path) -> None:
    records = [ok_record("A", 0.5, seed=2), error_record("A", "boom", seed=3)]
    text = write_report(tmp_path, records)["markdown"].read_text(encoding="utf-8")
    assert "- **A** (seed 3): boom" in text


def test_notes_repeated_by_seeds_are_listed_once(tmp_path: Path) -> None:
    records = [ok_record("A", 0.5, seed=s, notes=["same warning"]) for s in (2, 3, 4)]
    text = write_report(tmp_path, records)["markdown"].read_text(encoding="utf-8")
    assert text.count("same warning") == 1


# ---------------------------------------------------------------------------------------------
# What a learner reads: one entry, baselines, one name per number


def test_a_table_of_one_entry_says_there_is_nothing_to_compare(tmp_path: Path) -> None:
    rows = seeded_runs("A", [0.8], correct_first(240), infer_ms=2.0)
    text = write_report(tmp_path, rows)["markdown"].read_text(encoding="utf-8")
    assert "**Only A in this table:** nothing to compare it with." in text
    for never in ("Cheapest", "itself", "stored predictions", "could be compared"):
        assert never not in text
    (row,) = table_rows(text)
    assert (row["rank"], row["vs best"]) == ("1", "best")  # no rank interval to give
    assert row["test_accuracy"].startswith("0.800 [")  # its accuracy still has its interval


def test_one_entry_compared_among_several_says_why_the_others_are_not() -> None:
    rows = [*seeded_runs("A", [0.8], correct_first(240)),
            *seeded_runs("Bare", [0.4], correct_first(120), labels=[], predictions=[])]
    (table,) = tables(RunResult.from_dict(r) for r in rows)
    assert could_be_best_text(table) == (
        "Only A could be compared: the others stored no predictions on these test images (`n/a`).")
    assert table.recommendation is None


def test_runs_without_extraction_show_no_extraction_time(tmp_path: Path) -> None:
    rows = [*seeded_runs("A", [0.8], correct_first(240)),
            *seeded_runs("dense", [0.5], correct_first(150), kind="baseline",
                         route="from-scratch", extract_s=0.0),
            *seeded_runs("B", [0.7], correct_first(210), route="end-to-end", extract_s=0.0)]
    paths = write_report(tmp_path, rows)
    shown = {r["backbone"]: r["extract_s"]
             for r in table_rows(paths["markdown"].read_text(encoding="utf-8"))}
    assert shown == {"A": "12.3", "B": "—", "dense": "—"}
    csv = pd.read_csv(paths["csv"]).set_index("backbone")
    assert csv.loc["A", "extract_s"] == 12.345
    assert csv["extract_s"].drop("A").isna().all()


def test_the_csv_says_which_data_each_run_saw(tmp_path: Path) -> None:
    rows = [ok_record("A", 0.5, data="photos/pets", data_kind="folder"),
            ok_record("B", 0.4, data="tfds:beans", data_kind="tfds")]
    table = pd.read_csv(write_report(tmp_path, rows)["csv"]).set_index("backbone")
    assert table.loc["A", ["data", "data_kind"]].tolist() == ["photos/pets", "folder"]
    assert table.loc["B", ["data", "data_kind"]].tolist() == ["tfds:beans", "tfds"]


def test_every_accuracy_has_the_name_runs_jsonl_gives_it(seeded_report: Path) -> None:
    fields = set(RunResult.__dataclass_fields__)
    csv_accuracies = [c for c in CSV_COLUMNS if "acc" in c]
    assert csv_accuracies and all(c in fields for c in csv_accuracies), csv_accuracies
    text = (seeded_report / "leaderboard.md").read_text(encoding="utf-8")
    headers = [h for line in text.splitlines() if line.startswith("| ") for h in cells(line)]
    assert "test_accuracy" in headers
    assert not {"accuracy", "val_acc", "test_acc", "val_accuracy"} & set(headers)


# ---------------------------------------------------------------------------------------------
# Fine-tuned tables (--fine-tune): a table of their own, each entry beside its frozen stage

FT_SEEDS = (2, 3, 4)
FT_SPREAD = (0, 3, -3)  # images right per seed around an entry's count: seeds vary a little


def fine_tuned_runs(backbone: str, frozen: int, tuned: int, seeds: Sequence[int] = FT_SEEDS,
                    **overrides) -> list[dict]:
    """A backbone's frozen rows and the fine-tuned rows continuing them, seed by seed: right on
    the first `frozen` (frozen stage) and `tuned` (fine-tuned) test images, give or take a few
    per seed."""
    rows = []
    for seed, spread in zip(seeds, FT_SPREAD, strict=False):
        before, after = correct_first(frozen + spread), correct_first(tuned + spread)
        rows += seeded_runs(backbone, [np.mean(before)], before, first_seed=seed,
                            peak_memory_mb=900.0, **overrides)
        rows += seeded_runs(
            backbone, [np.mean(after)], after, first_seed=seed, fine_tune=True,
            fine_tune_epochs=10, route="fine-tuned", stage="fine-tuned",
            group=f"{backbone}/fine-tuned", frozen_accuracy=float(np.mean(before)),
            frozen_predictions=predictions_for(before), frozen_config_hash=f"{backbone}{seed}",
            fine_tune_epoch_s=4.25, fine_tune_images_per_s=206.6, peak_memory_mb=1500.0,
            **overrides)
    return rows


def _sections(text: str) -> dict[str, str]:
    """The markdown's `## ` sections by their heading."""
    return {part.split("\n", 1)[0]: part for part in ("\n" + text).split("\n## ")[1:]}


def _fine_tuned_section(text: str) -> str:
    return next(body for head, body in _sections(text).items() if "**fine-tuned**" in head)


@pytest.fixture(scope="module")
def fine_tuned_paths(tmp_path_factory: pytest.TempPathFactory) -> report.ReportPaths:
    """Three backbones frozen and fine-tuned, 3 seeds, far apart and in the same order."""
    rows = [*fine_tuned_runs("Small", 90, 120, infer_ms=1.0),
            *fine_tuned_runs("Mid", 150, 190, infer_ms=3.0),
            *fine_tuned_runs("Large", 210, 240, infer_ms=9.0)]
    return write_report(tmp_path_factory.mktemp("fine-tuned"), rows)


def test_fine_tuned_rows_form_their_own_table_beside_their_frozen_stage(
        fine_tuned_paths: report.ReportPaths) -> None:
    text = fine_tuned_paths["markdown"].read_text(encoding="utf-8")
    section = _fine_tuned_section(text)
    assert "**fine-tuned**, every layer fine-tuned" in section.splitlines()[0]
    assert [r["backbone"] for r in table_rows(section)] == ["Large", "Mid", "Small"]
    assert "### Fine-tuned against the frozen stage" in section
    rows = {r["backbone"]: r for r in table_rows(section, "backbone") if "gain" in r}
    assert list(rows) == ["Large", "Mid", "Small"]
    assert rows["Mid"]["K"] == "3" and rows["Mid"]["frozen_accuracy"] == "0.500"
    assert rows["Mid"]["test_accuracy"].startswith("0.633 ± 0.010 [")
    # paired per image and seed: every seed's fine-tuned run is right on 40 more images
    gain = re.fullmatch(r"\+0\.133 \[\+(0\.\d{3}), \+(0\.\d{3})\]", rows["Mid"]["gain"])
    assert gain and 0 < float(gain[1]) < 0.133 < float(gain[2])
    assert float(rows["Mid"]["gain_p"]) < 0.05
    # the fine-tuning numbers in the fine-tuned table's details only: frozen tables as before
    details = {r["backbone"]: r for r in table_rows(section, "backbone") if "kind" in r}
    assert (details["Mid"]["fine_tune_epoch_s"], details["Mid"]["fine_tune_images_per_s"],
            details["Mid"]["peak_memory_mb"], details["Mid"]["route"]) == (
        "4.25", "207", "1500", "fine-tuned")
    frozen = next(body for head, body in _sections(text).items() if head.startswith("Table 1"))
    assert "fine_tune_epoch_s" not in frozen and "peak_memory_mb" not in frozen
    assert "frozen stage" not in frozen and "gain" not in frozen


def test_the_gain_comes_from_one_resampling_of_both_stages(
        fine_tuned_paths: report.ReportPaths) -> None:
    """Redone by hand: every fine-tuned entry, then every frozen stage, resampled at once."""
    (table,) = [t for t in tables(RunResult.from_dict(r) for r in _ft_rows()) if t.fine_tuned]
    tuned = [e.correctness(np.array(EVAL_LABELS)) for e in table.entries]
    frozen = [np.array([np.equal(r.frozen_predictions, r.labels) for r in e.runs])
              for e in table.entries]
    res = resampling.resample([*tuned, *frozen], [list(FT_SEEDS)] * 6, RESAMPLES, 0)
    lines = pd.read_csv(fine_tuned_paths["csv"])
    fine_tuned = lines[lines["route"] == "fine-tuned"]
    for i, entry in enumerate(table.entries):
        want = resampling.difference(res, i, 3 + i)
        mine = fine_tuned[fine_tuned["backbone"] == entry.first.backbone]
        for column, value in (("gain", want.estimate), ("gain_low", want.low),
                              ("gain_high", want.high), ("gain_p", want.p_value)):
            assert mine[column].tolist() == pytest.approx([value] * 3), column
    assert lines["gain"].notna().sum() == 9  # the fine-tuned runs' lines, not the frozen ones
    mid = fine_tuned[fine_tuned["backbone"] == "Mid"]
    assert mid["frozen_accuracy"].tolist() == pytest.approx([150 / 300, 153 / 300, 147 / 300])
    assert mid["fine_tune_epoch_s"].tolist() == [4.25] * 3
    assert mid["fine_tune_images_per_s"].tolist() == [206.6] * 3
    assert sorted(lines["peak_memory_mb"]) == [900.0] * 9 + [1500.0] * 9  # every run's


def _ft_rows() -> list[dict]:
    return [*fine_tuned_runs("Small", 90, 120, infer_ms=1.0),
            *fine_tuned_runs("Mid", 150, 190, infer_ms=3.0),
            *fine_tuned_runs("Large", 210, 240, infer_ms=9.0)]


def _agreement_text(rows: list[dict]) -> str:
    (table,) = [t for t in tables(RunResult.from_dict(r) for r in rows) if t.fine_tuned]
    return agreement_text(table)


def test_the_frozen_ranking_predicted_the_fine_tuned_one(
        fine_tuned_paths: report.ReportPaths) -> None:
    section = _fine_tuned_section(fine_tuned_paths["markdown"].read_text(encoding="utf-8"))
    heading = "### Did the frozen ranking predict the fine-tuned one?"
    said = section.split(heading, 1)[1].split("###", 1)[0]
    assert "rho = 1.00, 95 % interval [1.00, 1.00]" in said
    assert "The frozen ranking predicted the fine-tuned one: the interval excludes 0" in said
    assert "A correlation is not the same ranking" in said


def test_a_reversed_ranking_is_said_to_run_against() -> None:
    rows = [*fine_tuned_runs("Small", 90, 240), *fine_tuned_runs("Mid", 150, 190),
            *fine_tuned_runs("Large", 210, 120)]
    text = _agreement_text(rows)
    assert "rho = -1.00" in text and "ran against the frozen one" in text
    assert "predicted" not in text


def test_an_untold_order_is_not_shown_either_way() -> None:
    # three backbones a few images apart in both stages: the order is not in the data
    rows = [*fine_tuned_runs("A", 150, 180), *fine_tuned_runs("B", 152, 182),
            *fine_tuned_runs("C", 154, 184)]
    text = _agreement_text(rows)
    low, high = (float(x) for x in re.search(r"interval \[(-?[\d.]+), (-?[\d.]+)\]", text).groups())
    assert low <= 0 <= high
    assert "Not shown: the interval includes 0" in text and "no evidence that it does not" in text
    for never in ("predicted the fine-tuned", "ran against", "same ranking"):
        assert never not in text


def test_the_correlation_needs_three_backbones_and_two_seeds() -> None:
    two = [*fine_tuned_runs("Small", 90, 120), *fine_tuned_runs("Large", 210, 240)]
    assert _agreement_text(two).startswith(
        "Omitted: a rank correlation needs at least 3 fine-tuned backbones")
    one_seed = [r for r in _ft_rows() if r["seed"] == 2]
    assert _agreement_text(one_seed).startswith("Omitted: it needs at least 2 seeds per backbone")
    without = [{**r, "frozen_predictions": []} if r["backbone"] == "Small" else r
               for r in _ft_rows()]
    assert "this table has 3 (2 with their frozen stage's predictions)" in _agreement_text(without)


def test_frozen_tables_read_as_before_beside_a_fine_tuned_one() -> None:
    def first_table(runs: list[RunResult]) -> str:
        text = leaderboard_markdown(runs, tables(runs), Plots(), Path("."))
        return next(body for head, body in _sections(text).items() if head.startswith("Table 1"))

    frozen = [RunResult.from_dict(r) for r in _ft_rows() if r["stage"] is None]
    everything = [RunResult.from_dict(r) for r in _ft_rows()]
    assert first_table(everything) == first_table(frozen)
