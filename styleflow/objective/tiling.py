"""Tiles for images too large for one pass through the network, placed so that results are
exact: each tile's core starts on the deepest layer's pooling grid and the tile carries a halo
at least as wide as that layer's receptive field reaches, so the features of its core equal the
whole image's there. Used for large style images' Gram targets, for content features, and by
`tiled_loss` for the loss and gradient of the optimised image."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..model import machine, winograd
from ..model.layout import deepest, stage, stages_to

# Pixels per row strip of the per-pixel terms the tiled loss takes over strips (total
# variation, photorealism): a few strip-sized temporaries each.
STRIP_PIXELS = 1 << 20
# Pixels per row strip of the photorealism term: its compiled window sums and their gradient
# hold about 2.3 KB per strip pixel (XLA keeps every window sum the gradient reads), so
# 2048 px wide strips of STRIP_PIXELS held 2.4 GB; strips this size cost no more time.
PHOTO_STRIP_PIXELS = 1 << 16

# Cores of the forward-only passes over a large image (style Grams, content features) when no
# budget chose them: a side of this many pixels.
TILE_SIDE = 1024


def geometry(layer: str) -> tuple[int, int]:
    """(stride, radius) of a layer's output in input pixels: one output row stands for
    `stride` input rows and depends on input rows up to `radius` beyond them on each side."""
    s = stage(layer)
    return s.stride, s.radius


def grid(layers: Sequence[str], align: int = 1) -> int:
    """The pooling stride of the deepest layer (a multiple of `align` too): tile cores start
    on multiples of it."""
    return math.lcm(max(geometry(name)[0] for name in layers), align)


def halo(layers: Sequence[str], align: int = 1) -> int:
    """Input pixels a tile needs beyond its core on each side: the deepest receptive-field
    reach, rounded up to the grid so crops start on it too."""
    g = grid(layers, align)
    return -(-max(geometry(name)[1] for name in layers) // g) * g


def winograd_align(last: str, precision: str = "float32") -> int:
    """The grid on which crops through the layers up to `last` must start for each Winograd
    layer among them (model.winograd) to place its tiles where the whole image's pass does:
    its output tile times its stride. Off that grid results differ by rounding only, but by
    enough to flip a ReLU here and there (1e-3 of the gradient)."""
    if not machine.transposed_convolutions(precision):
        return 1
    align = 1
    for s in stages_to(last):
        if s.conv and (winograd.suits_channels(s.in_channels, s.out_channels)
                       or winograd.narrow(s.in_channels, s.out_channels)):
            align = math.lcm(align, winograd.TILE * s.stride)
    return align


def crop_align(layers: Sequence[str], precision: str = "float32") -> int:
    """The grid on which crops through all of `layers` (no split) start: Winograd's for every
    such layer up to the deepest (winograd_align)."""
    return winograd_align(deepest(layers), precision)


@dataclass(frozen=True)
class Tile:
    """One tile: the crop of the image it reads, and per layer where its core lies, both in
    the crop's feature grid (`boxes`, rows then columns, stop exclusive) and in the whole
    image's (`places`)."""

    crop: tuple[int, int, int, int]  # y0, y1, x0, x1 in image pixels
    boxes: np.ndarray  # (layers, 4) int32: r0, r1, c0, c1 in the crop's features
    places: np.ndarray  # (layers, 4) int32: the same rows and columns in the image's features

    @property
    def pixels(self) -> int:
        y0, y1, x0, x1 = self.crop
        return (y1 - y0) * (x1 - x0)


def plan(height: int, width: int, layers: Sequence[str],
         core: int | tuple[int, int], align: int = 1) -> list[Tile]:
    """Tiles covering an image of height x width whose cores are about `core` pixels (a side,
    or (rows, columns)), rounded down to the grid (at least one grid step; the grid a multiple
    of `align`)."""
    g, h = grid(layers, align), halo(layers, align)
    core_h, core_w = (core, core) if isinstance(core, int) else core
    core_h, core_w = max(g, core_h // g * g), max(g, core_w // g * g)
    strides = [geometry(name)[0] for name in layers]
    tiles = []
    for y0 in range(0, height, core_h):
        for x0 in range(0, width, core_w):
            y1, x1 = min(y0 + core_h, height), min(x0 + core_w, width)
            cy, cx = max(0, y0 - h), max(0, x0 - h)
            ey, ex = min(height, y1 + h), min(width, x1 + h)
            boxes, places = [], []
            for s in strides:
                # At the image's far edge floor division gives the whole image's last row or
                # column, as a pass over the whole image would (valid pooling floors).
                r1 = (y1 // s) if y1 < height else height // s
                c1 = (x1 // s) if x1 < width else width // s
                places.append((y0 // s, r1, x0 // s, c1))
                boxes.append((y0 // s - cy // s, r1 - cy // s, x0 // s - cx // s, c1 - cx // s))
            tiles.append(Tile((cy, ey, cx, ex), np.asarray(boxes, np.int32),
                              np.asarray(places, np.int32)))
    return tiles


def _spans(length: int, core: int, halo_: int) -> list[int]:
    """Lengths of the crops along one side (tiles form a grid, so sides are independent)."""
    return [min(length, y0 + core + halo_) - max(0, y0 - halo_)
            for y0 in range(0, length, core)]


def _core_sides(height: int, width: int, layers: Sequence[str],
                core: int | tuple[int, int], align: int = 1) -> tuple[int, int]:
    g = grid(layers, align)
    core_h, core_w = (core, core) if isinstance(core, int) else core
    return max(g, core_h // g * g), max(g, core_w // g * g)


def computed_pixels(height: int, width: int, layers: Sequence[str],
                    core: int | tuple[int, int], align: int = 1) -> int:
    """Pixels that go through the network for one pass over `plan(...)`'s tiles."""
    core_h, core_w = _core_sides(height, width, layers, core, align)
    h = halo(layers, align)
    return sum(_spans(height, core_h, h)) * sum(_spans(width, core_w, h))


def largest_crop(height: int, width: int, layers: Sequence[str],
                 core: int | tuple[int, int], align: int = 1) -> int:
    """Pixels of the largest crop of `plan(...)`."""
    core_h, core_w = _core_sides(height, width, layers, core, align)
    h = halo(layers, align)
    return max(_spans(height, core_h, h)) * max(_spans(width, core_w, h))


# Column counts tried when choosing tiles: enough to find strips and near-square tiles.
MAX_COLUMNS_TRIED = 256


def best_core(height: int, width: int, layers: Sequence[str],
              max_crop_pixels: int, align: int = 1) -> tuple[int, int] | None:
    """The core (rows, columns) whose crops stay within `max_crop_pixels` and that sends the
    fewest pixels through the network (full-width strips where they pay, else near-square
    tiles); None when not even a one-step core fits."""
    g, h = grid(layers, align), halo(layers, align)
    best, best_cost = None, None
    widths = set()
    for n in range(1, min(MAX_COLUMNS_TRIED, -(-width // g)) + 1):
        per_column = -(-width // n)
        widths.add(min(width, -(-per_column // g) * g))
    widths.add(g)
    for core_w in sorted(widths, reverse=True):
        crop_w = min(width, core_w + 2 * h)
        rows = max_crop_pixels // crop_w - 2 * h
        core_h = height if rows >= height else rows // g * g
        if core_h < g:
            continue
        if largest_crop(height, width, layers, (core_h, core_w), align) > max_crop_pixels:
            continue
        cost = computed_pixels(height, width, layers, (core_h, core_w), align)
        if best_cost is None or cost < best_cost:
            best, best_cost = (core_h, core_w), cost
    return best


def _crop(image: np.ndarray, tile: Tile) -> np.ndarray:
    y0, y1, x0, x1 = tile.crop
    return image[:, y0:y1, x0:x1, :]


def tiled_gram_sums(extractor, image: np.ndarray, layers: Sequence[str],
                    tile: int | tuple[int, int] | None = None, precision: str = "float32",
                    guides: dict[str, np.ndarray] | None = None
                    ) -> dict[str, tuple[np.ndarray, int]]:
    """For each layer, (Σ FᵀF over every position, number of feature values h·w·c) of the
    network-space `image` (1, H, W, 3), accumulated in float64 over tiles with cores of about
    `tile` pixels (by default TILE_SIDE, or less where `machine.pass_pixels` asks for the
    extractor's `precision`). With `guides` (per layer (h, w, k) maps at the layer's size) the
    sums are (k, c, c): Σ (g_j F)ᵀ(g_j F) for each guide j."""
    import tensorflow as tf

    from . import losses

    _, height, width, _ = image.shape
    align = crop_align(layers, precision)
    if tile is None:
        tile, limit = TILE_SIDE, machine.pass_pixels(precision)
        if largest_crop(height, width, layers, tile, align) > limit:
            tile = best_core(height, width, layers, limit, align) or grid(layers, align)
    sums: dict[str, np.ndarray | float] = {name: 0.0 for name in layers}
    narrow = winograd.narrow_at((height, width), layers)
    for t in plan(height, width, layers, tile, align):
        # Tiles run where memory is short: XLA's transforms (winograd.xla_transforms), and
        # block1_conv2 by Winograd where the one pass would.
        with winograd.xla_transforms(narrow):
            feats = extractor(tf.constant(_crop(image, t), tf.float32), training=False)
        for i, name in enumerate(layers):
            r0, r1, c0, c1 = (int(v) for v in t.boxes[i])
            f = tf.cast(feats[name], tf.float32)[0, r0:r1, c0:c1, :]
            part = tf.reshape(f, (-1, f.shape[-1]))
            if guides is None:
                gram = losses.flat_gram(part).numpy()
            else:
                p0, p1, q0, q1 = (int(v) for v in t.places[i])
                g = guides[name][p0:p1, q0:q1]
                g = tf.constant(g.reshape(-1, g.shape[-1]), tf.float32)
                gram = np.stack([losses.flat_gram(part * g[:, j:j + 1]).numpy()
                                 for j in range(g.shape[-1])])
            sums[name] = sums[name] + gram.astype(np.float64)
    counts = {}
    for name in layers:
        rows, cols = stage(name).map_size((height, width))
        counts[name] = rows * cols * sums[name].shape[-1]
    return {name: (sums[name], counts[name]) for name in layers}


def tiled_features(extractor, image: np.ndarray, layers: Sequence[str],
                   tile: int | tuple[int, int], precision: str = "float32"
                   ) -> dict[str, np.ndarray]:
    """The whole image's float32 features at `layers`, (1, h, w, c) each, assembled from the
    cores of tiles of about `tile` pixels (crops on the grid `crop_align` gives for the
    extractor's `precision`)."""
    import tensorflow as tf

    _, height, width, _ = image.shape
    out: dict[str, np.ndarray] = {}
    narrow = winograd.narrow_at((height, width), layers)
    for t in plan(height, width, layers, tile, crop_align(layers, precision)):
        with winograd.xla_transforms(narrow):  # as in tiled_gram_sums
            feats = extractor(tf.constant(_crop(image, t), tf.float32), training=False)
        for i, name in enumerate(layers):
            f = tf.cast(feats[name], tf.float32).numpy()
            if name not in out:
                out[name] = np.zeros((1, *stage(name).map_size((height, width)), f.shape[-1]),
                                     np.float32)
            r0, r1, c0, c1 = t.boxes[i]
            p0, p1, q0, q1 = t.places[i]
            out[name][:, p0:p1, q0:q1, :] = f[:, r0:r1, c0:c1, :]
    return out
