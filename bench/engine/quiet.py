"""TensorFlow start-up without its C++ chatter on stderr, where our one-line errors go."""

from __future__ import annotations

import os
import sys

from bench.console import captured_stderr


def import_tensorflow() -> None:
    """Imports TensorFlow and Keras and initialises devices with stderr captured.

    On a machine without CUDA, TensorFlow's C++ runtime logs "Could not find cuda drivers" and
    "failed call to cuInit" whatever TF_CPP_MIN_LOG_LEVEL says. What it printed is replayed if
    the import fails, so a broken install still explains itself.
    """
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    failure = None
    with captured_stderr() as said:
        try:
            import keras  # noqa: F401
            import tensorflow as tf

            tf.config.list_physical_devices()  # the cuInit attempt happens here, not later
        except BaseException as err:
            failure = err
    if failure is not None:
        sys.stderr.write("".join(said))
        raise failure
