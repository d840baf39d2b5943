"""The matting Laplacian (styleflow.objective.matting): the sparse matrix against its definition
and pymatting, and the matrix-free TensorFlow energy, gradient and row strips against the
matrix."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from styleflow.objective import matting
from styleflow.objective.matting import MattingLaplacian, affine_residual, sparse_laplacian


def smooth_image(h, w, seed, grey=False) -> np.ndarray:
    """A smooth random uint8 colour image (h, w, 3), as tests/conftest.py's make_image; `grey`
    makes every window's colours collinear (the hard case for ε = 1e-7)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, h // 4), max(2, w // 4), 3), dtype=np.uint8)
    if grey:
        small[...] = small[..., :1]
    return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR))


def definition_laplacian(image: np.ndarray, epsilon: float) -> np.ndarray:
    """The oracle: the dense Laplacian straight from Levin et al.'s definition, one window and
    one pixel pair at a time."""
    h, w, _ = image.shape
    laplacian = np.zeros((h * w, h * w))
    for y in range(1, h - 1):
        for x in range(1, w - 1):
            pixels = [(y + dy) * w + (x + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
            colours = np.array([image[p // w, p % w] for p in pixels])
            mean = colours.sum(axis=0) / 9
            covariance = sum(np.outer(c - mean, c - mean) for c in colours) / 9
            inverse = np.linalg.inv(covariance + epsilon / 9 * np.eye(3))
            for i, pi in enumerate(pixels):
                for j, pj in enumerate(pixels):
                    affinity = 1 + (colours[i] - mean) @ inverse @ (colours[j] - mean)
                    laplacian[pi, pj] += (i == j) - affinity / 9
    return laplacian


def quadratic(matrix, v: np.ndarray) -> float:
    """Σ_c v_cᵀ M v_c for v (1, h, w, C), in float64."""
    flat = v[0].reshape(-1, v.shape[-1]).astype(np.float64)
    return float(np.sum(flat * (matrix @ flat)))


def affine_of(image: np.ndarray, channels: int, seed: int) -> np.ndarray:
    """V = I·a + b, a random (3 x C) colour transform of the content, as (1, h, w, C)."""
    rng = np.random.default_rng(seed)
    colours = image.astype(np.float64) / 255
    return (colours @ rng.normal(size=(3, channels)) + rng.normal(size=channels))[None]


def test_sparse_laplacian_is_the_definition():
    image = smooth_image(9, 11, 1)
    expected = definition_laplacian(image.astype(np.float64) / 255, 1e-7)
    got = sparse_laplacian(image).toarray()
    assert got.shape == (99, 99)
    # Entries reach ~8; float64 differences of the two orders of summation stay near 1e-12.
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-8)


def test_sparse_laplacian_is_pymatting():
    pymatting = pytest.importorskip("pymatting")
    # Random colours: every window's covariance is well conditioned. Where it is not (a
    # smooth or grey image), pymatting's cofactor inverse (its determinant a difference of
    # terms far larger than itself) errs by up to 1e-6 on this size of image, 1e-3 on grey
    # ones, where ours matches a 50-digit evaluation to 1e-12.
    image = np.random.default_rng(2).random((12, 10, 3))
    expected = pymatting.cf_laplacian(image, epsilon=1e-7, radius=1)  # L = D − W, as ours
    np.testing.assert_allclose(sparse_laplacian(image).toarray(), expected.toarray(),
                               rtol=0, atol=1e-10)


@pytest.mark.parametrize("grey", [False, True])
def test_laplacian_is_symmetric_semidefinite_and_kills_constants(grey):
    laplacian = sparse_laplacian(smooth_image(9, 8, 3, grey)).toarray()
    np.testing.assert_allclose(laplacian, laplacian.T, rtol=0, atol=1e-9)
    scale = np.abs(laplacian).max()
    assert np.linalg.eigvalsh(laplacian).min() >= -1e-9 * scale
    np.testing.assert_allclose(laplacian @ np.ones(72), 0, atol=1e-9 * scale)


@pytest.fixture(scope="module")
def textured():
    """A 16x18 content image, its Laplacian as a matrix and matrix-free."""
    image = smooth_image(16, 18, 4)
    return image, sparse_laplacian(image), MattingLaplacian(image)


@pytest.mark.parametrize("channels", [1, 3, 5])
def test_energy_and_apply_match_the_matrix(textured, channels):
    image, laplacian, matrix_free = textured
    v = np.random.default_rng(channels).random((1, 16, 18, channels)).astype(np.float32)
    # float32: each window's moments are centred on its centre pixel, so a window's energy
    # keeps ~1e-7 relative precision and the sum over 224 windows ~1e-6; 1e-5 leaves margin.
    np.testing.assert_allclose(float(matrix_free.energy(tf.constant(v))), quadratic(laplacian, v),
                               rtol=1e-5)
    applied = matrix_free.apply(tf.constant(v)).numpy()
    assert applied.shape == v.shape
    expected = (laplacian @ v[0].reshape(-1, channels)).reshape(v.shape)
    np.testing.assert_allclose(applied, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("grey", [False, True])
def test_energy_of_an_affine_recolouring_is_nearly_zero(grey):
    image = smooth_image(20, 17, 5, grey)
    matrix_free = MattingLaplacian(image)
    noise = np.random.default_rng(0).random((1, 20, 17, 4))
    noise_energy = float(matrix_free.energy(tf.constant(noise, tf.float32)))
    # Noise is far from a local affine function of the colours: most of its variance is left.
    centred = noise - noise.mean()
    assert noise_energy > 0.1 * np.sum(centred ** 2)
    affine = affine_of(image, 4, 6)
    affine_energy = float(matrix_free.energy(tf.constant(affine, tf.float32)))
    # In float32; the exact value (float64 matrix) is ~1e-9 of the noise's on these images.
    assert abs(affine_energy) < 1e-4 * noise_energy
    assert abs(quadratic(sparse_laplacian(image), affine)) < 1e-4 * noise_energy


def test_energy_of_a_two_colour_edge_is_stable_in_float32():
    # Every window's colours lie on one line (A reaches 9e7 across it): float32 A would lose
    # cᵀAc entirely; the whitened form keeps the energy within 1e-4 of the float64 matrix.
    left, right = np.array([200, 30, 40]), np.array([20, 90, 220])
    image = np.where(np.arange(14)[None, :, None] < 7, left, right).repeat(12, 0).astype(np.uint8)
    v = np.random.default_rng(7).random((1, 12, 14, 3))
    expected = quadratic(sparse_laplacian(image), v)
    got = float(MattingLaplacian(image).energy(tf.constant(v, tf.float32)))
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_gradient_is_twice_the_matrix_and_finite_differences(textured):
    image, laplacian, matrix_free = textured
    v = tf.constant(np.random.default_rng(8).random((1, 16, 18, 3)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(v)
        energy = matrix_free.energy(v)
    gradient = tape.gradient(energy, v).numpy()
    expected = 2 * (laplacian @ v.numpy()[0].reshape(-1, 3)).reshape(v.shape)
    np.testing.assert_allclose(gradient, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    # Central differences of the same function in float64 (a quadratic: exact up to rounding).
    v64 = v.numpy().astype(np.float64)
    step = 1e-4
    for index in [(0, 0, 0, 0), (0, 7, 9, 1), (0, 15, 3, 2)]:
        up, down = v64.copy(), v64.copy()
        up[index] += step
        down[index] -= step
        difference = (float(matrix_free.energy(tf.constant(up)))
                      - float(matrix_free.energy(tf.constant(down)))) / (2 * step)
        np.testing.assert_allclose(difference, expected[index], rtol=1e-5, atol=1e-6)


def strips_energy_and_gradient(matrix_free, v, bounds, first_as_tensor):
    """The energy and gradient of v assembled from the row strips [start, stop) in `bounds`."""
    h = v.shape[1]
    strip_energy = tf.function(lambda rows, first: matrix_free.energy_rows(rows, first))
    total, gradient = 0.0, np.zeros(v.shape)
    for start, stop in bounds:
        top, end = max(start - 1, 0), min(stop + 1, h)
        rows = tf.constant(v[:, top:end])
        with tf.GradientTape() as tape:
            tape.watch(rows)
            energy = (strip_energy(rows, tf.constant(start)) if first_as_tensor
                      else matrix_free.energy_rows(rows, start))
        total += float(energy)
        gradient[:, top:end] += tape.gradient(energy, rows).numpy()
    return total, gradient


@pytest.mark.parametrize("first_as_tensor", [False, True])
def test_row_strips_add_up_to_the_whole(first_as_tensor):
    image = smooth_image(20, 13, 9)
    matrix_free = MattingLaplacian(image)
    v = np.random.default_rng(10).random((1, 20, 13, 3)).astype(np.float32)
    whole = tf.constant(v)
    with tf.GradientTape() as tape:
        tape.watch(whole)
        energy = matrix_free.energy(whole)
    expected_gradient = tape.gradient(energy, whole).numpy()
    bounds = [(0, 1), (1, 8), (8, 10), (10, 20)]  # uneven, one of a single row at the border
    total, gradient = strips_energy_and_gradient(matrix_free, v, bounds, first_as_tensor)
    np.testing.assert_allclose(total, float(energy), rtol=1e-5)
    np.testing.assert_allclose(gradient, expected_gradient, rtol=0,
                               atol=1e-5 * np.abs(expected_gradient).max())


def test_affine_residual_tells_recolourings_from_blur_and_noise():
    image = smooth_image(24, 20, 11)
    colours = image / 255
    recoloured = np.clip(colours @ np.array([[0.6, 0.1, 0.2], [0.2, 0.7, 0.0], [0.1, 0.1, 0.5]])
                         + 0.1, 0, 1)
    assert recoloured.min() > 0 and recoloured.max() < 1  # the clip changed nothing: affine
    swapped = image[..., ::-1]
    blurred = np.asarray(Image.fromarray(image).resize((5, 6)).resize((20, 24),
                                                                      Image.Resampling.BICUBIC))
    noisy = np.clip(colours + np.random.default_rng(12).normal(0, 0.05, colours.shape), 0, 1)
    exact = [affine_residual(recoloured, image), affine_residual(swapped, image)]
    far = [affine_residual(blurred, image), affine_residual(noisy, image)]
    assert max(exact) < 1e-9
    assert min(far) > 1e-5
    assert min(far) > 1e4 * max(exact)


def test_affine_residual_is_the_energy_per_window_and_channel():
    rng = np.random.default_rng(14)
    image = rng.random((14, 15, 3))  # textured: no window is near flat
    noisy = np.clip(image + rng.normal(0, 0.1, image.shape), 0, 1)
    per_window = quadratic(sparse_laplacian(image), noisy[None]) / (9 * 12 * 13 * 3)
    # The energy also counts the ridge's share (ε/9)|a|² ≥ 0, negligible unless a window is
    # near flat (a smooth image's near-flat windows make it ~1e-3 of the whole).
    residual = affine_residual(noisy, image)
    assert residual <= per_window
    np.testing.assert_allclose(residual, per_window, rtol=1e-5)
    # Windows are taken a block of rows at a time: the blocks change nothing.
    np.testing.assert_allclose(affine_residual(noisy, image, block_rows=5),
                               affine_residual(noisy, image), rtol=1e-12)


def test_constants_and_shapes():
    image = smooth_image(10, 7, 15)
    matrix_free = MattingLaplacian(image)
    assert matrix_free.shape == (10, 7)
    assert matrix_free.nbytes == 4 * (10 * 7 * 3 + 8 * 5 * (3 + 9))
    # uint8 and the same colours as floats in [0, 1] give the same Laplacian.
    np.testing.assert_allclose(sparse_laplacian(image / 255).toarray(),
                               sparse_laplacian(image).toarray(), atol=1e-12)
    with pytest.raises(ValueError):
        MattingLaplacian(np.zeros((2, 5, 3)))
    assert matting.EPSILON == 1e-7
