"""frozen_conv's convolutions (oneDNN's input-gradient kernels) give the same features and image
gradient as Keras' Conv2D, hold their weights as Conv2D does, and are used where they pay."""

import numpy as np
import pytest
import tensorflow as tf

from styleflow.model import frozen_conv, machine
from styleflow.defaults import FULL_CONTENT_LAYER, FULL_STYLE_LAYERS
from styleflow.model.network import build_extractor
from styleflow.model.weights import random_weights

LAYERS = [FULL_CONTENT_LAYER, *FULL_STYLE_LAYERS]


def _features_and_gradient(convolution):
    model = build_extractor(random_weights(3).layers, LAYERS, convolution=convolution)
    x = tf.constant(np.random.default_rng(0).normal(0, 50, (1, 48, 80, 3)).astype(np.float32))

    @tf.function
    def run(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            feats = model(x)
            loss = sum(tf.reduce_sum(tf.square(f)) * (i + 1)
                       for i, f in enumerate(feats[n] for n in LAYERS))
        return feats, tape.gradient(loss, x)

    feats, grad = run(x)
    return {n: f.numpy() for n, f in feats.items()}, grad.numpy(), model


def test_same_features_and_gradient_as_keras_conv2d():
    keras_feats, keras_grad, _ = _features_and_gradient("keras")
    feats, grad, model = _features_and_gradient("transposed")
    assert not any(type(layer).__name__ == "Conv2D" for layer in model.layers)
    for name in LAYERS:
        want = keras_feats[name]
        assert np.abs(feats[name] - want).max() <= 1e-5 * np.abs(want).max(), name
    assert np.abs(grad - keras_grad).max() <= 1e-4 * np.abs(keras_grad).max()
    assert np.abs(keras_grad).max() > 0


def test_weights_are_the_layers_own_and_not_trained():
    source = random_weights(5, ["block1_conv2"]).layers
    model = build_extractor(source, ["block1_conv2"], convolution="transposed")
    assert not model.trainable_variables
    kernel, bias = model.get_layer("block1_conv2").get_weights()
    np.testing.assert_array_equal(kernel, source["block1_conv2"][0])
    np.testing.assert_array_equal(bias, source["block1_conv2"][1])
    # set_weights reaches the computation (nothing derived from the old weights is kept).
    layer = model.get_layer("block1_conv1")
    x = tf.ones((1, 16, 16, 3))
    before = model(x)["block1_conv2"].numpy()
    k, b = layer.get_weights()
    layer.set_weights([k, b + 100.0])
    assert np.abs(model(x)["block1_conv2"].numpy() - before).max() > 1.0


def test_used_for_float32_with_onednn_only(monkeypatch):
    monkeypatch.setattr(machine, "onednn_enabled", lambda: True)
    monkeypatch.setattr(machine.platform, "machine", lambda: "x86_64")
    assert machine.transposed_convolutions("float32")
    assert not machine.transposed_convolutions("bfloat16")
    monkeypatch.setattr(machine, "gpu_visible", lambda: True)  # cuDNN convolves there
    assert not machine.transposed_convolutions("float32")
    monkeypatch.setattr(machine, "gpu_visible", lambda: False)
    monkeypatch.setattr(machine.platform, "machine", lambda: "aarch64")
    assert not machine.transposed_convolutions("float32")
    monkeypatch.setattr(machine.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(machine, "onednn_enabled", lambda: False)
    # TensorFlow's own kernels run the input-gradient op 2.5x slower than Conv2D.
    assert not machine.transposed_convolutions("float32")
    with pytest.raises(ValueError):
        build_extractor(random_weights(0).layers, ["block1_conv1"], convolution="fast")


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("channels", [3, 16])
def test_both_forward_forms_and_the_few_channel_gradient_match_autodiff(monkeypatch, fused,
                                                                         channels):
    """The fused forward (Conv2D, BiasAdd, ReLU) and the input-gradient one give the same
    features, and the gradient (by the matrix product and shifted sums for 3 channels, by
    the input-gradient kernel for more) matches TensorFlow's own of the same formula."""
    monkeypatch.setattr(machine, "onednn_convolves_by_gemm", lambda: not fused)
    rng = np.random.default_rng(channels)
    kernel = rng.normal(0, 0.2, (3, 3, channels, 8)).astype(np.float32)
    bias = rng.normal(0, 0.5, 8).astype(np.float32)
    layer = frozen_conv.make_layer(kernel, bias, f"conv{channels}")
    assert layer._fused is fused
    x = tf.constant(rng.normal(0, 1, (1, 13, 17, channels)).astype(np.float32))
    weights = tf.constant(rng.normal(0, 1, (1, 13, 17, 8)).astype(np.float32))

    def run(convolve):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = convolve(x)
            loss = tf.reduce_sum(tf.square(y) * weights)
        return y.numpy(), tape.gradient(loss, x).numpy()

    y, grad = run(layer)
    want_y, want_grad = run(lambda v: tf.nn.relu(tf.nn.conv2d(v, kernel, 1, "SAME") + bias))
    assert (want_y == 0).any() and (want_y > 0).any()  # the ReLU's mask matters
    assert np.abs(y - want_y).max() <= 1e-6 * np.abs(want_y).max()
    assert np.abs(grad - want_grad).max() <= 1e-5 * np.abs(want_grad).max()
