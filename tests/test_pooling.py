"""pooling.MaxPool (XLA's loops) gives Keras' MaxPooling2D's results bit for bit, ties and odd
sizes included, and is built where oneDNN has no AVX-512."""

import numpy as np
import pytest
import tensorflow as tf

import keras

from styleflow.model import machine
from styleflow.model.network import build_extractor
from styleflow.model.pooling import MaxPool
from styleflow.model.weights import random_weights


def _pool_and_gradient(layer, x, dy):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
    return y, tape.gradient(y, x, output_gradients=dy)


@pytest.mark.parametrize("shape", [(1, 12, 16, 8), (1, 13, 17, 5)])
def test_same_as_keras_with_ties_and_odd_sizes(shape):
    rng = np.random.default_rng(shape[1])
    # Values on a coarse grid, so that many windows hold their largest value twice or more
    # (zeros, as after a ReLU, and positive ones): the gradient must go to the first.
    x = tf.constant(np.maximum(np.round(rng.normal(0, 1, shape) * 2), 0).astype(np.float32))
    dy = tf.constant(rng.normal(0, 1, (1, shape[1] // 2, shape[2] // 2, shape[3]))
                     .astype(np.float32))
    windows = x.numpy()[0, :shape[1] // 2 * 2, :shape[2] // 2 * 2].reshape(
        shape[1] // 2, 2, shape[2] // 2, 2, shape[3])
    peak = windows.max(axis=(1, 3), keepdims=True)
    assert ((windows == peak).sum(axis=(1, 3)) > 1)[peak[:, 0, :, 0] > 0].any()  # positive ties
    want_y, want_grad = _pool_and_gradient(keras.layers.MaxPooling2D(2, strides=2), x, dy)
    assert np.abs(want_grad).max() > 0
    layer = MaxPool()
    # Eagerly and traced (where the size is known only when XLA compiles).
    for run in (_pool_and_gradient, tf.function(_pool_and_gradient)):
        y, grad = run(layer, x, dy)
        np.testing.assert_array_equal(y.numpy(), want_y.numpy())
        np.testing.assert_array_equal(grad.numpy(), want_grad.numpy())


@pytest.mark.parametrize("avx512", [False, True])
def test_built_where_onednn_has_no_avx512(monkeypatch, avx512):
    monkeypatch.setattr(machine, "transposed_convolutions", lambda dtype: True)
    monkeypatch.setattr(machine, "onednn_avx512", lambda: avx512)
    model = build_extractor(random_weights(0).layers, ["block3_conv1"], fuse_pooling=False)
    pools = [layer for layer in model.layers if layer.name.endswith("_pool")]
    assert [layer.name for layer in pools] == ["block1_pool", "block2_pool"]
    assert all(isinstance(layer, MaxPool) != avx512 for layer in pools)
    # Where the conv layers before them pool as well (where their maps are convolved by
    # Winograd), they hold the same kind of pooling layer for the maps that are not.
    model = build_extractor(random_weights(0).layers, ["block3_conv1"])
    held = [model.get_layer(name)._pool for name in ("block1_conv2", "block2_conv2")]
    assert all(isinstance(layer, MaxPool) != avx512 for layer in held)
    assert all(isinstance(model.get_layer(name), keras.layers.Identity)
               for name in ("block1_pool", "block2_pool"))
    # Average pooling and Keras' own convolutions keep Keras' layers.
    for kwargs in ({"pooling": "avg"}, {"convolution": "keras"}):
        model = build_extractor(random_weights(0).layers, ["block2_conv1"], **kwargs)
        assert not any(isinstance(layer, MaxPool) for layer in model.layers)
