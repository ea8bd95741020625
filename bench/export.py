"""python -m bench export: a result row's trained classifier as one .keras file.

Which row: NAME's latest run (of its seeds, the best by the leaderboard's accuracy, ties to the
lowest seed), or without NAME the top entry of the leaderboard's first table, ranked by
bench.report.model. The model is built by bench.engine.export; the class names go beside it
in FILE.classes.json. No TensorFlow here until a row has been found and checked.
"""

from __future__ import annotations

import json
from pathlib import Path

from backbones import UnknownBackboneError, get, load_extras
from bench.commands import UsageError
from bench.config import RunConfig
from bench.data import DataError, load_dataset
from bench.fsio import atomic_path, write_text_atomic, writer_lock
from bench.headfile import HeadFile, load_head
from bench.identity import file_sha256
from bench.report import ranking
from bench.report.entries import Entry, entries, metric
from bench.result import RunResult
from bench.runlog import RUNS_FILE, group_key, latest_records, read_records
from bench.weights import WEIGHTS_ENV, ResolvedWeights, WeightsError, weights_folder

MODEL_SUFFIX = ".keras"  # keras.Model.save's format
CLASSES_SUFFIX = ".classes.json"


def classes_file(target: Path) -> Path:
    """The sidecar of an exported model: m.keras -> m.classes.json."""
    return Path(target).with_suffix(CLASSES_SUFFIX)


def export(name: str | None, out: str, file: str, weights_dir: str | None = None) -> Path:
    """Writes FILE (.keras) and its classes sidecar for the chosen row of OUT/runs.jsonl,
    holding OUT's writer lock, so that no sweep changes the rows or heads meanwhile."""
    if not Path(out).is_dir():
        raise UsageError(f"No {RUNS_FILE} in {out}: nothing to export (run python -m bench "
                         f"NAME --out {out} first)")
    with writer_lock(out):
        return _export(name, Path(out), Path(file), weights_dir)


def _export(name: str | None, folder: Path, target: Path, weights_dir: str | None) -> Path:
    file = str(target)
    if target.suffix != MODEL_SUFFIX:
        raise UsageError(f"the model file must end in {MODEL_SUFFIX} (Keras' format); "
                         f"received {file!r}")
    if target.exists() and not target.is_file():  # a folder named m.keras, a FIFO, ...
        raise UsageError(f"the model file {file!r} exists and is not a regular file; expected "
                         "a file name to write (or an existing model file to replace)")
    if target.parent.exists() and not target.parent.is_dir():
        raise UsageError(f"the model file's folder {str(target.parent)!r} is not a folder")
    flag = "--weights-dir" if weights_dir else f"${WEIGHTS_ENV}"
    weights_dir = weights_folder(weights_dir)
    if weights_dir and not Path(weights_dir).is_dir():
        raise UsageError(f"{flag}: no such folder {weights_dir!r}")
    row = find_row(folder, name)
    spec = _spec(row.backbone)
    head = _head(folder, row)
    config = RunConfig(image_size=row.image_size or "native", pooling=row.pooling or "max",
                       preprocess=row.preprocess or "native", weights_dir=weights_dir)
    weights, seed = (None, row.seed or 0) if spec.kind == "baseline" \
        else _row_weights(row, weights_dir)
    from bench.engine.quiet import import_tensorflow

    import_tensorflow()
    from bench.engine.export import ExportError, build_model

    try:
        classifier = build_model(spec, config, weights, seed, head.weights,
                                 len(head.class_names), head.image_shape,
                                 _batchnorm_images(row))
    except (WeightsError, ExportError) as err:
        raise UsageError(f"{row.backbone}: {err}") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        classifier.save(tmp)
    write_text_atomic(classes_file(target), json.dumps(_sidecar(row, head), indent=2) + "\n")
    print(f"Wrote {target}: {row.backbone} (seed {row.seed}, test_accuracy "
          f"{row.test_accuracy:.3f}, run {row.config_hash}); class names in "
          f"{classes_file(target)}")
    return target


def find_row(out: Path, name: str | None) -> RunResult:
    """The ok row to export (see the module's docstring); UsageError when there is none."""
    runs_file = Path(out) / RUNS_FILE
    if not runs_file.is_file():
        raise UsageError(f"No {RUNS_FILE} in {out}: nothing to export (run python -m bench "
                         f"NAME --out {out} first)")
    records = read_records(Path(out))
    runs = latest_records([RunResult.from_dict(r) for r in records])
    if name is None:
        found = ranking.tables(runs)
        if not found:
            raise UsageError(f"No ok row in {runs_file}: nothing to export")
        return _best_run(found[0].entries[0])
    backbone = _spec(name).name
    mine = [r for r in runs if r.ok and r.backbone == backbone]
    if not mine:
        raise UsageError(f"No ok row of {backbone} in {runs_file}: nothing to export")
    latest = group_key(mine[-1])
    return _best_run(entries([r for r in mine if group_key(r) == latest])[0])


def _best_run(entry: Entry) -> RunResult:
    """Of an entry's seeds, the best by the accuracy the leaderboard ranks by; the lowest seed
    among equals (entry.runs is in seed order)."""

    def accuracy(run: RunResult) -> float:
        value = metric(run, "test_accuracy")
        return value if value is not None else float("-inf")

    return max(entry.runs, key=accuracy)


def _spec(name: str):
    try:
        load_extras()
        return get(name)
    except UnknownBackboneError as err:
        raise UsageError(str(err)) from None
    except (ImportError, ValueError) as err:
        raise UsageError(f"BENCH_EXTRA_BACKBONES: {err}") from None


def _head(out: Path, row: RunResult) -> HeadFile:
    if not row.head_file:
        raise UsageError(f"The row of {row.backbone} (run {row.config_hash}) names no head "
                         f"file; run it again with "
                         f"--rerun")
    path = out / row.head_file
    try:
        return load_head(path)
    except (OSError, ValueError, KeyError) as err:
        reason = "no such file" if isinstance(err, FileNotFoundError) else str(err)
        raise UsageError(f"Head file of {row.backbone} unreadable: {str(path)!r} ({reason}); "
                         "run it again with --rerun") from None


def _batchnorm_images(row: RunResult):
    """The training images a random backbone's BatchNormalization statistics were re-estimated
    on, read again from the row's data (checked by its checksum); None when the run had no
    such statistics."""
    if not (row.weights_id or "").endswith(":batchnorm=train"):
        return None
    try:
        data = load_dataset(row.data, download=False)
        same = data.checksum() == row.data_checksum
    except DataError as err:
        raise UsageError(f"{row.backbone} is a random-features control: its BatchNorm "
                         f"statistics come from its training images, which cannot be read "
                         f"({err})") from None
    if not same:
        raise UsageError(f"{row.backbone}: {row.data} no longer holds the data the run saw "
                         f"(checksum differs); its random backbone cannot be rebuilt")
    return data.train_images


def _row_weights(row: RunResult, weights_dir: str | None) -> tuple[ResolvedWeights, int]:
    """The backbone's weights as the run had them, and the seed its build starts from."""
    kind, _, value = (row.weights_id or "").partition(":")
    seed = row.seed or 0
    if kind == "random":  # "random:seed=N[:batchnorm=train]": what the backbone seed N draws
        return ResolvedWeights("random", "random", None), int(value.split(":")[0].split("=")[1])
    weights_dir = weights_folder(weights_dir)
    local = Path(weights_dir) / str(row.weights_file) if weights_dir and row.weights_file \
        else None
    if kind == "keras":  # Keras' own file: from --weights-dir, else Keras' cache or download
        if local and local.is_file():
            return ResolvedWeights("file", value, value, str(local)), seed
        return ResolvedWeights("imagenet", "imagenet", value), seed
    if kind == "sha256":
        if local is None or not local.is_file():
            raise UsageError(f"{row.backbone} was trained with the weights file "
                             f"'{row.weights_file}': pass --weights-dir DIR, a folder holding it")
        if file_sha256(local) != value:
            raise UsageError(f"{local} is not the weights file the run loaded (its sha256 "
                             f"differs from the row's {value[:12]}...)")
        return ResolvedWeights("file", local.name, local.name, str(local)), seed
    raise UsageError(f"The row of {row.backbone} does not say which weights its backbone had "
                     f"(weights_id {row.weights_id!r})")


def _sidecar(row: RunResult, head: HeadFile) -> dict:
    """What a user of the model needs beside it: the classes of its logits, and its origin."""
    return {
        "class_names": head.class_names,
        "input": "uint8 RGB images, any size (batch, height, width, 3)",
        "output": "class logits, in class_names order",
        "backbone": row.backbone,
        "weights": row.weights,
        "image_size": row.image_size,
        "preprocess": row.preprocess,
        "seed": row.seed,
        "test_accuracy": row.test_accuracy,
        "config_hash": row.config_hash,
        "data": row.data,
    }
