"""Gram matrices of images too large for one pass through the network, computed exactly over
tiles: each tile carries a halo at least as wide as the deepest layer's receptive field and
starts on that layer's pooling grid, so the features of its core equal the whole image's there.
Large style images go through here (one eager convolution over ~11 MP crashed TensorFlow)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .network import VGG19_LAYOUT

# Images above this many pixels have their style Gram matrices computed in tiles; 7.4 MP
# passed in one piece on a 24 GB machine and 11.3 MP crashed, so 4 MP keeps well clear.
TILE_ABOVE_PIXELS = 2048 * 2048
TILE_SIDE = 1024


def geometry(layer: str) -> tuple[int, int]:
    """(stride, radius) of a layer's output in input pixels: one output row stands for
    `stride` input rows and depends on input rows up to `radius` beyond them on each side."""
    stride, radius = 1, 0
    for entry in VGG19_LAYOUT:
        if entry is None:  # a 2x2 pooling reaches one more row at the current stride
            radius += stride
            stride *= 2
            continue
        radius += stride  # a 3x3 convolution reaches one row further at the current stride
        if entry[0] == layer:
            return stride, radius
    raise ValueError(f"unknown layer {layer!r}")


def tile_origins(length: int, core: int) -> list[int]:
    """Starts of the tile cores along one side."""
    return list(range(0, length, core))


def tiled_gram_sums(extractor, image: np.ndarray, layers: Sequence[str],
                    tile: int | None = None) -> dict[str, tuple[np.ndarray, int]]:
    """For each layer, (Σ FᵀF over every position, number of feature values h·w·c) of the
    network-space `image` (1, H, W, 3), accumulated in float64 over tiles of about `tile`
    pixels a side (TILE_SIDE by default) plus their halo."""
    import tensorflow as tf

    tile = TILE_SIDE if tile is None else tile
    _, height, width, _ = image.shape
    strides = {name: geometry(name)[0] for name in layers}
    grid = max(strides.values())
    halo = -(-max(geometry(name)[1] for name in layers) // grid) * grid  # round up to grid
    core = max(grid, tile // grid * grid)
    sums = {name: 0.0 for name in layers}
    counts = {}
    for y0 in tile_origins(height, core):
        for x0 in tile_origins(width, core):
            y1, x1 = min(y0 + core, height), min(x0 + core, width)
            cy, cx = max(0, y0 - halo), max(0, x0 - halo)
            crop = image[:, cy:min(height, y1 + halo), cx:min(width, x1 + halo), :]
            feats = extractor(tf.constant(crop, tf.float32), training=False)
            for name in layers:
                s = strides[name]
                f = tf.cast(feats[name], tf.float32)[0]
                # The core in this crop's feature grid; at the image's far edge, floor division
                # gives the whole image's last row or column, as the full pass would.
                rows = slice((y0 - cy) // s, (y1 - cy) // s if y1 < height else None)
                cols = slice((x0 - cx) // s, (x1 - cx) // s if x1 < width else None)
                part = tf.reshape(f[rows, cols, :], (-1, f.shape[-1]))
                sums[name] = sums[name] + tf.matmul(part, part, transpose_a=True).numpy().astype(
                    np.float64)
    for name in layers:
        s = strides[name]
        channels = sums[name].shape[0]
        counts[name] = (height // s) * (width // s) * channels
    return {name: (sums[name], counts[name]) for name in layers}
