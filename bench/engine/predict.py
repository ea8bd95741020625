"""The TensorFlow side of python -m bench predict: an exported classifier loaded, and run on
decoded images, a batch of one shape at a time.

The model takes uint8 images of any size (bench.engine.export), but a batch is one array, so
images are grouped by shape: a batch goes through as soon as `batch_size` images of its shape
are waiting, and every waiting image does when they hold more than `max_bytes` together (memory
stays that bound plus one batch, whatever the number of shapes).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import keras
import numpy as np


class PredictError(ValueError):
    """The file is not a classifier predict can run: one line."""


def load_classifier(path: Path) -> keras.Model:
    """The model at `path`, checked to take one batch of RGB images of any size and return one
    row of class scores per image."""
    try:
        model = keras.models.load_model(path)  # safe_mode: a file cannot run code of its own
    except Exception as err:  # whatever Keras refuses to load, the file is not for us
        reason = " ".join(str(err).split())[:300] or type(err).__name__
        raise PredictError(f"{path}: expected a Keras model written by python -m bench export; "
                           f"received a file Keras cannot load ({reason})") from None
    inputs = [tuple(t.shape) for t in model.inputs]
    outputs = [tuple(t.shape) for t in model.outputs]
    if len(inputs) != 1 or len(inputs[0]) != 4 or inputs[0][1:] != (None, None, 3):
        raise PredictError(f"{path}: expected a model of RGB images of any size, input shape "
                           f"(None, None, None, 3), as bench export writes; received inputs "
                           f"{inputs}")
    if len(outputs) != 1 or len(outputs[0]) != 2 or not outputs[0][1]:
        raise PredictError(f"{path}: expected one output of class scores, shape (None, "
                           f"classes); received outputs {outputs}")
    return model


def n_classes(model: keras.Model) -> int:
    return int(model.outputs[0].shape[-1])


def predict_logits(model: keras.Model, images: Iterable[np.ndarray], batch_size: int,
                   max_bytes: int) -> np.ndarray:
    """The model's outputs for `images` (uint8, H x W x 3 each), in their order."""
    waiting: dict[tuple[int, ...], list[tuple[int, np.ndarray]]] = {}
    found: dict[int, np.ndarray] = {}
    held = 0

    def run(group: list[tuple[int, np.ndarray]]) -> None:
        batch = np.stack([pixels for _, pixels in group])
        logits = keras.ops.convert_to_numpy(model(batch, training=False))
        found.update((i, row) for (i, _), row in zip(group, logits, strict=True))

    for i, pixels in enumerate(images):
        group = waiting.setdefault(pixels.shape, [])
        group.append((i, pixels))
        held += pixels.nbytes
        if len(group) == batch_size:
            run(waiting.pop(pixels.shape))
            held -= sum(p.nbytes for _, p in group)
        elif held > max_bytes:
            for shape in list(waiting):
                run(waiting.pop(shape))
            held = 0
    for group in waiting.values():
        run(group)
    return np.stack([found[i] for i in range(len(found))]) if found else \
        np.zeros((0, n_classes(model)), np.float32)
