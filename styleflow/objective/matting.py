"""The closed-form matting Laplacian M of a content image (Levin, Lischinski, Weiss 2008), the
photorealism regulariser of Deep Photo Style Transfer (Luan et al. 2017): λ Σ_c V_cᵀ M V_c over
the output's colour channels V_c. `MattingLaplacian` evaluates it without the matrix, window by
window, in TensorFlow (differentiable, whole or by row strips); `sparse_laplacian` builds the
matrix for tests and small images; `affine_residual` measures how far an output is from a local
affine recolouring of its content.

Windows are 3x3 and lie wholly inside the image (as pymatting's cf_laplacian with radius 1). For
window k with colours I_i, mean colour μ_k, biased covariance Σ_k and A_k = (Σ_k + ε/9·Id)⁻¹:

    L_ij = Σ_{k: i,j ∈ w_k} δ_ij − (1 + (I_i − μ_k)ᵀ A_k (I_j − μ_k)) / 9
    vᵀ M v = Σ_k 9·(var_k(v) − c_kᵀ A_k c_k),   c_k = mean_k((I − μ_k)·v)

i.e. 9 times what is left of v's window variance after the best ridge-regularised affine fit of
v to the window's colours.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.sparse
import tensorflow as tf

from ..defaults import SIZES_KEPT

EPSILON = 1e-7  # Levin et al.'s and Luan et al.'s regularisation
WINDOW = 9  # pixels in a 3x3 window
OFFSETS = tuple((dy, dx) for dy in range(3) for dx in range(3) if (dy, dx) != (1, 1))


def checked_image(image) -> np.ndarray:
    """`image` as a NumPy array, checked to be (h, w, 3) with h and w at least 3."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 3 or image.shape[1] < 3:
        raise ValueError(f"expected an (h, w, 3) image with h, w >= 3, got shape {image.shape}")
    return image


def as_unit_float(image: np.ndarray) -> np.ndarray:
    """An (h, w, 3) image as float64 in [0, 1]: uint8 is divided by 255, floats are kept."""
    image = checked_image(image)
    if image.dtype == np.uint8:
        return image.astype(np.float64) / 255.0
    return image.astype(np.float64)


def windows(image: np.ndarray) -> np.ndarray:
    """The 3x3 windows of an (h, w, c) array as (h-2, w-2, 9, c), pixels in row-major order."""
    view = np.lib.stride_tricks.sliding_window_view(image, (3, 3), axis=(0, 1))
    h, w, c = view.shape[:3]
    return np.moveaxis(view, 2, -1).reshape(h, w, WINDOW, c)


def window_constants(colours: np.ndarray, epsilon: float):
    """Float64 per-window constants of an (h, w, 3) image: the colours less their window mean
    (h-2, w-2, 9, 3) and the inverse regularised covariance A (h-2, w-2, 3, 3)."""
    centred = windows(colours)
    centred = centred - centred.mean(axis=2, keepdims=True)
    covariance = np.einsum("hwia,hwib->hwab", centred, centred) / WINDOW
    inverse = np.linalg.inv(covariance + (epsilon / WINDOW) * np.eye(3))
    return centred, inverse


def whitening(inverse: np.ndarray) -> np.ndarray:
    """W with WᵀW = A, from A's eigenvectors (W = diag(√λ)·Uᵀ), so that cᵀAc = |Wc|².

    With ε = 1e-7, A reaches 9e7 along colour directions a window does not vary in (a grey or
    two-colour window), and cᵀAc is then a difference of terms 1e7 times larger than itself:
    A rounded to float32 loses it. Rounding W instead errs by ~1e-7·√λ·|c| only in directions
    where the exact Wc is ~0, and that error is squared."""
    values, vectors = np.linalg.eigh(inverse)
    return np.sqrt(np.maximum(values, 0.0))[..., :, None] * np.swapaxes(vectors, -1, -2)


# Windows whose float64 constants `build_constants` computes at a time: its windows, their
# moments, inverse and eigenvectors take about 580 bytes each, so a band of this many holds
# some 75 MB whatever the image's size (the whole image at once took 578 B per pixel).
BUILD_WINDOWS = 1 << 17


def build_constants(content: np.ndarray, epsilon: float = EPSILON,
                    band_windows: int = BUILD_WINDOWS) -> tuple:
    """MattingLaplacian's constants as float32 NumPy arrays: the colours (h, w, 3), each
    window's mean less its centre pixel's colour (h-2, w-2, 3) and its whitening W
    (h-2, w-2, 3, 3). Computed in float64 by row bands of about `band_windows` windows, so
    only the float32 results are held whole; each window's values are those the whole image
    at once gives (every window's are its own)."""
    image = checked_image(content)
    h, w = image.shape[:2]
    colours = np.empty((h, w, 3), np.float32)
    mean_offset = np.empty((h - 2, w - 2, 3), np.float32)
    whiten = np.empty((h - 2, w - 2, 3, 3), np.float32)
    rows = max(1, band_windows // w)
    for start in range(0, h - 2, rows):
        stop = min(start + rows, h - 2)
        band = as_unit_float(image[start:stop + 2])  # window rows start..stop-1 and halo
        colours[start:stop + 2] = band
        centred, inverse = window_constants(band, epsilon)
        # μ_k less the centre pixel's colour: small where the window is flat, so c_k's
        # correction term keeps float32's relative precision.
        mean_offset[start:stop] = -centred[:, :, WINDOW // 2, :]
        whiten[start:stop] = whitening(inverse)
    return colours, mean_offset, whiten


class MattingLaplacian:
    """The matting Laplacian M of one content image, applied without building the matrix.

    `energy(v)` is Σ_c v_cᵀ M v_c for an output v of shape (1, h, w, C), a float32 scalar
    that TensorFlow can differentiate (the gradient is 2·M·v) inside tf.function. It costs a
    few operations per pixel and channel for each of the 8 neighbours of a window's centre.
    Each window's moments are taken relative to its centre pixel, so float32 keeps their
    precision (mean(v²) − mean(v)² over values near 0.5 would lose three digits).
    """

    def __init__(self, content: np.ndarray, epsilon: float = EPSILON):
        """`content`: (h, w, 3) RGB, uint8 or float in [0, 1], h and w at least 3."""
        colours, mean_offset, whiten = build_constants(content, epsilon)
        self.epsilon = float(epsilon)
        # Already float32: a float64 array would be copied into TensorFlow's allocator whole
        # and cast there, twice the bytes passing through the pool it keeps.
        self._colours = tf.constant(colours)
        self._mean_offset = tf.constant(mean_offset)
        self._whiten = tf.constant(whiten)

    @property
    def shape(self) -> tuple[int, int]:
        """(h, w) of the content image."""
        return tuple(self._colours.shape[:2])

    @property
    def constants(self) -> tuple:
        """(colours, mean offsets, whitenings): the tensors `window_energy` takes after v, for
        a compiled loss that takes them as arguments rather than capturing them."""
        return self._colours, self._mean_offset, self._whiten

    @property
    def nbytes(self) -> int:
        """Bytes the constants hold: 15 float32 per pixel (colours, mean offset, whitening)."""
        return sum(int(np.prod(t.shape)) * t.dtype.size
                   for t in (self._colours, self._mean_offset, self._whiten))

    def energy(self, v: tf.Tensor) -> tf.Tensor:
        """Σ_c v_cᵀ M v_c for v of shape (1, h, w, C), C channels of any number: float32, or
        float64 for a float64 v (the constants stay as stored, rounded to float32)."""
        return self.energy_rows(v, 0)

    def energy_rows(self, v_rows: tf.Tensor, first) -> tf.Tensor:
        """The energy of the windows centred in one row strip, for exact evaluation by strips.

        The strip is image rows first ... stop−1; `v_rows` holds rows max(first−1, 0) ...
        min(stop, h−1) of v (1, rows, w, C): the strip and one row of halo on each side where
        the image has one. Returns the energy of the windows centred in the strip, so summing
        over strips that partition the rows gives `energy(v)`, and their gradients, added back
        into the image at the rows `v_rows` came from (halo included), give its gradient.
        `first` may be a Python int or a scalar integer tensor (inside tf.function)."""
        v_rows = tf.convert_to_tensor(v_rows)
        dtype = v_rows.dtype if v_rows.dtype == tf.float64 else tf.float32
        top = tf.maximum(tf.convert_to_tensor(first, tf.int32) - 1, 0)
        rows = tf.shape(v_rows)[1]
        constants = (self._colours[top:top + rows], self._mean_offset[top:top + rows - 2],
                     self._whiten[top:top + rows - 2])
        return window_energy(tf.cast(v_rows, dtype), *(tf.cast(t, dtype) for t in constants))

    def apply(self, v) -> tf.Tensor:
        """M·v for each channel of v (1, h, w, C): half the gradient of `energy`."""
        v = tf.convert_to_tensor(v, tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(v)
            energy = self.energy(v)
        return 0.5 * tape.gradient(energy, v)


def window_energy(v, colours, mean_offset, whiten) -> tf.Tensor:
    """Σ over the 3x3 windows inside v (1, h, w, C) of 9·(var(v) − |W c|²), with every
    window's moments taken relative to its centre pixel (see MattingLaplacian). Compiled by
    XLA, also inside a plain tf.function: fused, its forty-odd elementwise passes over the
    image and their gradients cost about a quarter of what they cost op by op on a CPU."""
    return _fused(v.dtype, tuple(v.shape))(v, colours, mean_offset, whiten)


# Compiled functions kept: a few shapes (the whole image, or its row strips) per image size.
FUNCTIONS_KEPT = 4 * SIZES_KEPT


@functools.lru_cache(maxsize=FUNCTIONS_KEPT)
def _fused(dtype, shape):
    # A function object per shape, so that dropping it drops its compilation, and a partial
    # so that TensorFlow does not count the shapes as retraces of one function.
    return tf.function(functools.partial(_window_energy), jit_compile=True)


def _window_energy(v, colours, mean_offset, whiten) -> tf.Tensor:
    height, width = tf.shape(v)[1] - 2, tf.shape(v)[2] - 2
    centre, centre_colour = v[:, 1:-1, 1:-1, :], colours[1:-1, 1:-1, :]
    # The centre pixel's own term is zero: 8 neighbours.
    sum_v = sum_v2 = sum_iv = 0.0
    for dy, dx in OFFSETS:
        dv = v[:, dy:dy + height, dx:dx + width, :] - centre  # (1, h-2, w-2, C)
        di = colours[dy:dy + height, dx:dx + width, :] - centre_colour  # (h-2, w-2, 3)
        sum_v += dv
        sum_v2 += tf.square(dv)
        sum_iv += dv[..., :, None] * di[:, :, None, :]  # (1, h-2, w-2, C, 3)
    mean_v = sum_v / WINDOW
    variance = sum_v2 / WINDOW - tf.square(mean_v)
    # mean((I − μ)(v − v_centre)) = mean((I − I_centre)(v − v_centre)) − (μ − I_centre)·mean(v − v_centre)
    covariance = sum_iv / WINDOW - mean_v[..., None] * mean_offset[:, :, None, :]
    whitened = tf.einsum("hwab,nhwcb->nhwca", whiten, covariance)
    # Each window's residual is small and the two sums large: subtract per window, then sum,
    # in float64 (XLA sums float32 in order; the energy's last digits decide L-BFGS's line
    # search, which otherwise stops early).
    residual = variance - tf.reduce_sum(tf.square(whitened), axis=-1)
    total = tf.reduce_sum(tf.cast(residual, tf.float64))
    return tf.cast(WINDOW * total, v.dtype)


def sparse_laplacian(content: np.ndarray, epsilon: float = EPSILON) -> scipy.sparse.csr_matrix:
    """The (h·w) x (h·w) matting Laplacian in row-major pixel order, float64, from its
    definition: each window adds δ_ij − (1 + (I_i − μ)ᵀ A (I_j − μ))/9 to its 9x9 block."""
    colours = as_unit_float(content)
    h, w = colours.shape[:2]
    centred, inverse = window_constants(colours, epsilon)
    blocks = np.eye(WINDOW) - (1.0 + np.einsum("hwia,hwab,hwjb->hwij",
                                               centred, inverse, centred)) / WINDOW
    index = windows(np.arange(h * w).reshape(h, w, 1))[..., 0]  # (h-2, w-2, 9)
    rows = np.broadcast_to(index[:, :, :, None], blocks.shape)
    cols = np.broadcast_to(index[:, :, None, :], blocks.shape)
    # COO sums duplicate entries: the windows' blocks overlap.
    return scipy.sparse.coo_matrix((blocks.ravel(), (rows.ravel(), cols.ravel())),
                                   shape=(h * w, h * w)).tocsr()


def affine_residual(output: np.ndarray, content: np.ndarray, epsilon: float = EPSILON,
                    block_rows: int = 256) -> float:
    """How far `output` is from a local affine recolouring of `content`: over the 3x3 windows
    inside the image and the output's channels, the mean squared residual of the least-squares
    fit output_c ≈ a_cᵀ I + b_c in each window (ridge ε/9 on a, as the Laplacian). Both images
    are (h, w, 3), uint8 or float in [0, 1]. It equals energy/(9·windows·channels) less the
    ridge's own share (ε/9)·|a|², in float64 NumPy, `block_rows` window rows at a time."""
    output, colours = as_unit_float(output), as_unit_float(content)
    if output.shape != colours.shape:
        raise ValueError(f"output {output.shape} and content {colours.shape} differ in shape")
    total, count = 0.0, 0
    for start in range(0, colours.shape[0] - 2, block_rows):
        rows = slice(start, start + block_rows + 2)
        centred, inverse = window_constants(colours[rows], epsilon)
        values = windows(output[rows])
        values = values - values.mean(axis=2, keepdims=True)  # (h, w, 9, C)
        variance = np.mean(values ** 2, axis=2)  # (h, w, C)
        covariance = np.einsum("hwia,hwic->hwca", centred, values) / WINDOW  # (h, w, C, 3)
        slope = np.einsum("hwab,hwcb->hwca", inverse, covariance)
        # Residual of the ridge fit: var − cᵀAc − (ε/9)|Ac|² (ΣA = Id − (ε/9)A).
        residual = (variance - np.einsum("hwca,hwca->hwc", covariance, slope)
                    - (epsilon / WINDOW) * np.sum(slope ** 2, axis=-1))
        total += float(residual.sum())
        count += residual.size
    return total / count
