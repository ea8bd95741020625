"""Every column of every table, declared once: where its value comes from, its type, its format
and the tables that show it. The renderers read this table and nothing else."""

from __future__ import annotations

from dataclasses import dataclass

FRAME = "frame"  # leaderboard(): one row per entry (a backbone's runs over seeds), unformatted
CSV = "csv"  # leaderboard.csv: one line per run (every seed), full precision
MARKDOWN = "markdown"  # leaderboard.md's main table, one per configuration, formatted
DETAILS = "details"  # leaderboard.md's details table under each main table
STAGES = "stages"  # leaderboard.md's fine-tuned entries against their frozen stage
ALL = frozenset({FRAME, CSV, MARKDOWN, DETAILS, STAGES})

MEAN = "mean"  # an entry's value is the mean over its seeds
FIRST = "first"  # the same for every seed: the lowest seed's
ENTRY = "entry"  # computed for the entry (rank, tests): each of its runs' csv lines repeats it


@dataclass(frozen=True)
class Column:
    name: str  # the header, in every table that shows it
    source: str | None = None  # RunResult field of a run's value; None: the report computes it
    dtype: str = "object"  # "Int64" | "float64" | "object" (pandas)
    fmt: str = ""  # markdown: format spec of a number; "" writes the value as text
    shown: frozenset[str] = ALL
    per_entry: str = FIRST  # MEAN, FIRST or ENTRY: how an entry's value is made
    optional: bool = False  # markdown leaves it out when no entry of the table has it
    fine_tuned: bool = False  # markdown shows it in fine-tuned tables only

    @property
    def numeric(self) -> bool:
        return self.dtype != "object"


def _only(*tables: str) -> frozenset[str]:
    return frozenset(tables)


_DATA = _only(FRAME, CSV)  # numbers the markdown shows inside a combined cell, or not at all

# Fields the csv copies as they are: how each run was made and identified.
_CSV_PROVENANCE = (
    "group", "config_hash", "python_version", "keras_version", "tf_version", "numpy_version",
    "device", "weights_sha256", "data_checksum", "git_commit", "started_at", "status",
)  # fmt: skip

# Order: the columns of earlier versions' csv first, in their order, so users' scripts keep
# working (results/README.md lists the renamed ones); new columns go last.
COLUMNS: tuple[Column, ...] = (
    # within its table (in the csv: of the run's entry); markdown adds the rank interval
    Column("rank", dtype="Int64", fmt="d", shown=_only(FRAME, CSV, MARKDOWN), per_entry=ENTRY),
    Column("backbone", "backbone"),
    Column("kind", "kind", shown=_only(FRAME, CSV, DETAILS)),  # "backbone" | "baseline"
    Column("protocol", "protocol", shown=_DATA),  # said in the table's title
    Column("k", dtype="Int64", shown=_only(FRAME)),  # seeds averaged
    Column("K", dtype="Int64", shown=_only(DETAILS, STAGES)),
    Column("seed", "seed", "Int64", shown=_only(CSV)),
    # Accuracies have runs.jsonl's names everywhere. holdout only: the holdout split's at the
    # last epoch (under lesson early stopping watches the test file: that is test_accuracy)
    Column("holdout_accuracy", "holdout_accuracy", "float64", shown=_only(FRAME, CSV, DETAILS),
           per_entry=MEAN, optional=True),
    Column("holdout_accuracy_sd", dtype="float64", shown=_only(FRAME)),
    # the ranked number; markdown: mean ± sd over the seeds and the 95 % interval
    Column("test_accuracy", "test_accuracy", "float64", shown=_DATA | {MARKDOWN, STAGES},
           per_entry=MEAN),
    Column("test_accuracy_sd", dtype="float64", shown=_only(FRAME)),
    # 95 % interval of the entry's test accuracy: test images and seeds resampled
    Column("ci_low", dtype="float64", shown=_DATA, per_entry=ENTRY),
    Column("ci_high", dtype="float64", shown=_DATA, per_entry=ENTRY),
    # images the accuracy, the interval and the tests are computed on
    Column("n_eval", dtype="Int64", shown=_DATA),
    # the main table: the test against the top; cost
    Column("vs best", shown=_only(MARKDOWN)),  # vs_best in words, with behind_at_least
    Column("params trainable / total", dtype="Int64", shown=_only(MARKDOWN)),
    # per-class summaries, cost and how the run was made
    Column("balanced_accuracy", "balanced_accuracy", "float64", ".3f", _DATA | {DETAILS},
           MEAN),
    Column("macro_f1", "macro_f1", "float64", ".3f", _DATA | {DETAILS}, MEAN),
    Column("best_epoch_accuracy", "best_epoch_accuracy", "float64", ".3f", _DATA | {DETAILS},
           MEAN),
    Column("epochs", "epochs_run", "Int64", shown=_DATA | {DETAILS}, per_entry=MEAN),
    Column("trainable_params", "params_trainable", "Int64", ",", _DATA),
    Column("total_params", "params_total", "Int64", ",", _DATA),
    # only where features were extracted (cached route): none on the others
    Column("extract_s", "extract_s", "float64", ".1f", _DATA | {MARKDOWN}, MEAN),
    Column("s_per_epoch", "epoch_s", "float64", ".2f", _DATA | {MARKDOWN}, MEAN),
    Column("image_size", "image_size", "Int64", "d", _DATA | {DETAILS}),
    Column("preprocess", "preprocess", shown=_DATA),  # said in the table's title
    # "imagenet", "random" or a weights file's name (never its path); markdown: the file name
    Column("weights", "weights", shown=_DATA | {DETAILS}),
    Column("route", "route", shown=_DATA | {DETAILS}),
    # the csv's provenance (lists such as predictions are left out)
    Column("eval_split", "eval_split", shown=_only(CSV)),
    Column("imagenet_top1", "imagenet_top1", "float64", shown=_only(CSV)),
    *(Column(name, name, shown=_only(CSV)) for name in _CSV_PROVENANCE),
    Column("error", "error", shown=_only(CSV)),  # on one line
    # added with per-configuration tables, corrected tests, cost per image and probes
    Column("table", shown=_DATA, per_entry=ENTRY),  # the entry's table: its configuration in words
    Column("rank_low", dtype="Int64", shown=_DATA, per_entry=ENTRY),  # 95 % bootstrap interval
    Column("rank_high", dtype="Int64", shown=_DATA, per_entry=ENTRY),
    # "best" | "could be best" | "worse" | "n/a" (no stored predictions on the table's images)
    Column("vs_best", shown=_DATA, per_entry=ENTRY),
    # simultaneous 95 % bounds on (best accuracy - this entry's), the best's choice included
    Column("behind_at_least", dtype="float64", shown=_DATA, per_entry=ENTRY),
    Column("behind_at_most", dtype="float64", shown=_DATA, per_entry=ENTRY),
    Column("infer_ms", "infer_ms", "float64", ".3g", _DATA | {MARKDOWN}, MEAN),  # per image
    Column("gflops", "gflops", "float64", ".3g", _DATA | {MARKDOWN}, MEAN),  # per image
    Column("probe_linear_accuracy", "probe_linear_accuracy", "float64", ".3f",
           _DATA | {DETAILS}, MEAN, optional=True),
    Column("probe_linear_s", "probe_linear_s", "float64", shown=_DATA, per_entry=MEAN),
    Column("probe_knn_accuracy", "probe_knn_accuracy", "float64", ".3f", _DATA | {DETAILS},
           MEAN, optional=True),
    Column("probe_knn_s", "probe_knn_s", "float64", shown=_DATA, per_entry=MEAN),
    Column("weights_file", "weights_file", shown=_DATA),
    # Keras' own file name for the run's size when another resolution's file stood in
    Column("weights_substituted_for", "weights_substituted_for", shown=_DATA),
    # where the frozen backbone ran (--runtime) and how fast, resize and preprocessing included
    Column("runtime", "runtime", shown=_DATA),
    Column("runtime_version", "runtime_version", shown=_DATA),
    Column("runtime_batch", "runtime_batch", "Int64", shown=_DATA),
    Column("extract_img_s", "runtime_images_per_s", "float64", ".0f", _DATA, MEAN),
    # a head that predicts one class for every test image (a collapsed control)
    Column("one_class", "one_class", shown=_DATA),
    # the data set as the runner named it (a folder, tfds:NAME) and its kind (npy, folder, ...)
    Column("data", "data", shown=_only(CSV)),
    Column("data_kind", "data_kind", shown=_only(CSV)),
    # fine-tuned runs (--fine-tune): the frozen stage they continue (same seed) and the gain,
    # fine-tuned minus frozen accuracy paired per test image and seed, its 95 % interval and p
    Column("frozen_accuracy", "frozen_accuracy", "float64", ".3f", _DATA | {STAGES}, MEAN),
    Column("gain", dtype="float64", shown=_DATA | {STAGES}, per_entry=ENTRY),
    Column("gain_low", dtype="float64", shown=_DATA, per_entry=ENTRY),
    Column("gain_high", dtype="float64", shown=_DATA, per_entry=ENTRY),
    Column("gain_p", dtype="float64", shown=_DATA | {STAGES}, per_entry=ENTRY),
    Column("fine_tune_epoch_s", "fine_tune_epoch_s", "float64", ".2f", _DATA | {DETAILS}, MEAN,
           fine_tuned=True),
    Column("fine_tune_images_per_s", "fine_tune_images_per_s", "float64", ".0f",
           _DATA | {DETAILS}, MEAN, fine_tuned=True),
    # every ok run: the process's peak resident memory (MiB) after it
    Column("peak_memory_mb", "peak_memory_mb", "float64", ".0f", _DATA | {DETAILS}, MEAN,
           fine_tuned=True),
)
BY_NAME: dict[str, Column] = {c.name: c for c in COLUMNS}


def columns_of(table: str) -> tuple[Column, ...]:
    """The columns a table shows, in table order."""
    return tuple(c for c in COLUMNS if table in c.shown)


LEADERBOARD_COLUMNS: tuple[str, ...] = tuple(c.name for c in columns_of(FRAME))
CSV_COLUMNS: tuple[str, ...] = tuple(c.name for c in columns_of(CSV))
