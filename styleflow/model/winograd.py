"""Winograd's F(4x4, 3x3) convolution (Lavin & Gray 2015) for VGG19's layers from block1_conv2
on, on CPUs.

A 3x3 convolution over 4x4 output tiles costs 36 multiply-adds per tile and channel pair in
the transformed domain instead of 144: the image is cut into overlapping 6x6 tiles and each is
transformed (Bᵀ d B), the kernel is transformed once (G g Gᵀ), the 36 transformed positions are
36 independent matrix products over the channels, and each 6x6 result is folded back into a 4x4
output tile (Aᵀ m A). oneDNN has no Winograd kernels on AVX2 CPUs (nor on AVX-512 for the
backward pass), and the layers from block3 on spend almost all their time in those products.

The tile transforms are passes over memory. For float32 they are single passes compiled by
Numba (`winograd_kernels`, `transform`); the definition here, also what runs for other dtypes,
in the tiled loss and inside XLA-compiled losses, is compiled by XLA into a few fused loops (as
separate TensorFlow ops they cost more than the products save, and round differently): one
tf.function per transform, whatever the map's size, which XLA compiles once for each size it
meets (`_compiled`), so a process seeing many image sizes registers no new function per size.
Both give the same bits.
The products run in TensorFlow's batched matmul (oneDNN), so they obey the same threads and ISA
as the rest of the network. Bias and ReLU are folded into the output pass, and the ReLU mask
into the backward pass's input pass. block1_conv1 keeps the direct convolution (3 input
channels). block1_conv2 (64 -> 64 on the largest map) pays only where an untiled pass would
take Numba's transforms for it: it is direct on images below 128x96 or past Numba's tile limit,
in bfloat16 and with the "xla" lever, and by Winograd elsewhere, XLA's transforms included in
that image's tiles and in an XLA-compiled loss, so passes and targets convolve alike
(`suits_channels`, `narrow`, `narrow_pays`, `convolves`; per-layer timings from
bench/winograd.py in docs/performance.md).
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading

import numpy as np
import tensorflow as tf

from . import machine
from .gradients import custom_gradient
from .layout import STAGES, conv_maps, stage
from .xla_functions import xla_function

TILE = 4  # output pixels per tile side
ALPHA = TILE + 2  # input pixels per tile side (3x3 kernel)

# F(4x4, 3x3) with interpolation points 0, ±1, ±2 and ∞. The transforms apply Bᵀ and Aᵀ as
# written-out additions (`_unfold`, `_fold`; a test holds them to these matrices).
B_T = np.array([[4, 0, -5, 0, 1, 0],
                [0, -4, -4, 1, 1, 0],
                [0, 4, -4, -1, 1, 0],
                [0, -2, -1, 2, 1, 0],
                [0, 2, -1, -2, 1, 0],
                [0, 4, 0, -5, 0, 1]], np.float64)
G = np.array([[1 / 4, 0, 0],
              [-1 / 6, -1 / 6, -1 / 6],
              [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6],
              [1 / 24, -1 / 12, 1 / 6],
              [0, 0, 1]], np.float64)
A_T = np.array([[1, 1, 1, 1, 1, 0],
                [0, 1, -1, 2, -2, 0],
                [0, 1, 1, 4, 4, 0],
                [0, 1, -1, 8, -8, 1]], np.float64)

# Where the transforms pay: layers with at least MIN_IN_CHANNELS input and MIN_OUT_CHANNELS
# output channels -- from block2_conv1 on -- on maps of at least this many pixels (smaller
# maps are cheap either way, and each new map size costs XLA compilations).
MIN_IN_CHANNELS = 64
MIN_OUT_CHANNELS = 128
MIN_PIXELS = 16 * 16
# block1_conv2 (64 -> 64 on the full-size map) pays only with Numba's single-pass transforms
# (with XLA's they cost about what its products save) and from maps of NARROW_MIN_PIXELS:
# per layer 53 against 60 ms at 400x300, 5.1 against 6.4 ms at 128x96, but 3.1 against 2.3 ms
# at 64x48 (stop 46, docs/performance.md).
NARROW_OUT_CHANNELS = 64
NARROW_MIN_PIXELS = 128 * 96


def suits_channels(in_channels: int, out_channels: int) -> bool:
    """Whether a layer with these channel counts is convolved by Winograd on large maps,
    whatever its tile transforms (`narrow` names the layers that need Numba's)."""
    return in_channels >= MIN_IN_CHANNELS and out_channels >= MIN_OUT_CHANNELS


def narrow(in_channels: int, out_channels: int) -> bool:
    """Whether a layer with these channel counts is convolved by Winograd only where
    `narrow_pays` on the whole image's map (block1_conv2)."""
    return (not suits_channels(in_channels, out_channels)
            and in_channels >= MIN_IN_CHANNELS and out_channels >= NARROW_OUT_CHANNELS)


def narrow_pays(h: int, w: int, in_channels: int, out_channels: int) -> bool:
    """Whether a narrow layer whose map is (h, w) over the whole image convolves by Winograd:
    from NARROW_MIN_PIXELS, where an untiled float32 pass takes Numba's transforms for it
    (`numba_suits`; where Numba is installed but cannot load its kernels, XLA's). Tiles of
    such an image convolve it by Winograd too, with XLA's transforms (`xla_transforms`), so
    tiled and untiled passes compute alike."""
    return h * w >= NARROW_MIN_PIXELS and numba_suits(h, w, in_channels, out_channels)


def narrow_at(size: tuple[int, int], layers) -> bool:
    """Whether float32 passes over an (h, w) image, whole or in tiles, through the layers up to
    the deepest of `layers` (convolutions or poolings) convolve their `narrow` layer by
    Winograd (`narrow_pays` on its map over the whole image)."""
    last = max((stage(name) for name in layers), key=STAGES.index).name
    return any(narrow(cin, cout) and narrow_pays(h, w, cin, cout)
               for _, h, w, cin, cout in conv_maps(size, last))


def suits(shape) -> bool:
    """Whether a (1, h, w, c) input of static shape is large enough for Winograd."""
    if len(shape) != 4 or any(d is None for d in shape[:3]) or shape[0] != 1:
        return False
    return shape[1] * shape[2] >= MIN_PIXELS


def convolves(h: int, w: int, in_channels: int, out_channels: int, narrow_too: bool) -> bool:
    """Whether a layer with these channel counts convolves an (h, w) map (the whole image's
    or a tile's) by Winograd; `narrow_too`: whether a `narrow` layer does in this pass."""
    if not suits((1, h, w, in_channels)):
        return False
    return suits_channels(in_channels, out_channels) or (
        narrow_too and narrow(in_channels, out_channels))


def kernel_transforms(kernel: tf.Tensor,
                      transposed: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
    """(forward, backward) transformed kernels, (36, in, out) and (36, out, in), from a Keras
    (3, 3, in, out) kernel: the backward one is that of the mirrored kernel with its channels
    swapped, whose convolution is the input gradient. `transposed`: laid out (36, out, in) and
    (36, in, out) instead, for products by `transpose_b` (`products_transposed`)."""
    g = tf.constant(G, tf.float32)
    layouts = ("pqba", "pqab") if transposed else ("pqab", "pqba")
    forward = tf.einsum(f"pi,ijab,qj->{layouts[0]}", g, kernel, g)
    backward = tf.einsum(f"pi,ijab,qj->{layouts[1]}", g, tf.reverse(kernel, [0, 1]), g)
    return (tf.reshape(forward, (ALPHA * ALPHA, *forward.shape[2:])),
            tf.reshape(backward, (ALPHA * ALPHA, *backward.shape[2:])))


def products_transposed() -> bool:
    """Whether the products take their kernels transposed (`transpose_b`): where oneDNN has no
    AVX-512, which then runs them on faster kernels (block4's 1.4x faster with it capped at
    AVX2; with AVX-512 alike or a little slower)."""
    return not machine.onednn_avx512()


# Both transforms go one axis of the 6x6 tiles at a time, Bᵀ's and Aᵀ's entries as additions
# and multiplications by powers of two. Tiles need a value rounded the same wherever it lies in
# the map, so that a crop agrees bit for bit with the whole image wherever its edge does not
# reach (elsewhere a ReLU within rounding of 0 may fall the other way and the gradient jump).
# A matrix product (kron(Bᵀ, Bᵀ) times the flattened tiles) does not: XLA's kernel sums a
# map's last columns in another order. Nor did stop 36's 5·d constants, presumably fused into
# a multiply-add in part of XLA's loop only (docs/performance.md, stops 36 and 38).


def _tiles(h, w):
    return -(-h // TILE), -(-w // TILE)


def _input_tiles(x: tf.Tensor, mask_from: tf.Tensor | None = None) -> tf.Tensor:
    """(1, h, w, c) -> (36, tiles, c): each 6x6 tile (zero 'same' padding) as Bᵀ d B. With
    `mask_from`, x is first zeroed where mask_from <= 0 (the ReLU's gradient). The map's size
    is read when XLA compiles (`_compiled`)."""
    if mask_from is not None:
        x = tf.where(mask_from > 0, x, tf.zeros_like(x))
    _, h, w, c = tf.unstack(tf.shape(x))
    rows, cols = _tiles(h, w)
    # Padded to whole 4-pixel steps plus one, tile (i, j) reads rows 4i..4i+5 of the padded
    # map: steps i and i + 1 reshaped apart, offsets 0-3 of the first and 0-1 of the next.
    # Reshapes and plain slices index more cheaply than strided slices in XLA's loops.
    padded = tf.pad(x[0], [[1, TILE * (rows + 1) - h - 1], [1, TILE * (cols + 1) - w - 1],
                           [0, 0]])
    steps = tf.reshape(padded, (rows + 1, TILE, TILE * (cols + 1), c))
    down = tf.stack(_unfold([steps[:rows, k] for k in range(TILE)]
                            + [steps[1:, 0], steps[1:, 1]]))  # Bᵀ d: (6, rows, width, c)
    # Then across, all six at once (36 stacked parts lower to slower loops in XLA).
    across = tf.reshape(down, (ALPHA, rows, cols + 1, TILE, c))
    tiles = tf.stack(_unfold([across[:, :, :cols, k] for k in range(TILE)]
                             + [across[:, :, 1:, 0], across[:, :, 1:, 1]]), axis=1)
    return tf.reshape(tiles, (ALPHA * ALPHA, rows * cols, c))


def _unfold(d):
    """Bᵀ applied to the six rows `d` of a 6-long axis, as six values; 5·d is written 4·d + d,
    so every product is exact and a value rounds the same wherever it lies in the map."""
    return [4.0 * d[0] - 4.0 * d[2] - d[2] + d[4],
            d[3] + d[4] - 4.0 * (d[1] + d[2]),
            d[4] - d[3] + 4.0 * (d[1] - d[2]),
            d[4] - d[2] + 2.0 * (d[3] - d[1]),
            d[4] - d[2] - 2.0 * (d[3] - d[1]),
            4.0 * d[1] - 4.0 * d[3] - d[3] + d[5]]


def _fold(x, axis):
    """Aᵀ applied along `axis` (of length 6) of x, which becomes 4 long; Aᵀ's entries are 0,
    ±1, ±2, ±4 and ±8, so every product is exact."""
    m = tf.unstack(x, axis=axis)
    a, b = m[1] + m[2], m[1] - m[2]
    c, d = m[3] + m[4], m[3] - m[4]
    return tf.stack([m[0] + a + c, b + 2.0 * d, a + 4.0 * c, b + 8.0 * d + m[5]], axis=axis)


def _output_tiles(products: tf.Tensor, h, w, bias: tf.Tensor | None = None) -> tf.Tensor:
    """(36, tiles, c) -> (1, h, w, c): each tile's Aᵀ m A, laid out as the image; with `bias`,
    relu(. + bias). `h` and `w` are scalar tensors, constants to XLA (`_compiled`)."""
    rows, cols = _tiles(h, w)
    m = tf.reshape(products, (ALPHA, ALPHA, rows, cols, -1))
    y = tf.transpose(_fold(_fold(m, 0), 1), (2, 0, 3, 1, 4))
    y = tf.reshape(y, (TILE * rows, TILE * cols, -1))[None, :h, :w]
    if bias is not None:
        y = tf.nn.relu(y + bias)
    return y


def _compiled(kind: str, dtype: tf.DType):
    """The XLA-compiled transform `kind` ("input", "masked", "output", "bias") for `dtype`,
    one function whatever the map's size (`xla_functions`). Plain TensorFlow ops would round
    differently from XLA's fused loops."""
    maps = tf.TensorSpec((1, None, None, None), dtype)
    products = tf.TensorSpec((ALPHA * ALPHA, None, None), dtype)
    size = tf.TensorSpec((), tf.int32)
    function, signature = {
        "input": (_input_tiles, [maps]),
        "masked": (_input_tiles, [maps, maps]),
        "output": (_output_tiles, [products, size, size]),
        "bias": (_output_tiles, [products, size, size, tf.TensorSpec((None,), dtype)]),
    }[kind]
    return xla_function(function, *signature)


TRANSFORMS = ("auto", "numba", "xla")
# Numba's results live in a pool outside TensorFlow's allocator, which a run holds beside
# TensorFlow's own peak (plan.memory.transform_pool_bytes): layers whose tiles would take more
# than this keep XLA's transforms (block1_conv2 goes direct instead: `narrow_pays`), so
# print-size maps cost no more memory than before (images up to about 800x600 run Numba's in
# every layer from block2_conv1), and so does the tiled loss (`xla_transforms`), which runs
# where memory is short.
NUMBA_MAX_TILE_BYTES = 160 * 2**20
_SCOPE = threading.local()


@contextlib.contextmanager
def xla_transforms(narrow_too: bool = False):
    """Within it, Winograd layers traced (or run eagerly) take XLA's transforms, whose results
    TensorFlow's allocator holds: for passes planned to a tight memory budget (tiles). Numba's
    pool keeps nothing free meanwhile. `narrow_too`: whether `narrow` layers convolve by
    Winograd too, as `narrow_pays` says for the whole image the tiles are cut from."""
    release_transform_memory()
    previous = getattr(_SCOPE, "xla", False), getattr(_SCOPE, "narrow", False)
    _SCOPE.xla, _SCOPE.narrow = True, narrow_too
    try:
        yield
    finally:
        _SCOPE.xla, _SCOPE.narrow = previous


def with_xla_transforms(function, *args, narrow_too: bool = False):
    """`function(*args)` within `xla_transforms(narrow_too)` (for tf.function to trace)."""
    with xla_transforms(narrow_too):
        return function(*args)


def release_transform_memory() -> None:
    """Drop the free result arrays Numba's transforms keep for the next evaluation."""
    kernels = sys.modules.get(__name__.rpartition(".")[0] + ".winograd_kernels")
    if kernels is not None:
        kernels.BUFFERS.clear()


@functools.cache
def numba_available() -> bool:
    """Whether Numba is installed here (a requirement; without it every transform is XLA's).
    Asked without importing it: planning a run that will not use it costs no memory."""
    import importlib.util

    return importlib.util.find_spec("numba") is not None


@functools.cache
def _numba_kernels():
    """`winograd_kernels`, or None where they cannot load: Numba refuses to compile cached
    functions where it finds no folder for its cache."""
    import importlib

    try:
        return importlib.import_module(__name__.rpartition(".")[0] + ".winograd_kernels")
    except (ImportError, RuntimeError, OSError):
        return None


def numba_suits(h: int, w: int, in_channels: int, out_channels: int) -> bool:
    """Whether a float32 Winograd layer on an (h, w) map takes Numba's transforms (`transform`)
    by default: its tiles, forward or back, within NUMBA_MAX_TILE_BYTES, and Numba here."""
    tiles = -(-h // TILE) * -(-w // TILE)
    return (ALPHA * ALPHA * tiles * max(in_channels, out_channels) * 4 <= NUMBA_MAX_TILE_BYTES
            and numba_available())


def _tracing_for_xla() -> bool:
    """Whether the graph being traced is compiled by XLA (`tf.function(jit_compile=True)`,
    which traces inside an XLA context)."""
    from tensorflow.python.framework import ops
    from tensorflow.python.ops import control_flow_util

    return control_flow_util.GraphOrParentsInXlaContext(ops.get_default_graph())


def transform(kind: str, dtype: tf.DType, transforms: str = "auto"):
    """The tile transform `kind` ("input", "masked", "output", "bias") for `dtype`: Numba's
    single pass for float32 (`winograd_kernels`, bit-identical to XLA's and faster), XLA's
    where `transforms` is "xla", the dtype is another, or the graph being traced is itself
    compiled by XLA (which cannot call into Python)."""
    if transforms not in TRANSFORMS:
        raise ValueError(f"transforms: one of {TRANSFORMS}, not {transforms!r}")
    if transforms != "xla" and _numba_here(dtype):
        return _numba_kernels().transform(kind)
    return _compiled(kind, dtype)


def _numba_here(dtype: tf.DType) -> bool:
    """Whether Numba's transforms can run for `dtype` in the graph being traced."""
    return (dtype == tf.float32 and numba_available() and _numba_kernels() is not None
            and not _tracing_for_xla())


# The check's tf.cond has two branch functions, which TensorFlow registers with every graph
# that holds them and never unregisters with it: inlined into each traced loss, a process
# seeing many image sizes would register two more per layer and size. Called as one
# tf.function per kernel shape, the branches are registered once for good (a handful of
# shapes in VGG19), however many graphs call it.
_CHECKS: dict[tuple, object] = {}


def same_buffer(current: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Whether two arrays (tensors as a py_func op hands them over, without copying) are one
    buffer: a variable's value read while another read of it is held."""
    return np.array(current.ctypes.data == source.ctypes.data and current.shape == source.shape)


def _same_buffer_token() -> str:
    # py_func's registry holds its functions weakly: a module's function stays registered.
    from tensorflow.python.ops import script_ops

    if not hasattr(_same_buffer_token, "token"):
        _same_buffer_token.token = script_ops._py_funcs.insert(  # pylint: disable=protected-access
            same_buffer)
    return _same_buffer_token.token


def _checked(current, source, forward, backward, transposed) -> tuple[tf.Tensor, tf.Tensor]:
    """(forward, backward) if `current` (the kernel variable's value, read in the graph) is
    `source` (an earlier read, which they were made from), else `current`'s transforms (laid
    out as `transposed` says)."""
    # XLA cannot call into Python: a graph it compiles compares the values (a pass over both).
    by_value = _tracing_for_xla()
    key = (tuple(current.shape), transposed, by_value)
    if key not in _CHECKS:
        # A partial: TensorFlow counts traces per Python function.
        _CHECKS[key] = tf.function(functools.partial(_check, transposed=transposed,
                                                     by_value=by_value))
    return _CHECKS[key](current, source, forward, backward)


def _check(current, source, forward, backward, transposed, by_value):
    from tensorflow.python.ops import gen_script_ops

    if by_value:
        same = tf.reduce_all(tf.equal(current, source))
    else:
        same = gen_script_ops.py_func_stateless(
            input=[current, source], token=_same_buffer_token(), Tout=[tf.bool])[0]
        same.set_shape(())
    return tf.cond(same, lambda: (tf.identity(forward), tf.identity(backward)),
                   lambda: kernel_transforms(current, transposed))


class WinogradConv:
    """One frozen layer's relu(conv3x3_same(x) + bias) by Winograd, forward and backward.

    The kernel's transforms cost about as much as a small layer, so they are computed once,
    when a graph using them is traced, and kept with the read of the kernel variable they were
    made from. Each call checks that the variable's value is still that read's buffer, and
    otherwise transforms the current kernel, so set_weights/load_weights, or any other update,
    can never leave them stale: TensorFlow updates a variable whose buffer is also held
    elsewhere by copying it to a new buffer first (copy on write; every update op does, and
    the kept read holds the old one, so no new buffer can take its address). A value read
    another way (a Keras stateless scope's, or a copy) is another buffer and is transformed.
    Comparing the buffers' addresses costs nothing beside the pass over both kernels that
    comparing their values takes (4-5 ms of an evaluation at 400x300, 1-2.5% of its time,
    docs/performance.md, stop 50), which only a graph XLA compiles still makes. Nothing is
    held until the layer first convolves a map by Winograd (most layers of small images never
    do).
    """

    def __init__(self, transforms: str = "auto"):
        self._source = self._forward = self._backward = None
        self._transposed = products_transposed()
        self._transforms = transforms  # `transform`: "auto", or "xla" as a benchmark's lever

    def transforms(self, kernel) -> tuple[tf.Tensor, tf.Tensor]:
        """(forward, backward) transformed kernels for the kernel variable's current value."""
        with tf.init_scope():  # eagerly, also while a graph is being traced
            value = tf.convert_to_tensor(kernel)
            if self._source is None or not same_buffer(np.asarray(value),
                                                       np.asarray(self._source)):
                self._source = value  # the variable's buffer, not a copy
                self._forward, self._backward = kernel_transforms(value, self._transposed)
        return _checked(tf.convert_to_tensor(kernel), self._source, self._forward,
                        self._backward, self._transposed)

    def takes(self, x: tf.Tensor, out_channels: int) -> bool:
        """Whether this layer convolves `x` by Winograd (`convolves`), else directly. A
        `narrow` layer does in float32 passes (not built for XLA's transforms) where it pays on
        the whole image's map: on `x` in an untiled pass, including one traced inside an
        XLA-compiled loss (by XLA's transforms then, so its targets and passes convolve
        alike); within `xla_transforms`, as its `narrow_too` says for the tiles' image."""
        if not suits(x.shape):
            return False
        _, h, w, in_channels = x.shape
        narrow_too = self._transforms != "xla" and x.dtype == tf.float32 and (
            getattr(_SCOPE, "narrow", False) if getattr(_SCOPE, "xla", False)
            else narrow_pays(h, w, in_channels, out_channels))
        return convolves(h, w, in_channels, out_channels, narrow_too)

    def _transforms_for(self, x: tf.Tensor, kernel) -> str:
        _, h, w, _ = x.shape
        if self._transforms == "auto" and (getattr(_SCOPE, "xla", False)
                                           or not numba_suits(h, w, x.shape[-1], kernel.shape[-1])):
            return "xla"
        return self._transforms

    def pools(self, x: tf.Tensor, kernel) -> bool:
        """Whether `pooled` takes `x`: where this layer convolves it by Winograd (`takes`)
        with Numba's transforms (the only ones that pool)."""
        return (self.takes(x, kernel.shape[-1]) and self._transforms_for(x, kernel) != "xla"
                and _numba_here(x.dtype))

    def __call__(self, x: tf.Tensor, kernel, bias: tf.Tensor) -> tf.Tensor:
        """relu(conv3x3_same(x, kernel) + bias) for a (1, h, w, c) `x` of static shape
        (`suits`), `kernel` being the layer's (3, 3, in, out) kernel variable; its gradient with
        respect to x is Winograd's too."""
        _, h, w, _ = x.shape
        size = tf.constant(h, tf.int32), tf.constant(w, tf.int32)
        forward, backward = self.transforms(kernel)
        dtype, transposed = x.dtype, self._transposed
        transforms = self._transforms_for(x, kernel)
        tiles, masked, output, biased = (transform(kind, dtype, transforms)
                                         for kind in ("input", "masked", "output", "bias"))

        @custom_gradient
        def layer(x):
            products = tf.matmul(tiles(x), forward, transpose_b=transposed)
            y = biased(products, *size, bias)
            y.set_shape((1, h, w, kernel.shape[-1]))  # the open signature left it unknown

            def gradient(dy):
                # The ReLU's mask is applied in the input pass (y > 0 where it let through).
                products = tf.matmul(masked(dy, y), backward, transpose_b=transposed)
                dx = output(products, *size)
                dx.set_shape(x.shape)
                return dx

            return y, gradient

        return layer(x)

    def pooled(self, x: tf.Tensor, kernel, bias: tf.Tensor) -> tf.Tensor:
        """2x2 max pooling with stride 2 of relu(conv3x3_same(x, kernel) + bias), for an `x`
        this layer `pools`: the same values and gradient as `__call__` followed by TensorFlow's
        max pooling, without the convolution's output map. The pooling is done as the tiles
        are folded back, each 4x4 tile holding four whole windows, and its gradient as the
        backward pass's tiles are made, from the windows' gradients and where each goes (a
        byte per window and channel, which also stands for the ReLU's mask): a map's worth of
        memory written and read four times over, fewer. At 300x400 and 64 channels the pooling's
        two TensorFlow operations took 6.2 ms; the tiles from routes 2.0 against 3.6 ms from the
        map and its mask (docs/performance.md, stop 50)."""
        _, h, w, _ = x.shape
        size = tf.constant(h, tf.int32), tf.constant(w, tf.int32)
        forward, backward = self.transforms(kernel)
        transposed = self._transposed
        tiles, output, pooled, routed = (transform(kind, tf.float32)
                                         for kind in ("input", "output", "pooled", "routed"))

        @custom_gradient
        def layer(x):
            products = tf.matmul(tiles(x), forward, transpose_b=transposed)
            y, route = pooled(products, *size, bias)
            y.set_shape((1, h // 2, w // 2, kernel.shape[-1]))

            def gradient(dy):
                products = tf.matmul(routed(dy, route, *size), backward, transpose_b=transposed)
                dx = output(products, *size)
                dx.set_shape(x.shape)
                return dx

            return y, gradient

        return layer(x)
