"""A results folder's layout (`--out`): the name of everything bench writes there, in one place.

```text
OUT/runs.jsonl        every row, appended (bench.runlog)
OUT/heads/            each ok row's trained head, .weights.npz (bench.headfile)
OUT/leaderboard.md    the report (bench.report), with leaderboard.csv and plots/
OUT/.report-state     which runs.jsonl the report was built from, written last
OUT/.bench.lock       the writer lock, with its holder's pid (bench.fsio)
```

Temporary files carry TMP_MARK in their names, so that a killed writer's leftovers are found.
"""

from __future__ import annotations

import re

RUNS_FILE = "runs.jsonl"
HEADS_DIR = "heads"
MARKDOWN_FILE = "leaderboard.md"
CSV_FILE = "leaderboard.csv"
PLOTS_DIR = "plots"
# Written last, holding the log state of the runs.jsonl the report was built from: the report
# is current exactly when this matches the file now (file times cannot say that).
STATE_FILE = ".report-state"
LOCK_FILE = ".bench.lock"
TMP_MARK = ".bench-tmp"

_SAFE_NAME_MAX = 120  # well under every file system's 255-byte limit, prefixes and suffixes too


def safe_name(name: str) -> str:
    """A file-name-safe version of name: [A-Za-z0-9._-] only, no leading dot, never empty."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", str(name)).lstrip(".")[:_SAFE_NAME_MAX]
    return cleaned or "_"


def head_file_name(backbone: str, config_hash: str) -> str:
    """Where a row's head goes, relative to the results folder; unique per run."""
    return f"{HEADS_DIR}/{safe_name(backbone)}-{config_hash}.weights.npz"
