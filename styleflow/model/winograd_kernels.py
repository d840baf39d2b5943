"""Winograd's tile transforms (model.winograd) as single passes compiled by Numba, for float32.

XLA compiles each transform into two or three loops over memory, the tiles of one axis written
out and read back; these kernels go tile by tile, each tile's rows and columns in registers and
a small scratch, parallel over rows of tiles. At 400x300 the transforms took 1.4-2x less time
than XLA's and a whole evaluation about a tenth less (docs/performance.md, stop 45). Every
value is the same expression, in the same order, as `winograd._unfold` and `winograd._fold`
(whose products are exact), so the results are bit-identical to XLA's, and a value still rounds
the same wherever it lies in the map. (One exception, not met in VGG's maps so far: TensorFlow's
threads flush denormal numbers to zero, Numba's worker threads do not, so a value that passes
through a denormal may differ from XLA's; the split of rows between threads is fixed, so runs
still repeat their bits.)

TensorFlow calls them through a py_func op (what `tf.numpy_function` builds), which reads its
inputs without copying and keeps an aligned result's memory; results come from a pool
(`host_buffers`) because a fresh large array costs a page fault per 4 KB on every call. The
kernels run on as many threads as TensorFlow gives one operation, one kernel at a time in a
process (the lock), on Numba's default thread pool (OpenMP where installed: its kernels ran 20%
faster than on Numba's own pool, which it falls back to). styleflow starts its worker
processes by spawning, not forking, as GNU OpenMP asks.
"""

from __future__ import annotations

import threading

import numba
import numpy as np
import tensorflow as tf
from numba import njit, prange
from tensorflow.python.ops import gen_script_ops, script_ops

from . import machine
from .host_buffers import HostBuffers

TILE, ALPHA = 4, 6  # F(4x4, 3x3), as model.winograd (which imports this module)
_F2, _F4, _F8, _ZERO = np.float32(2), np.float32(4), np.float32(8), np.float32(0)
NO_ROUTE = np.uint8(4)  # `route`: a window whose gradient goes nowhere

# Free result arrays are kept up to what the recent evaluations had in use at once
# (host_buffers; at 400x300 about 0.16 GB), and at least this.
KEEP_BYTES = 64 * 2**20
BUFFERS = HostBuffers(KEEP_BYTES)
_LOCK = threading.Lock()
_KERNEL = dict(parallel=True, boundscheck=False, cache=True, nogil=True)


@njit(inline="always")
def _unfold(d0, d1, d2, d3, d4, d5):
    """Bᵀ applied to six values, as `winograd._unfold` writes it."""
    return (_F4 * d0 - _F4 * d2 - d2 + d4,
            d3 + d4 - _F4 * (d1 + d2),
            d4 - d3 + _F4 * (d1 - d2),
            d4 - d2 + _F2 * (d3 - d1),
            d4 - d2 - _F2 * (d3 - d1),
            _F4 * d1 - _F4 * d3 - d3 + d5)


@njit(inline="always")
def _fold(m0, m1, m2, m3, m4, m5):
    """Aᵀ applied to six values, as `winograd._fold` writes it."""
    a, b, s, d = m1 + m2, m1 - m2, m3 + m4, m3 - m4
    return m0 + a + s, b + _F2 * d, a + _F4 * s, b + _F8 * d + m5


@njit(inline="always")
def _unfold_rows(src, mask, masked, r0, c0, down, channels):
    """Bᵀ down the six rows of the 6x6 block of `src` at (r0, c0), for each of its columns, as
    `winograd._unfold` writes it (`src` zeroed where `mask` <= 0 when `masked`)."""
    for k in range(ALPHA):
        for c in range(channels):
            if masked:
                d0 = src[r0, c0 + k, c] if mask[r0, c0 + k, c] > _ZERO else _ZERO
                d1 = src[r0 + 1, c0 + k, c] if mask[r0 + 1, c0 + k, c] > _ZERO else _ZERO
                d2 = src[r0 + 2, c0 + k, c] if mask[r0 + 2, c0 + k, c] > _ZERO else _ZERO
                d3 = src[r0 + 3, c0 + k, c] if mask[r0 + 3, c0 + k, c] > _ZERO else _ZERO
                d4 = src[r0 + 4, c0 + k, c] if mask[r0 + 4, c0 + k, c] > _ZERO else _ZERO
                d5 = src[r0 + 5, c0 + k, c] if mask[r0 + 5, c0 + k, c] > _ZERO else _ZERO
            else:
                d0, d1, d2 = src[r0, c0 + k, c], src[r0 + 1, c0 + k, c], src[r0 + 2, c0 + k, c]
                d3, d4 = src[r0 + 3, c0 + k, c], src[r0 + 4, c0 + k, c]
                d5 = src[r0 + 5, c0 + k, c]
            u0, u1, u2, u3, u4, u5 = _unfold(d0, d1, d2, d3, d4, d5)
            down[0, k, c], down[1, k, c], down[2, k, c] = u0, u1, u2
            down[3, k, c], down[4, k, c], down[5, k, c] = u3, u4, u5


@njit(inline="always")
def _unfold_across(down, out, t, channels):
    """Bᵀ across the six rows `down` holds, into tile `t`'s 36 positions p * 6 + q of `out`."""
    for p in range(ALPHA):
        for c in range(channels):
            u0, u1, u2, u3, u4, u5 = _unfold(
                down[p, 0, c], down[p, 1, c], down[p, 2, c],
                down[p, 3, c], down[p, 4, c], down[p, 5, c])
            out[p * 6, t, c], out[p * 6 + 1, t, c], out[p * 6 + 2, t, c] = u0, u1, u2
            out[p * 6 + 3, t, c], out[p * 6 + 4, t, c], out[p * 6 + 5, t, c] = u3, u4, u5


@njit(inline="always")
def _fold_tile(m, t, half, tile, channels):
    """Aᵀ m A of tile `t`'s 36 products into the 4x4 `tile`: down each column q, then across."""
    for q in range(ALPHA):
        for c in range(channels):
            v0, v1, v2, v3 = _fold(m[q, t, c], m[6 + q, t, c], m[12 + q, t, c],
                                   m[18 + q, t, c], m[24 + q, t, c], m[30 + q, t, c])
            half[0, q, c], half[1, q, c], half[2, q, c], half[3, q, c] = v0, v1, v2, v3
    for p in range(TILE):
        for c in range(channels):
            v0, v1, v2, v3 = _fold(half[p, 0, c], half[p, 1, c], half[p, 2, c],
                                   half[p, 3, c], half[p, 4, c], half[p, 5, c])
            tile[p, 0, c], tile[p, 1, c], tile[p, 2, c], tile[p, 3, c] = v0, v1, v2, v3


@njit(inline="always")
def _input_tiles(x, mask, masked, out, rows, cols):
    h, w, channels = x.shape
    for i in prange(rows):
        down = np.empty((ALPHA, ALPHA, channels), np.float32)
        block = np.empty((ALPHA, ALPHA, channels), np.float32)
        r0 = TILE * i - 1  # the zero 'same' padding: tile (i, j) starts one pixel up and left
        for j in range(cols):
            c0 = TILE * j - 1
            if r0 >= 0 and r0 + ALPHA <= h and c0 >= 0 and c0 + ALPHA <= w:
                _unfold_rows(x, mask, masked, r0, c0, down, channels)
            else:  # a tile over the map's edge: its block copied out, zeros beyond the map
                block[:] = _ZERO
                for a in range(ALPHA):
                    for b in range(ALPHA):
                        if 0 <= r0 + a < h and 0 <= c0 + b < w:
                            for c in range(channels):
                                v = x[r0 + a, c0 + b, c]
                                if masked and not mask[r0 + a, c0 + b, c] > _ZERO:
                                    v = _ZERO
                                block[a, b, c] = v
                _unfold_rows(block, block, False, 0, 0, down, channels)
            _unfold_across(down, out, i * cols + j, channels)


@njit(**_KERNEL)
def _input_kernel(x, out, rows, cols):
    _input_tiles(x, x, False, out, rows, cols)


@njit(**_KERNEL)
def _masked_kernel(x, mask, out, rows, cols):
    _input_tiles(x, mask, True, out, rows, cols)


@njit(inline="always")
def _output_map(m, bias, biased, y, rows, cols):
    h, w, channels = y.shape
    for i in prange(rows):
        half = np.empty((TILE, ALPHA, channels), np.float32)
        tile = np.empty((TILE, TILE, channels), np.float32)
        for j in range(cols):
            _fold_tile(m, i * cols + j, half, tile, channels)
            for p in range(min(TILE, h - TILE * i)):  # the map's last tiles are cut to it
                for q in range(min(TILE, w - TILE * j)):
                    if biased:
                        for c in range(channels):
                            v = tile[p, q, c] + bias[c]
                            y[TILE * i + p, TILE * j + q, c] = _ZERO if v <= _ZERO else v
                    else:
                        for c in range(channels):
                            y[TILE * i + p, TILE * j + q, c] = tile[p, q, c]


@njit(inline="always")
def _routed_rows(dpool, route, r0, c0, down, channels):
    """Bᵀ down the six rows of the 6x6 block at (r0, c0) (odd, 4i - 1: rows r0..r0 + 5 are the
    second row of window pr - 1, both rows of pr and pr + 1 and the first of pr + 2, with
    pr = (r0 + 1) / 2) of what `_routed` gives, for a block all of whose windows are inside
    the pooled map; without branches, so that the channels go in vector lanes."""
    pr = (r0 + 1) >> 1
    for k in range(ALPHA):
        col = c0 + k
        pc, first, second = col >> 1, np.uint8(col & 1), np.uint8(2 + (col & 1))
        for c in range(channels):
            ra, rb, rc, rd = (route[pr - 1, pc, c], route[pr, pc, c], route[pr + 1, pc, c],
                              route[pr + 2, pc, c])
            ga, gb, gc, gd = (dpool[pr - 1, pc, c], dpool[pr, pc, c], dpool[pr + 1, pc, c],
                              dpool[pr + 2, pc, c])
            d0 = ga if ra == second else _ZERO
            d1 = gb if rb == first else _ZERO
            d2 = gb if rb == second else _ZERO
            d3 = gc if rc == first else _ZERO
            d4 = gc if rc == second else _ZERO
            d5 = gd if rd == first else _ZERO
            u0, u1, u2, u3, u4, u5 = _unfold(d0, d1, d2, d3, d4, d5)
            down[0, k, c], down[1, k, c], down[2, k, c] = u0, u1, u2
            down[3, k, c], down[4, k, c], down[5, k, c] = u3, u4, u5


@njit(boundscheck=False, cache=True, nogil=True)
def _routed_block(dpool, route, r0, c0, block):
    """The 6x6 block at (r0, c0) of the gradient the pooled windows pass back: each window's
    `dpool` where `route` names the place, zero elsewhere and outside the windows."""
    hp, wp, channels = route.shape
    for a in range(ALPHA):
        r = r0 + a
        for b in range(ALPHA):
            col = c0 + b
            pr, pc = r >> 1, col >> 1
            if r < 0 or col < 0 or pr >= hp or pc >= wp:
                for c in range(channels):
                    block[a, b, c] = _ZERO
            else:
                place = np.uint8(2 * (r & 1) + (col & 1))
                for c in range(channels):
                    block[a, b, c] = dpool[pr, pc, c] if route[pr, pc, c] == place else _ZERO


@njit(**_KERNEL)
def _routed_kernel(dpool, route, out, rows, cols):
    hp, wp, channels = route.shape
    for i in prange(rows):
        down = np.empty((ALPHA, ALPHA, channels), np.float32)
        block = np.empty((ALPHA, ALPHA, channels), np.float32)
        r0 = TILE * i - 1
        for j in range(cols):
            c0 = TILE * j - 1
            if r0 >= 1 and (r0 + 5) >> 1 < hp and c0 >= 1 and (c0 + 5) >> 1 < wp:
                _routed_rows(dpool, route, r0, c0, down, channels)
            else:  # a block reaching past the windows: copied out as _input_tiles does
                _routed_block(dpool, route, r0, c0, block)
                _unfold_rows(block, block, False, 0, 0, down, channels)
            _unfold_across(down, out, i * cols + j, channels)


@njit(**_KERNEL)
def _pooled_kernel(m, bias, pooled, route, rows, cols):
    """relu(Aᵀ m A + bias) of each tile, max-pooled 2x2 (a 4x4 tile holds four whole windows):
    the windows' largest values into `pooled`, and into `route` the place of the first of
    them in row-major order (0-3; TensorFlow's and oneDNN's choice), or NO_ROUTE where it is
    not above zero (the ReLU passes nothing back there)."""
    hp, wp, channels = pooled.shape
    for i in prange(rows):
        half = np.empty((TILE, ALPHA, channels), np.float32)
        tile = np.empty((TILE, TILE, channels), np.float32)
        for j in range(cols):
            _fold_tile(m, i * cols + j, half, tile, channels)
            for a in range(2):
                pr = 2 * i + a
                if pr >= hp:
                    break
                for b in range(2):
                    pc = 2 * j + b
                    if pc >= wp:
                        break
                    for c in range(channels):
                        best = tile[2 * a, 2 * b, c] + bias[c]
                        best = _ZERO if best <= _ZERO else best
                        place = 0
                        v = tile[2 * a, 2 * b + 1, c] + bias[c]
                        v = _ZERO if v <= _ZERO else v
                        if v > best:
                            best, place = v, 1
                        v = tile[2 * a + 1, 2 * b, c] + bias[c]
                        v = _ZERO if v <= _ZERO else v
                        if v > best:
                            best, place = v, 2
                        v = tile[2 * a + 1, 2 * b + 1, c] + bias[c]
                        v = _ZERO if v <= _ZERO else v
                        if v > best:
                            best, place = v, 3
                        pooled[pr, pc, c] = best
                        route[pr, pc, c] = place if best > _ZERO else NO_ROUTE


@njit(**_KERNEL)
def _output_kernel(m, y, rows, cols):
    _output_map(m, m[0, 0], False, y, rows, cols)


@njit(**_KERNEL)
def _bias_kernel(m, bias, y, rows, cols):
    _output_map(m, bias, True, y, rows, cols)


def _tiles(h: int, w: int) -> tuple[int, int]:
    return -(-h // TILE), -(-w // TILE)


def _threads() -> None:
    # Numba's thread count is the calling thread's own; TensorFlow's executor threads vary.
    numba.set_num_threads(min(machine.intra_op_threads(), numba.config.NUMBA_NUM_THREADS))


def input_tiles(x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """(1, h, w, c) float32 -> (36, tiles, c): each 6x6 tile (zero 'same' padding) as Bᵀ d B,
    x zeroed first where `mask` <= 0; as `winograd._input_tiles` computes it."""
    x = np.ascontiguousarray(x[0], np.float32)
    h, w, channels = x.shape
    rows, cols = _tiles(h, w)
    if mask is not None and mask.shape != (1, h, w, channels):
        raise ValueError(f"mask {mask.shape} is not shaped as the map {(1, h, w, channels)}")
    with _LOCK:
        out = BUFFERS.take((ALPHA * ALPHA, rows * cols, channels))
        _threads()
        if mask is None:
            _input_kernel(x, out, rows, cols)
        else:
            _masked_kernel(x, np.ascontiguousarray(mask[0], np.float32), out, rows, cols)
    return out


def output_map(products: np.ndarray, h, w, bias: np.ndarray | None = None) -> np.ndarray:
    """(36, tiles, c) float32 -> (1, h, w, c): each tile's Aᵀ m A laid out as the image, with
    `bias` relu(. + bias); as `winograd._output_tiles` computes it."""
    products = np.ascontiguousarray(products, np.float32)
    h, w = int(h), int(w)
    rows, cols = _tiles(h, w)
    # The kernels index without bounds checks: the shapes must agree.
    if products.shape[:2] != (ALPHA * ALPHA, rows * cols) or (
            bias is not None and bias.shape != products.shape[-1:]):
        raise ValueError(f"products {products.shape} do not tile a {h}x{w} map"
                         + ("" if bias is None else f" with bias {bias.shape}"))
    with _LOCK:
        y = BUFFERS.take((1, h, w, products.shape[-1]))
        _threads()
        if bias is None:
            _output_kernel(products, y[0], rows, cols)
        else:
            _bias_kernel(products, np.ascontiguousarray(bias, np.float32), y[0], rows, cols)
    return y


def pooled_map(products: np.ndarray, h, w, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(36, tiles, c) float32 -> ((1, h // 2, w // 2, c) float32, (h // 2, w // 2, c) uint8):
    `output_map`'s relu(. + bias) max-pooled 2x2 with stride 2 (a last odd row or column
    dropped, as Keras' 'valid' pooling drops it), and where each window's gradient goes: the
    place (0-3, row-major) of its first largest value, or NO_ROUTE where that is not above
    zero. The map itself is never written."""
    products = np.ascontiguousarray(products, np.float32)
    h, w = int(h), int(w)
    rows, cols = _tiles(h, w)
    if products.shape[:2] != (ALPHA * ALPHA, rows * cols) or bias.shape != products.shape[-1:]:
        raise ValueError(f"products {products.shape} do not tile a {h}x{w} map with bias "
                         f"{bias.shape}")
    channels = products.shape[-1]
    with _LOCK:
        pooled = BUFFERS.take((1, h // 2, w // 2, channels))
        route = BUFFERS.take((h // 2, w // 2, channels), np.uint8)
        _threads()
        _pooled_kernel(products, np.ascontiguousarray(bias, np.float32), pooled[0], route,
                       rows, cols)
    return pooled, route


def routed_tiles(dpool: np.ndarray, route: np.ndarray, h, w) -> np.ndarray:
    """The input tiles (as `input_tiles` with a mask) of the gradient with respect to the
    (1, h, w, c) map that `pooled_map` pooled, given the pooled map's gradient `dpool` and
    its `route`: max pooling's gradient and the ReLU's in one pass."""
    dpool = np.ascontiguousarray(dpool[0], np.float32)
    h, w = int(h), int(w)
    rows, cols = _tiles(h, w)
    if route.shape != dpool.shape or route.shape[:2] != (h // 2, w // 2):
        raise ValueError(f"gradient {dpool.shape} and route {route.shape} do not pool a "
                         f"{h}x{w} map")
    with _LOCK:
        out = BUFFERS.take((ALPHA * ALPHA, rows * cols, route.shape[-1]))
        _threads()
        _routed_kernel(dpool, route, out, rows, cols)
    return out


# tf.numpy_function registers its Python function anew each time a graph is traced, and keeps
# every registration for the process's life (with the outermost graph): a process tracing many
# image sizes would gather them. The py_func op is given one registration per function instead.
_TOKENS = {function: script_ops._py_funcs.insert(function)  # pylint: disable=protected-access
           for function in (input_tiles, output_map, pooled_map, routed_tiles)}


def _call(function, args, results=(tf.float32,)):
    outputs = gen_script_ops.py_func_stateless(input=args, token=_TOKENS[function],
                                               Tout=list(results))
    return outputs[0] if len(results) == 1 else outputs


def transform(kind: str):
    """The transform `kind` ("input", "masked", "output", "bias") as a TensorFlow function
    taking what `winograd._compiled(kind, tf.float32)` takes; or "pooled" (`pooled_map`:
    products, h, w, bias -> pooled map, route) or "routed" (`routed_tiles`: the pooled map's
    gradient, route, h, w -> tiles), which only these kernels compute."""

    def tiles(x, mask=None):
        result = _call(input_tiles, [x] if mask is None else [x, mask])
        _, h, w, channels = x.shape
        if h is not None and w is not None:
            rows, cols = _tiles(h, w)
            result.set_shape((ALPHA * ALPHA, rows * cols, channels))
        return result

    def image(products, h, w, bias=None):
        result = _call(output_map, [products, h, w] + ([] if bias is None else [bias]))
        result.set_shape((1, None, None, products.shape[-1]))
        return result

    def pooled(products, h, w, bias):
        pooled, route = _call(pooled_map, [products, h, w, bias], (tf.float32, tf.uint8))
        channels = products.shape[-1]
        pooled.set_shape((1, None, None, channels))
        route.set_shape((None, None, channels))
        return pooled, route

    def routed(dpool, route, h, w):
        result = _call(routed_tiles, [dpool, route, h, w])
        result.set_shape((ALPHA * ALPHA, None, route.shape[-1]))
        return result

    return {"input": tiles, "masked": tiles, "output": image, "bias": image,
            "pooled": pooled, "routed": routed}[kind]
