"""TensorFlow start-up without its C++ chatter on stderr, where our one-line errors go, and
without the Keras warnings that say what bench already says."""

from __future__ import annotations

import os
import re
import sys
import warnings

from bench.console import captured_stderr

# MobileNet, V2 and V3 warn, in two lines with a source line, that their 224 px ImageNet file
# loads at another input size: bench's rows name the file loaded (weights_file, and
# weights_substituted_for with a note when another size's file stood in) and --list says which
# sizes each family has files for.
_REDUNDANT_WARNINGS = ("`input_shape` is undefined or non-square",)


def _ignore_redundant_warnings() -> None:
    """Keras' warnings that repeat what bench reports itself are not shown."""
    for message in _REDUNDANT_WARNINGS:
        warnings.filterwarnings("ignore", message=re.escape(message), category=UserWarning)


def import_tensorflow() -> None:
    """Imports TensorFlow and Keras and initialises devices with stderr captured.

    On a machine without CUDA, TensorFlow's C++ runtime logs "Could not find cuda drivers" and
    "failed call to cuInit" whatever TF_CPP_MIN_LOG_LEVEL says. What it printed is replayed if
    the import fails, so a broken install still explains itself.
    """
    _ignore_redundant_warnings()
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
