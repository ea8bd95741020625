"""Every column of every table, declared once: where its value comes from, its type, its format
and the tables that show it. The renderers read this table and nothing else."""

from __future__ import annotations

from dataclasses import dataclass

FRAME = "frame"  # leaderboard(): one row per entry (a backbone's runs over seeds), unformatted
CSV = "csv"  # leaderboard.csv: one line per run (every seed), full precision
MARKDOWN = "markdown"  # leaderboard.md: one table per protocol, every number formatted
ALL = frozenset({FRAME, CSV, MARKDOWN})

MEAN = "mean"  # an entry's value is the mean over its seeds
FIRST = "first"  # the same for every seed: the lowest seed's


@dataclass(frozen=True)
class Column:
    name: str  # the header, in every table that shows it
    source: str | None = None  # RunResult field of a run's value; None: the report computes it
    dtype: str = "object"  # "Int64" | "float64" | "object" (pandas)
    fmt: str = ""  # markdown: format spec of a number; "" writes the value as text
    shown: frozenset[str] = ALL
    per_entry: str = FIRST  # MEAN or FIRST: how the runs of an entry make its value

    @property
    def numeric(self) -> bool:
        return self.dtype != "object"


def _only(*tables: str) -> frozenset[str]:
    return frozenset(tables)


# Fields the csv copies as they are: how each run was made and identified.
_CSV_PROVENANCE = (
    "group", "config_hash", "python_version", "keras_version", "tf_version", "numpy_version",
    "device", "weights_sha256", "data_checksum", "git_commit", "started_at", "status",
)  # fmt: skip

COLUMNS: tuple[Column, ...] = (
    Column("rank", dtype="Int64", fmt="d"),  # within its protocol (in the csv: of the run's entry)
    Column("backbone", "backbone"),
    Column("kind", "kind"),  # "backbone" | "baseline"
    Column("protocol", "protocol"),
    Column("k", dtype="Int64", shown=_only(FRAME)),  # seeds averaged
    Column("K", dtype="Int64", shown=_only(MARKDOWN)),
    Column("seed", "seed", "Int64", shown=_only(CSV)),
    # last epoch under lesson; under holdout the holdout split of the training set
    Column("val_acc", "val_accuracy", "float64", per_entry=MEAN),
    Column("val_acc_sd", dtype="float64", shown=_only(FRAME)),
    Column("test_acc", "test_accuracy", "float64", per_entry=MEAN),  # holdout only
    Column("test_acc_sd", dtype="float64", shown=_only(FRAME)),
    # Wilson interval of the ranking accuracy (val under lesson, test under holdout)
    Column("ci_low", dtype="float64", shown=_only(FRAME, CSV)),
    Column("ci_high", dtype="float64", shown=_only(FRAME, CSV)),
    Column("95% CI", shown=_only(MARKDOWN)),
    # images the accuracy, the interval and the McNemar test are computed on
    Column("n_eval", dtype="Int64", shown=_only(FRAME, CSV)),
    # "top" | "tied" | "worse" | "better" | "n/a" | "n/a: different images"
    Column("vs_top", shown=_only(FRAME)),
    Column("p_value", dtype="float64", shown=_only(FRAME)),  # exact McNemar vs the top entry
    Column("vs top", shown=_only(MARKDOWN)),  # vs_top with its p-value
    # per-class summaries, cost and how the run was made
    Column("balanced_acc", "balanced_accuracy", "float64", ".3f", per_entry=MEAN),
    Column("macro_f1", "macro_f1", "float64", ".3f", per_entry=MEAN),
    Column("best_val_acc", "best_val_accuracy", "float64", ".3f", per_entry=MEAN),
    Column("epochs", "epochs_run", "Int64", per_entry=MEAN),
    Column("trainable_params", "params_trainable", "Int64", ","),
    Column("total_params", "params_total", "Int64", ","),
    Column("extract_s", "extract_s", "float64", ".1f", per_entry=MEAN),
    Column("s_per_epoch", "epoch_s", "float64", ".2f", per_entry=MEAN),
    Column("image_size", "image_size", "Int64", "d"),
    Column("preprocess", "preprocess"),
    Column("weights", "weights"),
    Column("path", "path"),
    # the csv's provenance (lists such as predictions are left out)
    Column("eval_split", "eval_split", shown=_only(CSV)),
    Column("imagenet_top1", "imagenet_top1", "float64", shown=_only(CSV)),
    *(Column(name, name, shown=_only(CSV)) for name in _CSV_PROVENANCE),
    Column("error", "error", shown=_only(CSV)),  # on one line
)
BY_NAME: dict[str, Column] = {c.name: c for c in COLUMNS}


def columns_of(table: str) -> tuple[Column, ...]:
    """The columns a table shows, in table order."""
    return tuple(c for c in COLUMNS if table in c.shown)


LEADERBOARD_COLUMNS: tuple[str, ...] = tuple(c.name for c in columns_of(FRAME))
CSV_COLUMNS: tuple[str, ...] = tuple(c.name for c in columns_of(CSV))
