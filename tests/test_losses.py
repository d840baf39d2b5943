"""Each loss term against an independent NumPy computation of its formula."""

import numpy as np
import pytest
import tensorflow as tf

from styleflow.objective import losses

rng = np.random.default_rng(42)


def arr(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def np_gram(f):
    flat = f.reshape(-1, f.shape[-1]).astype(np.float64)
    return flat.T @ flat


def test_gram_matrix():
    f = arr(1, 5, 7, 4)
    got = losses.gram_matrix(tf.constant(f)).numpy()
    # Independently: G[i, j] = Σ over positions of f_i · f_j
    want = np.einsum("nhwi,nhwj->ij", f.astype(np.float64), f.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_content_loss_sum():
    a, b = arr(1, 4, 6, 8), arr(1, 4, 6, 8)
    got = float(losses.content_loss_sum(tf.constant(a), tf.constant(b)))
    assert got == pytest.approx(np.sum((a.astype(np.float64) - b) ** 2), rel=1e-5)


def test_style_loss_keras_normalisation():
    # 5 channels: the example's constant 3² must not be confused with the layer's channel count.
    fa, fb = arr(1, 6, 5, 5), arr(1, 6, 5, 5)
    ga, gb = np_gram(fa), np_gram(fb)
    rows, cols = 30, 20
    got = float(losses.style_loss_keras(tf.constant(ga, tf.float32), tf.constant(gb, tf.float32),
                                        rows * cols))
    want = np.sum((gb - ga) ** 2) / (4 * 3 ** 2 * (rows * cols) ** 2)
    assert got == pytest.approx(want, rel=1e-5)


def test_total_variation_keras():
    x = arr(1, 5, 6, 3) * 10
    got = float(losses.total_variation_keras(tf.constant(x)))
    want = 0.0
    x64 = x.astype(np.float64)[0]
    for i in range(4):
        for j in range(5):
            a = (x64[i, j] - x64[i + 1, j]) ** 2
            b = (x64[i, j] - x64[i, j + 1]) ** 2
            want += np.sum((a + b) ** 1.25)
    assert got == pytest.approx(want, rel=1e-5)


def test_total_variation_keras_gradient_matches_its_formula():
    """The written-out gradient against central differences of an independent float64 NumPy
    TV, on an image with flat patches (zero differences, where energy^0.25 has no slope) and
    at every border row and column."""
    x = arr(1, 5, 6, 3) * 10
    x[0, 1:3, 1:4] = 7.0  # flat: zero differences inside

    def tv(v):
        a = (v[:-1, :-1] - v[1:, :-1]) ** 2
        b = (v[:-1, :-1] - v[:-1, 1:]) ** 2
        return np.sum((a + b) ** 1.25)

    image = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(image)
        loss = losses.total_variation_keras(image)
    got = tape.gradient(loss, image).numpy()[0]
    x64, want, eps = x.astype(np.float64)[0], np.zeros(x.shape[1:]), 1e-4
    for index in np.ndindex(*want.shape):
        up, down = x64.copy(), x64.copy()
        up[index] += eps
        down[index] -= eps
        want[index] = (tv(up) - tv(down)) / (2 * eps)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


def test_content_loss_mean_is_2_l2_over_size():
    a, b = arr(1, 4, 6, 8), arr(1, 4, 6, 8)
    l2 = np.sum((a.astype(np.float64) - b) ** 2) / 2  # tf.nn.l2_loss
    got = float(losses.content_loss_mean(tf.constant(a), tf.constant(b)))
    assert got == pytest.approx(2 * l2 / a.size, rel=1e-5)


def test_gram_matrix_mean_and_style_loss_mean():
    f, target = arr(1, 4, 5, 6), arr(6, 6)
    gram = losses.gram_matrix_mean(tf.constant(f)).numpy()
    np.testing.assert_allclose(gram, np_gram(f) / f.size, rtol=1e-5, atol=1e-6)
    got = float(losses.style_loss_mean(tf.constant(gram), tf.constant(target)))
    want = 2 * (np.sum((np_gram(f) / f.size - target) ** 2) / 2) / target.size
    assert got == pytest.approx(want, rel=1e-5)


def test_total_variation_mean():
    x = arr(1, 5, 6, 3)
    x64 = x.astype(np.float64)
    dy, dx = x64[:, 1:] - x64[:, :-1], x64[:, :, 1:] - x64[:, :, :-1]
    want = 2 * (np.sum(dy ** 2) / 2) / dy.size + 2 * (np.sum(dx ** 2) / 2) / dx.size
    assert float(losses.total_variation_mean(tf.constant(x))) == pytest.approx(want, rel=1e-5)


def test_gram_gradient_equals_the_matmul_gradient():
    """flat_gram's one-product gradient F(dG + dGᵀ) equals what TensorFlow derives for FᵀF,
    for an upstream gradient that is not symmetric too."""
    import numpy as np
    import tensorflow as tf

    from styleflow.objective.losses import flat_gram

    rng = np.random.default_rng(0)
    flat = tf.constant(rng.normal(size=(300, 24)).astype(np.float32))
    weights = tf.constant(rng.normal(size=(24, 24)).astype(np.float32))  # not symmetric
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(flat)
        ours = tf.reduce_sum(flat_gram(flat) * weights)
        plain = tf.reduce_sum(tf.matmul(flat, flat, transpose_a=True) * weights)
    np.testing.assert_allclose(ours.numpy(), plain.numpy(), rtol=1e-6)
    want = tape.gradient(plain, flat).numpy()
    got = tape.gradient(ours, flat).numpy()
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
