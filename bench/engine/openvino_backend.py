"""The frozen backbone on OpenVINO's CPU runtime: converted once, cached on disk, float32.

Conversion freezes the backbone's traced inference function (its weights folded into the
graph as constants, as TensorFlow's converters do) and hands OpenVINO the GraphDef, in memory.
OpenVINO's documented route for a Keras 3 model, `model.export(dir, format="tf_saved_model")`
then `openvino.convert_model(dir)`, gives the same graph but writes and re-reads a SavedModel:
it cost DenseNet121 12.1 s against 3.5 s (results/PERF.md), the same features and speed after.
A graph that keeps nested functions after freezing (Keras' XLA-compiled grouped convolutions:
ConvNeXt) goes the SavedModel route, which OpenVINO's frontend inlines.

The converted model (IR: an .xml graph and a .bin of weights) is kept under the cache folder,
keyed by everything that makes it, and compiled for one batch size with
INFERENCE_PRECISION_HINT=f32: without the hint OpenVINO may compute in bf16 or f16 on CPUs
that have them, which changed ConvNeXtTiny's features by 1e-2. OpenVINO's own compiled-model
cache (CACHE_DIR) lives beside the converted models: a second compilation reads it.

OpenVINO checks nothing of a blob it reads from CACHE_DIR but its header (OpenVINO 2026.4): a
truncated, emptied or overwritten blob is compiled again silently, but bytes flipped inside
it are used as they are (MobileNet_0.25's features moved by their whole scale, no error). So
each compilation gets a CACHE_DIR of its own (`openvino-compiled/KEY/`: the IR, shape and
config), whose blobs' sha256 bench records after compiling and checks before: a blob that
does not match (or has none recorded) is removed, with one warning, and compiled again.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from bench.cache import OPENVINO_COMPILED_DIR, OPENVINO_DIR, process_caches
from bench.console import captured_stderr
from bench.fsio import write_text_atomic
from bench.identity import file_sha256
from bench.resultsdir import TMP_MARK

# float32 arithmetic on every CPU, and one inference request at a time (extraction is
# synchronous, batch by batch): the latency hint gives that request every core.
COMPILE_CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}


def version() -> str | None:
    """OpenVINO's version (e.g. "2026.4.1"), or None when the package is not installed."""
    try:
        import openvino
    except ImportError:
        return None
    return openvino.__version__.split("-", 1)[0]


def _core():
    import openvino


    once = process_caches().once
    if "openvino_core" not in once:
        once["openvino_core"] = openvino.Core()
    return once["openvino_core"]


def model_key(**parts) -> str:
    """sha256 of what makes a converted model: backbone, its arguments, weights identity,
    size, pooling, and the versions of Keras, TensorFlow and OpenVINO that converted it."""
    text = json.dumps({"format": 2, "openvino": version(), **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Converted:
    """A converted backbone on disk and what getting it cost."""

    xml: Path
    seconds: float  # conversion (0 when it came from the cache) plus reading it
    was_cached: bool
    route: str = ""  # how it was converted now: "frozen graph" or "SavedModel"


# Beside a converted model: the sha256 of its files, written before the folder is renamed into
# place and checked before every use, as the feature cache checks its files.
CHECKSUM_FILE = "checksum.json"
_MODEL_FILES = ("model.xml", "model.bin")


def folder(key: str, label: str, store: Path | None) -> Path | None:
    """Where the converted model of `key` lives under `store` (None: no store)."""
    return store / OPENVINO_DIR / f"{label}-{key[:16]}" if store else None


def is_cached(key: str, label: str, store: Path | None) -> bool:
    """Whether a converted model with its checksum is there (checked in full when used)."""
    final = folder(key, label, store)
    return bool(final and all((final / name).is_file()
                              for name in (*_MODEL_FILES, CHECKSUM_FILE)))


def _write_checksum(ir: Path) -> None:
    (ir / CHECKSUM_FILE).write_text(json.dumps(
        {name: file_sha256(ir / name) for name in _MODEL_FILES}))


def _damage(final: Path) -> str | None:
    """What is wrong with a cached converted model, or None when its files match its
    checksum. Only regular files are opened (a FIFO would block)."""
    try:
        for name in (*_MODEL_FILES, CHECKSUM_FILE):
            if not (final / name).is_file():
                return f"{name} is not a regular file"
        recorded = json.loads((final / CHECKSUM_FILE).read_text())
        for name in _MODEL_FILES:
            if not isinstance(recorded, dict) or recorded.get(name) != file_sha256(final / name):
                return f"{name} does not match its checksum"
    except (OSError, ValueError) as err:
        return f"unreadable: {type(err).__name__}"
    return None


def _remove_stale_work(parent: Path) -> None:
    """Removes the temporary folders of conversions whose process is gone (killed midway):
    their names start with the converting process's id (.PID.LABEL.*)."""
    for work in parent.glob(f".*{TMP_MARK}"):
        try:
            pid = int(work.name.split(".")[1])
            os.kill(pid, 0)
        except (IndexError, ValueError):
            continue  # not one of ours
        except ProcessLookupError:
            shutil.rmtree(work, ignore_errors=True)
        except PermissionError:
            pass  # alive, another user's


def converted(backbone: keras.Model, key: str, label: str, store: Path | None,
              traced=None) -> Converted:
    """The backbone as OpenVINO IR: from `store` when converted before, else converted now and
    saved there (written in a temporary folder, renamed into place: a reader never sees half;
    two writers racing both succeed, the second rename losing to the first). `traced`: the
    backbone's inference as a traced tf.function (batches of float32 images), frozen instead
    of tracing the backbone again."""
    start = time.perf_counter()
    final = folder(key, label, store)
    if final and final.exists():
        problem = _damage(final)
        if problem is None:
            return Converted(final / "model.xml", time.perf_counter() - start, True)
        print(f"bench: warning: converted model {str(final)!r} is damaged ({problem}); "
              "converting it again", file=sys.stderr, flush=True)
        shutil.rmtree(final, ignore_errors=True)
        with contextlib.suppress(OSError):
            final.unlink()  # a file where the folder should be
    parent = final.parent if final else None
    if parent:
        try:
            parent.mkdir(parents=True, exist_ok=True)
            _remove_stale_work(parent)
        except OSError:
            parent = None  # an unwritable cache: convert into a temporary folder only
    work = Path(tempfile.mkdtemp(prefix=f".{os.getpid()}.{label}.", suffix=TMP_MARK,
                                 dir=parent))
    try:
        xml, route = _convert(backbone, work, traced)
        if final and parent:
            try:
                os.replace(work / "ir", final)
            except OSError:  # another process put it there first, or the folder is full
                pass
            if is_cached(key, label, store):
                xml = final / "model.xml"
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if xml.is_relative_to(work):  # not stored: the IR lives as long as this process
        atexit.register(shutil.rmtree, work, ignore_errors=True)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return Converted(xml, time.perf_counter() - start, False, route)


def _convert(backbone: keras.Model, work: Path, traced=None) -> tuple[Path, str]:
    """The backbone's inference function converted and saved as float32 IR; (its .xml, route)."""
    (work / "ir").mkdir()
    xml = work / "ir" / "model.xml"
    route = save_ir(backbone, xml, work, traced)
    _write_checksum(work / "ir")
    return xml, route


def save_ir(model: keras.Model, xml: Path, work: Path, traced=None) -> str:
    """Converts `model`'s inference (`traced`: the same as a traced tf.function) and saves it
    as float32 IR, `xml` and the .bin beside it; returns the route taken. `work`: a folder for
    the SavedModel route's files, removed after.

    Frozen, its variables are constants OpenVINO folds like the SavedModel's (EfficientNetB0:
    324 images/s either way). Converting the traced function with its variables unfrozen gave
    a graph OpenVINO optimised less (77 images/s).
    """
    import openvino

    with captured_stderr():
        graph = _frozen_graph(model, traced)
        if graph is not None:
            converted_model, route = openvino.convert_model(graph), "frozen graph"
        else:
            saved = work / "saved_model"
            model.export(str(saved), format="tf_saved_model", verbose=False)
            converted_model, route = openvino.convert_model(str(saved)), "SavedModel"
            shutil.rmtree(saved, ignore_errors=True)
    # float32 weights as trained
    openvino.save_model(converted_model, str(xml), compress_to_fp16=False)
    return route


def _frozen_graph(backbone: keras.Model, traced=None):
    """The inference function (any batch) as a GraphDef with its weights as constants, or
    None when nested functions survive freezing (XLA-compiled calls), which OpenVINO's GraphDef
    frontend cannot read."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    if traced is not None:
        function = traced.get_concrete_function()
    else:
        shape = (None, *backbone.input_shape[1:])
        forward = tf.function(lambda x: backbone(x, training=False))
        function = forward.get_concrete_function(tf.TensorSpec(shape, backbone.inputs[0].dtype))
    graph = convert_variables_to_constants_v2(function).graph.as_graph_def()
    return None if graph.library.function else graph


# In each compilation's folder of OpenVINO's compiled-model cache: the sha256 of its blobs.
COMPILED_CHECKSUM_FILE = "checksum.json"


def compiled_cache_folder(store: Path, xml: Path, shape: list[int]) -> Path:
    """The CACHE_DIR of one compilation: keyed by the IR (the sha256 of its files, which every
    conversion records beside them), the input shape, the config and OpenVINO's version."""
    recorded = xml.parent / CHECKSUM_FILE
    ir = recorded.read_text() if recorded.is_file() else str(xml.resolve())
    text = json.dumps({"ir": ir, "shape": shape, "config": COMPILE_CONFIG,
                       "openvino": version()}, sort_keys=True)
    return store / OPENVINO_COMPILED_DIR / hashlib.sha256(text.encode()).hexdigest()[:16]


def _blobs(folder: Path) -> list[Path]:
    """What OpenVINO wrote in a CACHE_DIR: everything but bench's checksum and temporaries."""
    return sorted(p for p in folder.iterdir()
                  if p.name != COMPILED_CHECKSUM_FILE and not p.name.startswith("."))


def _recorded_blobs(folder: Path) -> dict:
    try:
        recorded = json.loads((folder / COMPILED_CHECKSUM_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return recorded if isinstance(recorded, dict) else {}


def checked_compiled_cache(store: Path, xml: Path, shape: list[int]) -> Path | None:
    """This compilation's CACHE_DIR with every blob that does not match its recorded sha256
    (or has none: a compilation killed before recording it) removed, with one warning; None
    when the folder cannot be made or a damaged blob cannot be removed (compile uncached).

    OpenVINO reads a blob whose bytes were flipped without a complaint and computes with them,
    so a blob is used only when its bytes are the ones recorded after it was written."""
    folder = compiled_cache_folder(store, xml, shape)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.parent.glob("*.blob"):  # the unchecked layout before these folders
            with contextlib.suppress(OSError):
                old.unlink()
        recorded = _recorded_blobs(folder)
        damaged = [p for p in _blobs(folder)
                   if not p.is_file() or recorded.get(p.name) != file_sha256(p)]
        if not damaged:
            return folder
        names = ", ".join(p.name for p in damaged)
        print(f"bench: warning: OpenVINO's compiled model cache {str(folder)!r} holds blobs "
              f"that do not match their recorded checksum ({names}); removed, compiling again",
              file=sys.stderr, flush=True)
        for path in damaged:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    except OSError:
        return None  # an unwritable cache: compile without it rather than read an unchecked blob
    return folder


def record_compiled_cache(folder: Path) -> None:
    """Records the sha256 of the blobs OpenVINO wrote in `folder` (a compilation's CACHE_DIR),
    unless they are recorded already; a cache that cannot be written is left as it is."""
    try:
        blobs = {p.name: file_sha256(p) for p in _blobs(folder) if p.is_file()}
        if blobs and blobs != _recorded_blobs(folder):
            write_text_atomic(folder / COMPILED_CHECKSUM_FILE, json.dumps(blobs, sort_keys=True))
    except OSError:
        pass


class CompiledBackbone:
    """The converted backbone compiled for batches of `batch_size` (size x size x 3, float32).

    A shorter last batch is padded to the compiled shape: one static shape is OpenVINO's
    fastest, and the padded rows' features are dropped.
    """

    def __init__(self, xml: Path, batch_size: int, size: int, store: Path | None = None):
        start = time.perf_counter()
        core = _core()
        model = core.read_model(str(xml))
        shape = [batch_size, size, size, 3]
        model.reshape(shape)
        config = dict(COMPILE_CONFIG)
        # OpenVINO's compiled-model cache: a later compilation only reads a blob
        blobs = checked_compiled_cache(store, xml, shape) if store else None
        if blobs:
            config["CACHE_DIR"] = str(blobs)
        self.compiled = core.compile_model(model, "CPU", config)
        if blobs:
            record_compiled_cache(blobs)
        self.request = self.compiled.create_infer_request()
        self.batch_size = batch_size
        self.width = int(self.compiled.outputs[0].get_partial_shape()[-1].get_length())
        self.compile_s = time.perf_counter() - start

    def __call__(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        if n < self.batch_size:
            x = np.concatenate([x, np.zeros((self.batch_size - n, *x.shape[1:]), x.dtype)])
        self.request.infer({0: np.ascontiguousarray(x, dtype=np.float32)})
        return np.array(self.request.get_output_tensor(0).data[:n], dtype=np.float32)
