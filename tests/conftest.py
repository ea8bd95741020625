"""Tiny synthetic datasets, dataset folders and runs.jsonl rows for every test file, and the
real assets (through environment variables) when present.

Test files import the plain helpers: `from conftest import read_rows, write_dataset`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from bench.config import RunConfig  # noqa: E402
from bench.data import FILES  # noqa: E402
from bench.identity import configuration, run_hashes  # noqa: E402
from bench.result import RunResult  # noqa: E402

RUN_FIELDS = {f.name for f in dataclasses.fields(RunResult)}


def synthetic_arrays(n_train: int = 48, n_test: int = 24, side: int = 32, n_classes: int = 3,
                     seed: int = 0):
    """Images whose class is their dominant colour channel: learnable from almost any feature."""
    rng = np.random.default_rng(seed)

    def split(n):
        labels = np.arange(n) % n_classes
        rng.shuffle(labels)
        images = rng.integers(0, 60, size=(n, side, side, 3))
        images[np.arange(n), :, :, labels % 3] += 180
        return images.astype(np.uint8), labels.astype(np.int64)

    return (*split(n_train), *split(n_test))


# --- numbers TensorFlow or OpenVINO computed --------------------------------------------------
# Their CPU kernels (oneDNN, Eigen, OpenVINO's) choose blockings and summation orders per machine
# and per batch shape, so one computation differs in its last bits between two machines of one
# kind, or between a batch of 16 and one of 32: about 1e-7 of a value per layer, 1e-6 of a
# frozen backbone's features, 1e-4 of a loss after a few epochs of training from scratch. Such
# numbers are compared within a tolerance that a real change exceeds by orders of magnitude;
# integers, predictions on well-separated cases, shapes and texts stay exact.

# Features: 1e-5 of their scale. A wrong preprocessing, resize, weight or pooling moves them by
# 1e-2 of it or more (tests/test_engines.py measures the engines at 1e-6).
FEATURE_RTOL = 1e-5
# Head losses of two runs of one computation on one machine (two routes, two runtimes, a
# rerun): 1e-5. A real difference — dropout on in the backbone, another seed or batch order —
# moves them by 1e-4 to 1e-1 (tests/test_runner.py measured 1e-4 for dropout left on).
LOSS_ATOL = 1e-5


def assert_features_close(got, want, rtol: float = FEATURE_RTOL) -> None:
    """Two feature arrays equal within rtol of the features' scale (their largest |value|)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = float(np.max(np.abs(want))) or 1.0
    np.testing.assert_allclose(got, want, rtol=0, atol=rtol * scale)


def assert_histories_close(got: dict, want: dict, n: int, loss_atol: float = LOSS_ATOL) -> None:
    """Two Keras histories of one training: losses within loss_atol per epoch, accuracies within
    one image of the smallest set (n) they are measured on (two logits within the noise above
    may order differently)."""
    assert set(got) == set(want), (set(got), set(want))
    for key in want:
        g, w = np.asarray(got[key], dtype=float), np.asarray(want[key], dtype=float)
        assert g.shape == w.shape, (key, g.shape, w.shape)
        atol = loss_atol if "loss" in key else 1 / n + 1e-9
        np.testing.assert_allclose(g, w, rtol=0, atol=atol, err_msg=key)


def assert_same_predictions(logits, predictions, margin: float = 1e-3) -> None:
    """The argmax of `logits` is `predictions` on every image whose two largest logits are more
    than `margin` apart; closer ones are ties within the noise above and may go either way."""
    logits = np.asarray(logits)
    top2 = np.sort(logits, axis=-1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > margin
    assert clear.mean() > 0.9, f"only {clear.sum()} of {len(clear)} images are clear cases"
    np.testing.assert_array_equal(logits.argmax(-1)[clear], np.asarray(predictions)[clear])


# --- leaderboards compared as text and numbers ------------------------------------------------
DATA = "<data>"  # where the data folder's path stood
# Table columns and sentences whose numbers are timings.
TIME_COLUMNS = frozenset({"extract_s", "s_per_epoch", "infer_ms", "epoch_s", "total_s"})
VOLATILE_TEXT = (re.compile(r"^Provenance:"),)
VOLATILE_NUMBERS = re.compile(r"[0-9.]+× (?:faster|slower) per image")

# A number in the leaderboard's text: 13,515 / 0.717 / 1.2e-05 / -0.061 (not inside a word,
# such as class_0 or MobileNet_0.25).
NUMBER = re.compile(r"(?<![\w.])[-−]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?(?![\w])")


def _masked_table_line(line: str, header: list[str] | None) -> tuple[str, list[str] | None]:
    """A table line with its cells stripped (tabulate pads columns to their widest cell) and the
    time columns masked, found by name in the header; returns the header for the lines below."""
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if set("".join(cells)) <= set(":- "):
        return "| " + " | ".join("---" for _ in cells) + " |", header
    if header is None:  # the first line of a table is its header
        return "| " + " | ".join(cells) + " |", cells
    cells = ["<time>" if i < len(header) and header[i] in TIME_COLUMNS else c
             for i, c in enumerate(cells)]
    return "| " + " | ".join(cells) + " |", header


def board_skeleton(text: str, data: str | None = None) -> tuple[str, list[str]]:
    """(the leaderboard's text with every number replaced by #, the numbers in order), after
    masking the data folder, the provenance line and the timings."""
    if data:
        text = text.replace(data, DATA)
    lines, header = [], None
    for line in text.splitlines():
        if any(p.search(line) for p in VOLATILE_TEXT):
            continue
        if line.lstrip().startswith("|"):
            line, header = _masked_table_line(line, header)
        else:
            header = None
        lines.append(VOLATILE_NUMBERS.sub("<time>× per image", line))
    masked = "\n".join(lines) + "\n"
    return NUMBER.sub("#", masked), NUMBER.findall(masked)


def same_number(got: str, want: str) -> bool:
    """Integers exactly; decimals within one unit of their last printed digit."""
    g, w = (s.replace(",", "").replace("−", "-") for s in (got, want))
    if not any(c in w + g for c in ".e"):
        return g == w
    digits = len(w.split("e")[0].partition(".")[2])
    unit = 10.0 ** -digits * (10.0 ** int(w.split("e")[1]) if "e" in w else 1.0)
    return math.isclose(float(g), float(w), rel_tol=0, abs_tol=unit * 1.0001)


def board_differences(got_text: str, want_text: str) -> list[str]:
    got, want = board_skeleton(got_text), board_skeleton(want_text)
    if got[0] != want[0]:
        pairs = zip(got[0].splitlines(), want[0].splitlines(), strict=False)
        line = next((f"{g!r}, golden {w!r}" for g, w in pairs if g != w), "line count differs")
        return [f"text: {line}"]
    return [f"number {i}: {g}, golden {w}"
            for i, (g, w) in enumerate(zip(got[1], want[1], strict=True))
            if not same_number(g, w)]



# --- what a fresh interpreter imports ---------------------------------------------------------
ROOT = Path(__file__).resolve().parent.parent
TENSORFLOW = ("tensorflow", "keras")
_REPORT_PROBE = """
import json, sys
print(json.dumps({"result": globals().get("result"), "heavy": sorted(
    m for m in sys.modules if m.split(".")[0] in json.loads(%r))}))
"""


def fresh_python(code: str, *argv: str, watch: Sequence[str] = TENSORFLOW) -> dict:
    """Runs `code` in a fresh interpreter on this checkout, with `argv` as sys.argv[1:]:
    {"result": what the code left in its variable `result`, "heavy": the modules of the
    packages in `watch` it imported}. The code failing fails the test."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    probe = code + _REPORT_PROBE % json.dumps(list(watch))
    proc = subprocess.run([sys.executable, "-c", probe, *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


# --- rows -------------------------------------------------------------------------------------
_RUN_KNOBS = {f.name for f in dataclasses.fields(RunConfig)}


def make_row(backbone: str = "A", status: str = "ok", *, weights: str = "imagenet",
             data_checksum: str = "c0ffee", **fields) -> dict:
    """A complete row of the current schema, as runs.jsonl holds it: `fields` are RunResult
    fields, and RunConfig knobs among them (seed, protocol, image_size, ...) set the run's
    configuration, config hash and group the way the runner computes them (unless given)."""
    config = RunConfig(**{k: v for k, v in fields.items() if k in _RUN_KNOBS and k != "weights"})
    payload = {"backbone": backbone, "weights": weights, "data": data_checksum, **config.knobs()}
    config_hash, group = run_hashes(payload)
    row = dict(
        status=status, weights=weights, data_checksum=data_checksum, config_hash=config_hash,
        group=group, configuration=configuration(config, data_checksum),
        **{k: getattr(config, k) for k in ("protocol", "pooling", "epochs", "patience",
                                           "batch_size", "seed")},
        preprocess=config.preprocess, route="end-to-end" if config.end_to_end else "cached",
        image_size=config.image_size if isinstance(config.image_size, int) else 160,
    )
    row.update({k: v for k, v in fields.items() if k in RUN_FIELDS})
    return RunResult(backbone=backbone, **row).to_dict()


def make_run(backbone: str = "A", status: str = "ok", **fields) -> RunResult:
    return RunResult.from_dict(make_row(backbone, status, **fields))


_V1_NAMES = {"route": "path", "n_test": "n_val", "best_epoch_accuracy": "best_val_accuracy",
             "test_accuracy": "val_accuracy"}


def as_schema_1(record: dict) -> dict:
    """The (lesson) row as bench wrote it before rows had a schema, a config hash and a group,
    in that version's names."""
    return {_V1_NAMES.get(k, k): v for k, v in record.items()
            if k not in ("schema", "config_hash", "group", "configuration")}


def write_dataset(folder: Path, arrays: Sequence[np.ndarray] | None = None,
                  **files: np.ndarray | bytes | None) -> Path:
    """A dataset folder: `arrays` (train images, train labels, test images, test labels;
    default synthetic_arrays()) as the four .npy files, then each of `files`, named by stem
    (train_labels=...): an array is saved as given (object arrays too, so that tests can show
    they are refused), bytes are written raw, None removes the file."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in zip(FILES, synthetic_arrays() if arrays is None else arrays, strict=True):
        np.save(folder / name, array)
    for stem, value in files.items():
        path = folder / f"{stem}.npy"
        if path.name not in FILES:
            raise ValueError(f"{stem} is not one of the dataset files {FILES}")
        if value is None:
            path.unlink()
        elif isinstance(value, bytes):
            path.write_bytes(value)
        else:
            np.save(path, value, allow_pickle=True)
    return folder


def read_rows(out: Path) -> list[dict]:
    """The rows of out/runs.jsonl ([] when there is none); a line torn by a kill is skipped,
    as bench's own reader skips it."""
    path = Path(out) / "runs.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return rows


@pytest.fixture(autouse=True)
def _private_feature_cache(tmp_path_factory, monkeypatch):
    """Each test starts with an empty feature cache of its own, never the user's, and with
    nothing an earlier test left in memory (the last extraction, traced forwards, ...)."""
    from bench.cache import reset_process_caches

    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path_factory.mktemp("feature-cache")))
    reset_process_caches()


@pytest.fixture
def tiny_data():
    from bench.data import from_arrays

    return from_arrays(*synthetic_arrays(), source="synthetic")


@pytest.fixture
def tiny_data_dir(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "tiny")


@pytest.fixture
def real_weights_dir() -> Path:
    value = os.environ.get("BENCH_TEST_WEIGHTS_DIR")
    if not value:
        pytest.skip("BENCH_TEST_WEIGHTS_DIR is unset (.ci/run sets it to ../shared/weights)")
    return Path(value)


@pytest.fixture
def real_data_dir() -> Path:
    value = os.environ.get("BENCH_TEST_DATA")
    if not value:
        pytest.skip("BENCH_TEST_DATA is unset (.ci/run sets it to ../shared/datasets/cifar10-ds10)")
    return Path(value)
