"""Decoded images of any size -> one stored size, with the lesson's resize_with_pad.

The lesson resizes with `tf.image.resize_with_pad(x, 160, 160, method=BILINEAR)`; images of
mixed sizes are stored after that same resize (to the largest size the sweep's backbones need),
rounded to the nearest integer and kept as uint8, so that they take a byte per value and every
backbone's own resize starts from one array.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf


@tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8),
                              tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32)])
def _resize(image, height, width):
    resized = tf.image.resize_with_pad(image, height, width,
                                       method=tf.image.ResizeMethod.BILINEAR)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def resize_into(out: np.ndarray, images: Sequence[tuple[int, np.ndarray]]) -> None:
    """Each (index, uint8 H x W x 3 image) resized with padding to out's size, into out[index]."""
    height, width = out.shape[1:3]
    for i, pixels in images:
        out[i] = _resize(pixels, height, width).numpy()
