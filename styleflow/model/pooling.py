"""VGG19's 2x2 max pooling as two small XLA loops, for CPUs where oneDNN's pooling has no AVX-512.

Capped at AVX2, oneDNN's max pooling and its gradient took 17.3 ms at 400x300 (the four
poolings forward and back) against 11.7 ms for these loops; with AVX-512 oneDNN's are the
faster (9.1 against 10.2 ms; docs/performance.md, stop 43), so `network.build_extractor` uses
this layer only where `machine.onednn_avx512` is false. The results are bit-identical to Keras'
layer: a maximum is exact, and the gradient goes, as TensorFlow's and oneDNN's do, to the first
largest value of each window in row-major order.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from .gradients import custom_gradient
from .xla_functions import xla_function


def _windows(x):
    """(1, h, w, c) -> (h // 2, 2, w // 2, 2, c): the 2x2 windows (a last odd row or column is
    dropped, as Keras' 'valid' pooling drops it)."""
    _, h, w, c = tf.unstack(tf.shape(x))
    return tf.reshape(x[0, :h // 2 * 2, :w // 2 * 2], (h // 2, 2, w // 2, 2, c))


def _pool(x):
    """(1, h, w, c) -> (1, h // 2, w // 2, c): the largest of each 2x2 window."""
    return tf.reduce_max(_windows(x), axis=(1, 3))[None]


def _pool_gradient(x, y, dy):
    """The gradient of `_pool` with respect to x, given its output y and y's gradient dy."""
    _, h, w, c = tf.unstack(tf.shape(x))
    hit = tf.equal(_windows(x), y[0][:, None, :, None])
    g, zero = dy[0], tf.zeros_like(dy[0])
    shares, taken = [], tf.zeros_like(hit[:, 0, :, 0])  # a window's maximum already given
    for i in range(2):
        for j in range(2):
            shares.append(tf.where(hit[:, i, :, j] & ~taken, g, zero))
            taken |= hit[:, i, :, j]
    rows = [tf.stack(shares[2 * i:2 * i + 2], axis=2) for i in range(2)]  # (h/2, w/2, 2, c)
    dx = tf.reshape(tf.stack(rows, axis=1), (h // 2 * 2, w // 2 * 2, c))
    return tf.pad(dx, [[0, h % 2], [0, w % 2], [0, 0]])[None]


def _compiled(kind: str, dtype: tf.DType):
    """The XLA-compiled loop `kind` ("forward", "backward") for `dtype` (`xla_functions`)."""
    maps = tf.TensorSpec((1, None, None, None), dtype)
    if kind == "forward":
        return xla_function(_pool, maps)
    return xla_function(_pool_gradient, maps, maps, maps)


def max_pool(x: tf.Tensor) -> tf.Tensor:
    """2x2 max pooling with stride 2 of a (1, h, w, c) map, and its gradient, by XLA."""
    dtype = x.dtype

    @custom_gradient
    def pool(x):
        y = _compiled("forward", dtype)(x)
        y.set_shape(_pooled_shape(x.shape))

        def gradient(dy):
            dx = _compiled("backward", dtype)(x, y, dy)
            dx.set_shape(x.shape)
            return dx

        return y, gradient

    return pool(x)


def _pooled_shape(shape):
    return (shape[0], *(None if d is None else d // 2 for d in shape[1:3]), shape[3])


class MaxPool(keras.layers.Layer):
    """Keras' MaxPooling2D(2, strides=2) computed by `max_pool`."""

    def call(self, x):
        return max_pool(x)

    def compute_output_shape(self, input_shape):
        return _pooled_shape(input_shape)
