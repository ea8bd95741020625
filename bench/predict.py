"""python -m bench predict: an exported model's class and probability for each image, as CSV.

Images are files and folders (every image under a folder, subfolders included, sorted, as a
dataset folder's are listed), decoded as a dataset folder's are (bench.data.images). The model
is a .keras file from python -m bench export (uint8 images of any size in, class logits out);
the class names come from FILE.classes.json beside it, else they are the logits' indices. The
probability is the softmax of the logits.

Everything is checked, decoded and predicted before anything is written: a bad input leaves
neither half a CSV on stdout nor an --output file. No TensorFlow until the inputs are checked.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from bench.commands import UsageError
from bench.data import DataError
from bench.data.folder import IMAGE_SUFFIXES, image_files, not_a_file
from bench.data.images import BATCH_BYTES, decode
from bench.export import MODEL_SUFFIX, classes_file
from bench.fsio import atomic_path

DEFAULT_BATCH_SIZE = 32  # images of one shape per forward pass: speed and memory only


def predict(inputs: Sequence[str], model: str, output: str | None = None, top: int = 1,
            batch_size: int = DEFAULT_BATCH_SIZE) -> Path | None:
    """Writes the CSV (see csv_text) to `output`, or to stdout without one; returns `output`."""
    if batch_size < 1 or top < 1:
        flag, value = ("--batch-size", batch_size) if batch_size < 1 else ("--top", top)
        raise UsageError(f"{flag}: expected a positive integer; received {value}")
    files = image_paths(inputs)
    model_file = _model_file(model)
    names = class_names(model_file)
    target = _output_file(output)
    from bench.engine.quiet import import_tensorflow

    import_tensorflow()
    from bench.engine.predict import PredictError, load_classifier, n_classes, predict_logits

    try:
        classifier = load_classifier(model_file)
    except PredictError as err:
        raise UsageError(str(err)) from None
    n = n_classes(classifier)
    if names is not None and len(names) != n:
        raise UsageError(f"{classes_file(model_file)}: expected {n} class names, one per "
                         f"output of {model_file}; received {len(names)}")
    if top > n:
        raise UsageError(f"--top: expected at most {n}, the model's classes; received {top}")
    try:
        logits = predict_logits(classifier, _decoded(files), batch_size, BATCH_BYTES)
    except DataError as err:
        raise UsageError(str(err)) from None
    if names is None:  # said once all went well: an error stays the only line on stderr
        warnings.warn(f"no {classes_file(model_file).name} beside {model_file.name}: the "
                      "classes are the model's output indices", stacklevel=2)
    text = csv_text(files, softmax(logits), names or [str(i) for i in range(n)], top)
    data = text.encode("utf-8", "surrogateescape")  # a file name's bytes, as the disk has them
    if target is None:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return None
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    print(f"Wrote {target}: {len(files)} images")
    return target


def image_paths(inputs: Sequence[str]) -> list[Path]:
    """The image files named, and those under the folders named, each once, in order."""
    if not inputs:
        raise UsageError("name at least one image file or folder")
    found: dict[Path, None] = {}
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            try:
                under = image_files(path)
            except DataError as err:
                raise UsageError(str(err)) from None
            if not under:
                raise UsageError(f"{given!r}: expected images ({', '.join(sorted(IMAGE_SUFFIXES))}"
                                 ") in the folder or its subfolders; received none")
            found.update(dict.fromkeys(under))
        elif path.is_file():
            found[path] = None
        elif not os.path.lexists(path):
            raise UsageError(f"{given!r}: no such image file or folder")
        else:  # a FIFO or a device would block the read
            raise UsageError(f"{given!r}: expected an image file or a folder; received "
                             f"{not_a_file(path)}")
    return list(found)


def _model_file(model: str) -> Path:
    path = Path(model)
    if path.suffix != MODEL_SUFFIX:
        raise UsageError(f"--model: expected a {MODEL_SUFFIX} file written by python -m bench "
                         f"export; received {model!r}")
    if not path.is_file():
        what = not_a_file(path) if os.path.lexists(path) else "no such file"
        raise UsageError(f"--model {model!r}: expected a model file; received {what}")
    if not zipfile.is_zipfile(path):  # Keras would say "file not found"
        raise UsageError(f"--model {model!r}: expected a Keras model (a .keras zip archive) "
                         "written by python -m bench export; received a file that is no zip "
                         "archive")
    return path


def class_names(model_file: Path) -> list[str] | None:
    """The class names bench export wrote beside the model; None when there is no such file."""
    sidecar = classes_file(model_file)
    if not sidecar.exists():
        return None
    try:
        names = json.loads(sidecar.read_text(encoding="utf-8"))["class_names"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UsageError(f"{sidecar}: expected {{\"class_names\": [...]}} as bench export "
                         f"writes it; received an unreadable file ({err})") from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise UsageError(f"{sidecar}: expected class_names to be a list of names")
    return names


def _output_file(output: str | None) -> Path | None:
    """--output checked before any work: a file to create or replace in an existing folder."""
    if output is None:
        return None
    path = Path(output)
    if path.exists() and not path.is_file():
        raise UsageError(f"--output {output!r}: expected a file to write; received "
                         f"{not_a_file(path)}")
    folder = path.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise UsageError(f"--output {output!r}: expected a file in a writable folder; "
                         f"{str(folder)!r} is not one")
    return path


def _decoded(files: Sequence[Path]) -> Iterator[np.ndarray]:
    for path in files:
        yield decode(path)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Each row's probabilities (float64: no overflow, rows that sum to 1)."""
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def csv_text(files: Sequence[Path], probabilities: np.ndarray, names: Sequence[str],
             top: int = 1) -> str:
    """One row per image: path, class, probability, and with top > 1 the next classes
    (class_2, probability_2, ...), most probable first."""
    header = ["path", "class", "probability"]
    for k in range(2, top + 1):
        header += [f"class_{k}", f"probability_{k}"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for path, row in zip(files, probabilities, strict=True):
        best = np.argsort(-row, kind="stable")[:top]  # ties: the lower index first
        cells = [str(path)]
        for k in best:
            cells += [names[k], f"{row[k]:.6f}"]
        writer.writerow(cells)
    return buffer.getvalue()
