"""TensorFlow start-up without its C++ chatter on stderr, where our one-line errors go."""

from __future__ import annotations

import os
import sys
import tempfile


def import_tensorflow() -> None:
    """Imports TensorFlow and Keras and initialises devices with stderr captured.

    On a machine without CUDA, TensorFlow's C++ runtime logs "Could not find cuda drivers" and
    "failed call to cuInit" whatever TF_CPP_MIN_LOG_LEVEL says. What it printed is replayed if
    the import fails, so a broken install still explains itself.
    """
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        try:
            import keras  # noqa: F401
            import tensorflow as tf

            tf.config.list_physical_devices()  # the cuInit attempt happens here, not later
        except BaseException:
            os.dup2(saved, 2)
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
