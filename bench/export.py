"""python -m bench export: a result row's trained classifier as one model.

Which row (--stage frozen or fine-tuned): of that stage's rows, NAME's latest run (of its
seeds, the best by the leaderboard's accuracy, ties to the lowest seed), or without NAME the
top entry of the first leaderboard table of that stage, ranked by bench.report.ranking. The
frozen stage is every row that is not fine-tuned. Without --stage, the better of the two:
the frozen run chosen so, or the latest fine-tuned run continuing it (its frozen_config_hash)
when fine-tuning raised its test accuracy (its mean test_accuracy over its seeds above their
mean frozen_accuracy: the same seeds and test images); with no frozen row to compare with,
the fine-tuned one. The model is built by bench.engine.export (a fine-tuned row's head file
holds the whole model's weights); the class names go beside it in FILE.classes.json. No
TensorFlow here until a row has been found and checked.

Formats (--format): keras, the default, loads wherever Keras does; openvino (FILE.xml and
FILE.bin) runs in the runtime that measured the row's infer_ms when OpenVINO extracted its
features; saved_model is a folder for TensorFlow Serving and TFLite; auto is the row's own
runtime: openvino when OpenVINO extracted its features, else keras. Every file is written
beside the target and renamed into place: a failed export leaves nothing behind.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from backbones import UnknownBackboneError, get, load_extras
from bench.commands import UsageError
from bench.config import RunConfig
from bench.data import DataError, load_dataset
from bench.data.folder import not_a_file
from bench.fsio import atomic_path, write_text_atomic, writer_lock
from bench.headfile import HeadFile, load_head
from bench.identity import file_sha256
from bench.report import ranking
from bench.report.entries import Entry, entries, metric
from bench.result import FINE_TUNED, RunResult
from bench.resultsdir import TMP_MARK
from bench.runlog import RUNS_FILE, group_key, latest_records, read_records
from bench.weights import WEIGHTS_ENV, ResolvedWeights, WeightsError, weights_folder

MODEL_SUFFIX = ".keras"  # keras.Model.save's format
OPENVINO_SUFFIX = ".xml"  # OpenVINO IR's graph; its weights in the .bin beside it
CLASSES_SUFFIX = ".classes.json"
# --format's choices; auto: the runtime the row's features were extracted with
FORMATS = ("keras", "openvino", "saved_model", "auto")
DEFAULT_FORMAT = "keras"  # loads wherever Keras does, on any runtime and machine
SAVED_MODEL_FILE = "saved_model.pb"  # what makes a folder a SavedModel
# --stage's choices (a row's stage: None, the first, or "fine-tuned"); none: the better one
FROZEN = "frozen"
STAGES = (FROZEN, FINE_TUNED)


def classes_file(target: Path) -> Path:
    """The sidecar of an exported model: m.keras, m.xml -> m.classes.json; a SavedModel
    folder m -> m.classes.json beside it."""
    target = Path(target)
    if target.suffix in (MODEL_SUFFIX, OPENVINO_SUFFIX):
        return target.with_suffix(CLASSES_SUFFIX)
    return target.with_name(target.name + CLASSES_SUFFIX)


def export(name: str | None, out: str, file: str, weights_dir: str | None = None,
           format: str = DEFAULT_FORMAT, stage: str | None = None) -> Path:
    """Writes FILE in `format` and its classes sidecar for the chosen row of OUT/runs.jsonl
    (of `stage`; None: the better one), holding OUT's writer lock, so that no sweep changes
    the rows or heads meanwhile."""
    if format not in FORMATS:
        raise UsageError(f"--format: expected one of {', '.join(FORMATS)}; received {format!r}")
    if stage is not None and stage not in STAGES:
        raise UsageError(f"--stage: expected one of {', '.join(STAGES)}; received {stage!r}")
    if not Path(out).is_dir():
        raise UsageError(f"No {RUNS_FILE} in {out}: nothing to export (run python -m bench "
                         f"NAME --out {out} first)")
    with writer_lock(out):
        return _export(name, Path(out), Path(file), weights_dir, format, stage)


def _export(name: str | None, folder: Path, target: Path, weights_dir: str | None,
            requested: str, stage: str | None) -> Path:
    flag = "--weights-dir" if weights_dir else f"${WEIGHTS_ENV}"
    weights_dir = weights_folder(weights_dir)
    if weights_dir and not Path(weights_dir).is_dir():
        raise UsageError(f"{flag}: no such folder {weights_dir!r}")
    if requested != "auto":  # the file's errors first, when they do not depend on the row
        _check_target(target, requested)
    row = find_row(folder, name, stage)
    format = _format(requested, row)
    if requested == "auto":
        target = _auto_target(target, format, row)
    _check_target(target, format)
    if format == "openvino" and importlib.util.find_spec("openvino") is None:
        raise UsageError("--format openvino needs OpenVINO: pip install openvino (or "
                         "--format keras, which loads wherever Keras does)")
    spec = _spec(row.backbone)
    head = _head(folder, row)
    config = _row_config(row, weights_dir)
    # a fine-tuned row's head file holds every weight, BatchNormalization's statistics too
    whole = config.fine_tune and config.fine_tune_epochs > 0
    weights, seed = (None, row.seed or 0) if spec.kind == "baseline" \
        else _row_weights(row, weights_dir)
    from bench.engine.quiet import import_tensorflow

    import_tensorflow()
    from bench.engine.export import ExportError, build_model

    try:
        classifier = build_model(spec, config, weights, seed, head.weights,
                                 len(head.class_names), head.image_shape,
                                 None if whole else _batchnorm_images(row))
    except (WeightsError, ExportError) as err:
        raise UsageError(f"{row.backbone}: {err}") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    written = _write(classifier, target, format)
    sidecar = _sidecar(row, head, format)
    write_text_atomic(classes_file(target), json.dumps(sidecar, indent=2) + "\n")
    chosen = f", the runtime of its infer_ms ({row.runtime or 'tensorflow'})" \
        if requested == "auto" else ""
    before = f", its frozen stage's {row.frozen_accuracy:.3f}" \
        if row.frozen_accuracy is not None else ""
    print(f"Wrote {' and '.join(map(str, written))} ({format}{chosen}): {row.backbone}"
          f"{' fine-tuned' if row.stage else ''} (seed {row.seed}, test_accuracy "
          f"{row.test_accuracy:.3f}{before}, run {row.config_hash}); class names in "
          f"{classes_file(target)}")
    return target


def _format(requested: str, row: RunResult) -> str:
    """auto: OpenVINO IR when OpenVINO extracted the row's features (its infer_ms is
    OpenVINO's), else the .keras file."""
    if requested != "auto":
        return requested
    return "openvino" if row.runtime == "openvino" else "keras"


def _auto_target(target: Path, format: str, row: RunResult) -> Path:
    """FILE for --format auto: given without a suffix, the chosen format's is added."""
    suffix = {"keras": MODEL_SUFFIX, "openvino": OPENVINO_SUFFIX}[format]
    if not target.suffix:
        return target.with_name(target.name + suffix)
    if target.suffix != suffix:
        raise UsageError(f"--format auto: {row.backbone}'s features were extracted with "
                         f"{row.runtime or 'tensorflow'}, so it is exported as {format}: the "
                         f"model file must end in {suffix} (or give it without a suffix); "
                         f"received {str(target)!r}")
    return target


def _check_target(target: Path, format: str) -> None:
    """A usage error unless `target` (and the sidecar, the .bin) can be written as `format`
    without touching anything that is not an earlier export of the same kind."""
    file, suffix = str(target), {"keras": MODEL_SUFFIX, "openvino": OPENVINO_SUFFIX}.get(format)
    if suffix and target.suffix != suffix:
        what = "Keras' format" if format == "keras" else "OpenVINO IR's graph; FILE.bin beside"
        raise UsageError(f"--format {format}: the model file must end in {suffix} ({what}); "
                         f"received {file!r}")
    if format == "saved_model" and target.suffix in (MODEL_SUFFIX, OPENVINO_SUFFIX):
        raise UsageError(f"--format saved_model writes a folder: expected a folder name, not a "
                         f"{target.suffix} file; received {file!r}")
    if target.parent.exists() and not target.parent.is_dir():
        raise UsageError(f"the model file's folder {str(target.parent)!r} is not a folder")
    files = [target, target.with_suffix(".bin")] if format == "openvino" \
        else [] if format == "saved_model" else [target]
    for path in [*files, classes_file(target)]:
        if os.path.lexists(path) and not path.is_file():  # a folder named m.keras, a FIFO
            raise UsageError(f"{str(path)!r} exists and is not a regular file "
                             f"({not_a_file(path)}); expected a file name to write (or an "
                             "earlier export's file to replace)")
    if format == "saved_model" and os.path.lexists(target):
        if not target.is_dir() or target.is_symlink():
            raise UsageError(f"{file!r} exists and is {not_a_file(target)}; expected a folder "
                             "name to write a SavedModel in (or an earlier one to replace)")
        if any(target.iterdir()) and not (target / SAVED_MODEL_FILE).is_file():
            raise UsageError(f"{file!r} is a folder that holds files but no SavedModel; "
                             "expected a new or empty folder (or a SavedModel to replace)")


def _write(classifier, target: Path, format: str) -> list[Path]:
    """Saves the model as `format` at `target` (files renamed into place once whole: an
    earlier export stays until then); the paths written."""
    if format == "keras":
        with atomic_path(target) as tmp:
            classifier.save(tmp)
        return [target]
    from bench.engine.export import save_openvino, save_saved_model

    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=TMP_MARK,
                                 dir=target.parent))
    try:
        if format == "openvino":
            save_openvino(classifier, work / target.name)
            written = [target.with_suffix(".bin"), target]  # the graph last: it names the .bin
            for path in written:
                os.replace(work / path.name, path)
            return written[::-1]
        save_saved_model(classifier, work / "model")
        if target.exists():  # an earlier SavedModel (or an empty folder): moved out first
            os.replace(target, work / "earlier")
        try:
            os.replace(work / "model", target)
        except OSError:
            if (work / "earlier").exists():
                os.replace(work / "earlier", target)
            raise
        return [target]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def find_row(out: Path, name: str | None, stage: str | None = None) -> RunResult:
    """The ok row to export (see the module's docstring); UsageError when there is none."""
    runs_file = Path(out) / RUNS_FILE
    if not runs_file.is_file():
        raise UsageError(f"No {RUNS_FILE} in {out}: nothing to export (run python -m bench "
                         f"NAME --out {out} first)")
    records = read_records(Path(out))
    runs = [r for r in latest_records([RunResult.from_dict(r) for r in records]) if r.ok]
    backbone = None if name is None else _spec(name).name
    of = f" of {backbone}" if backbone else ""
    if not [r for r in runs if backbone in (None, r.backbone)]:
        raise UsageError(f"No ok row{of} in {runs_file}: nothing to export")
    staged = {s: [r for r in runs if _stage(r) == s] for s in STAGES}
    if stage is not None:
        found = _entry(staged[stage], backbone)
        if found is None:
            how = " (run it with --fine-tune first, or export --stage frozen)" \
                if stage == FINE_TUNED else " (export --stage fine-tuned)"
            raise UsageError(f"No ok {stage} row{of} in {runs_file}: nothing to export{how}")
        return _best_run(found)
    frozen = _entry(staged[FROZEN], backbone)
    if frozen is None:
        return _best_run(_entry(staged[FINE_TUNED], backbone))
    continued = {r.config_hash for r in frozen.runs}
    tuned = _entry([r for r in staged[FINE_TUNED] if r.frozen_config_hash in continued],
                   frozen.first.backbone)
    return _best_run(tuned if tuned is not None and _improved(tuned) else frozen)


def _stage(row: RunResult) -> str:
    return row.stage or FROZEN


def _entry(runs: list[RunResult], backbone: str | None) -> Entry | None:
    """Of ok `runs`, `backbone`'s latest run as an entry of its seeds, or without a backbone
    the top entry of their first leaderboard table; None when there is none."""
    if backbone is None:
        found = ranking.tables(runs)
        return found[0].entries[0] if found else None
    mine = [r for r in runs if r.backbone == backbone]
    if not mine:
        return None
    latest = group_key(mine[-1])
    return entries([r for r in mine if group_key(r) == latest])[0]


def _improved(tuned: Entry) -> bool:
    """Whether fine-tuning raised the test accuracy: the entry's mean over its seeds above the
    mean of the same seeds' frozen stages."""
    after = [metric(r, "test_accuracy") for r in tuned.runs]
    before = [r.frozen_accuracy for r in tuned.runs]
    if any(v is None for v in after + before):
        return False
    return sum(after) / len(after) > sum(before) / len(before)


def _row_config(row: RunResult, weights_dir: str | None) -> RunConfig:
    """The row's knobs that build its model: a fine-tuned row's augmentation and epochs too
    (with 0 epochs its head file holds the frozen stage's head)."""
    knobs = dict(image_size=row.image_size or "native", pooling=row.pooling or "max",
                 preprocess=row.preprocess or "native", weights_dir=weights_dir,
                 seed=RunConfig.seed if row.seed is None else row.seed)
    if _stage(row) == FINE_TUNED:
        tuning = row.configuration
        knobs.update(fine_tune=True, augment=bool(tuning.get("augment", False)),
                     fine_tune_epochs=tuning.get("fine_tune_epochs", RunConfig.fine_tune_epochs))
    return RunConfig(**knobs)


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


def _sidecar(row: RunResult, head: HeadFile, format: str) -> dict:
    """What a user of the model needs beside it: the classes of its logits, how to run it, and
    its origin."""
    how = {}
    if format == "openvino":  # what the row's infer_ms was measured with
        from bench.engine.openvino_backend import COMPILE_CONFIG

        how = {"openvino_compile_config": COMPILE_CONFIG}
    elif format == "saved_model":
        how = {"endpoint": "serve"}
    return {
        "class_names": head.class_names,
        "format": format,
        **how,
        "input": "uint8 RGB images, any size (batch, height, width, 3)",
        "output": "class logits, in class_names order",
        "runtime": row.runtime,
        "infer_ms": row.infer_ms,
        "backbone": row.backbone,
        "weights": row.weights,
        "image_size": row.image_size,
        "preprocess": row.preprocess,
        "seed": row.seed,
        "stage": _stage(row),
        "test_accuracy": row.test_accuracy,
        "frozen_accuracy": row.frozen_accuracy,
        "config_hash": row.config_hash,
        "data": row.data,
    }
