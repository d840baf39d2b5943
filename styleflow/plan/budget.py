"""Fitting a run into a memory budget: the whole image in one pass when it fits, else the
largest tiles that do (`tiled_loss`, exact), with L-BFGS's history shortened only when even
modest tiles leave no room for it; with the network split at the shallowest pooling layer
whose deeper layers fit whole beside comfortable tiles of the shallower ones, when one does.
Sizes are refused only when the smallest tile cannot fit."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

from ..defaults import LBFGS_HISTORY
from ..errors import StyleflowError
from ..model import machine
from ..model.layout import STAGES, conv_maps, deepest, stage
from ..objective import tiling
from . import host
from .memory import (BASE_BYTES, FORWARD_SHARE, deep_pass_bytes, estimate_bytes, largest_size,
                     optimiser_bytes, pass_bytes, photo_bytes, winograd_kept_bytes)

# L-BFGS keeps its full history whenever the budget allows; below a comfortable crop it gives up
# history down to this before tiles get smaller.
MIN_HISTORY = 3
# Per image value besides the optimiser's own state when tiled: the float32 gradient being
# summed, the float32 image handed to the tiles, the start and content images, and slack.
TILED_IMAGE_BYTES = 4 + 4 + 4 + 4 + 4
# Below this many pixels per crop the halo dominates and runs get slow.
COMFORTABLE_CROP = 768 * 768
# Pooling layers the tiled loss may split the network at, shallowest first: the shallower the
# split, the less of the work goes over tiles (measured: docs/large-images.md).
SPLITS = ("block2_pool", "block3_pool", "block4_pool")
# The smallest crop of the shallow layers a split takes: their halo is at most 56 px, so such
# crops waste little; below it, today's tiles are kept.
SPLIT_MIN_CROP = 512 * 512
# A split only where the layers reach this block: with the lite layers (blocks 1-3) it
# measured no faster than tiles of the whole network.
SPLIT_MIN_BLOCK = 4


@dataclass(frozen=True)
class Layout:
    """How a run is laid out in memory: `tile` None for the whole image in one pass, else the
    tiles' core (rows, columns); `history` L-BFGS's correction pairs; `need` the estimate."""

    tile: tuple[int, int] | None
    history: int
    need: int
    # Cores of the forward-only pass (Gram sums): it keeps no activations for a backward
    # pass, so its tiles may hold twice the pixels (fewer halos) in the same memory.
    forward_tile: tuple[int, int] | None = None
    # The pooling layer the loss's network is split at (tiled_loss), and the cores (rows,
    # columns) of the layers up to it; `tile` and `forward_tile` then serve the targets.
    split: str | None = None
    split_tile: tuple[int, int] | None = None

    def describe(self, optimiser: str) -> str:
        """One line for the run's notes."""
        gb = f"about {self.need / 2**30:.1f} GB"
        if self.split is not None:
            where = (f"tiles of {self.split_tile[1]}x{self.split_tile[0]} px up to "
                     f"{self.split}, the deeper layers whole (exact)")
        else:
            where = ("the whole image in one pass" if self.tile is None
                     else f"tiles of {self.tile[1]}x{self.tile[0]} px (exact)")
        history = f", L-BFGS history {self.history}" if optimiser == "lbfgs" else ""
        return f"memory: {where}{history}, {gb}"


def content_bytes(size: tuple[int, int], content_layers: Sequence[str]) -> int:
    """The content targets (the whole image's features at the content layers), float32."""
    total = 0
    for name in content_layers:
        rows, cols = stage(name).map_size(size)
        total += rows * cols * stage(name).out_channels * 4
    return total


def tiled_need(size: tuple[int, int], crop_pixels: int, layers: Sequence[str],
               content_layers: Sequence[str], precision: str, optimiser: str,
               history: int, photo: bool = False) -> int:
    """Estimated peak bytes of a tiled run whose largest crop has `crop_pixels` pixels (with
    the photorealism term, taken over row strips, when `photo`)."""
    values = size[0] * size[1] * 3
    side = max(1, int(crop_pixels ** 0.5))
    # The gradient pass is the larger of the two: the forward-only pass's crops are chosen to
    # fit in what it holds (`forward_crop`).
    return int(BASE_BYTES + winograd_kept_bytes((side, side), layers, precision, whole=size)
               + pass_bytes((side, side), layers, precision, whole=size)
               + content_bytes(size, content_layers)
               + (optimiser_bytes(optimiser, history) + TILED_IMAGE_BYTES) * values
               + (photo_bytes(size, photo_strip(size)) if photo else 0))


def split_need(size: tuple[int, int], crop_pixels: int, layers: Sequence[str],
               content_layers: Sequence[str], precision: str, optimiser: str, history: int,
               split: str, photo: bool = False) -> int:
    """Estimated peak bytes of a run whose loss is split at `split` (tiled_loss), the shallow
    layers' largest crop `crop_pixels` pixels: the larger of the deep pass (with the map at
    the split and its gradient) and a shallow tile's pass (with that gradient)."""
    values = size[0] * size[1] * 3
    side = max(1, int(crop_pixels ** 0.5))
    at = stage(split)
    rows, cols = at.map_size(size)
    split_map = rows * cols * at.out_channels * 4
    shallow_last = STAGES[STAGES.index(at) - 1].name
    evaluation = max(deep_pass_bytes(size, layers, split, precision) + 2 * split_map,
                     pass_bytes((side, side), [shallow_last], precision, whole=size)
                     + split_map)
    return int(BASE_BYTES + winograd_kept_bytes(size, layers, precision) + evaluation
               + content_bytes(size, content_layers)
               + (optimiser_bytes(optimiser, history) + TILED_IMAGE_BYTES) * values
               + (photo_bytes(size, photo_strip(size)) if photo else 0))


def photo_strip(size: tuple[int, int]) -> int:
    """Pixels of the row strips the tiled loss takes the photorealism term over."""
    return max(1, tiling.PHOTO_STRIP_PIXELS // size[1]) * size[1]


def choose(size: tuple[int, int], layers: Sequence[str], content_layers: Sequence[str],
           precision: str, optimiser: str, *, max_memory: float | None = None,
           tile: int | None = None, what: str = "output size", resident: int | None = None,
           available: int | None = None, photo: bool = False) -> Layout:
    """The layout for optimising an (h, w) image: untiled when it fits (and is not too large
    for one pass), else the largest tiles that fit. `max_memory` (GB) is the budget for the
    whole process; without it, what this process holds plus the memory available now.
    `tile` (px) forces tiles of that core side. `photo`: the run has the photorealism term.
    StyleflowError when nothing fits."""
    resident = host.resident_bytes() if resident is None else resident
    if max_memory is not None:
        if not max_memory > 0:
            raise StyleflowError(f"max_memory: must be above 0 GB, not {max_memory:g}",
                                 params=("max_memory",))
        budget = int(max_memory * 2**30)
    else:
        available = host.available_bytes() if available is None else available
        budget = None if available is None else available + max(resident, 0)
    pixels = size[0] * size[1]
    if tile is not None and tile < 1:
        raise StyleflowError(f"tile: must be at least 1 px, not {tile}", params=("tile",))
    whole = estimate_bytes(size, layers, precision, optimiser, photo)
    limit = machine.pass_pixels(precision)
    if tile is None and pixels <= limit and (budget is None or whole <= budget):
        return Layout(None, LBFGS_HISTORY, whole)
    height, width = size
    align = tiling.crop_align(layers, precision)
    if budget is None:  # no way to measure memory here: modest tiles, full history
        core = (tile, tile) if tile else (
            tiling.best_core(height, width, layers, min(COMFORTABLE_CROP, limit), align)
            or (tiling.grid(layers, align),) * 2)
        return _layout(size, layers, content_layers, precision, optimiser, core,
                       LBFGS_HISTORY, photo)
    if tile is not None:
        _check_forced_tile(height, width, layers, tile, limit, align)
        for history in _histories(optimiser):
            layout = _layout(size, layers, content_layers, precision, optimiser,
                             (tile, tile), history, photo)
            if layout.need <= budget:
                return layout
        raise _refusal(what, size, layout.need, budget, f"with tile={tile}", max_memory,
                       (f"tile={tile}",))
    for floor in (min(COMFORTABLE_CROP, limit), 0):
        # Below a comfortable crop the halos dominate the run's time: there the shortest
        # history buys the largest tiles.
        for history in _histories(optimiser)[::1 if floor else -1]:
            core = _fitting_core(
                lambda crop: tiled_need(size, crop, layers, content_layers, precision,
                                        optimiser, history, photo),
                budget, size, layers, limit, floor, align)
            if core is not None:
                return _with_split(_layout(size, layers, content_layers, precision, optimiser,
                                           core, history, photo),
                                   size, layers, content_layers, precision, optimiser,
                                   budget, photo)
    g = tiling.grid(layers, align)
    history = _histories(optimiser)[-1]
    smallest = _layout(size, layers, content_layers, precision, optimiser, (g, g), history,
                       photo)

    def fits(trial: tuple[int, int]) -> bool:
        crop = tiling.largest_crop(*trial, layers, (g, g), align)
        return tiled_need(trial, crop, layers, content_layers, precision, optimiser,
                          history, photo) <= budget

    largest = largest_size(size, fits, g)
    raise _refusal(what, size, smallest.need, budget, "even in the smallest tiles",
                   max_memory, largest=largest if fits(largest) else None)


def _with_split(layout: Layout, size, layers, content_layers, precision, optimiser, budget,
                photo) -> Layout:
    """`layout` (tiles of the whole network, which then serve the targets) with the loss split
    at the shallowest of SPLITS whose deep pass fits `budget` beside shallow crops of at least
    SPLIT_MIN_CROP pixels (the longest L-BFGS history first), when one does."""
    last = STAGES.index(stage(deepest(layers)))
    if stage(deepest(layers)).block < SPLIT_MIN_BLOCK:
        return layout
    height, width = size
    limit = machine.pass_pixels(precision)
    for history, split in ((h, s) for h in _histories(optimiser) for s in SPLITS):
        at = STAGES.index(stage(split))
        if at >= last or not _deep_pass_runs(size, layers, split, limit):
            continue
        shallow = [n for n in layers if STAGES.index(stage(n)) < at] + [split]
        align = tiling.winograd_align(split, precision)
        def need(crop: int) -> int:
            return split_need(size, crop, layers, content_layers, precision, optimiser,
                              history, split, photo)

        core = _fitting_core(need, budget, size, shallow, limit, SPLIT_MIN_CROP, align)
        if core is None:
            continue
        estimate = need(tiling.largest_crop(height, width, shallow, core, align))
        return replace(layout, history=history, need=max(estimate, layout.need),
                       split=split, split_tile=tuple(core))
    return layout


def _deep_pass_runs(size, layers, split: str, limit: int) -> bool:
    """Whether oneDNN can convolve the deep layers' whole maps here: their products are no
    larger than those of a pass of `limit` pixels (machine.pass_pixels, 64 channels at full
    resolution)."""
    at = STAGES.index(stage(split))
    return all(h * w * cin <= limit * machine.FULL_RESOLUTION_CHANNELS
               for name, h, w, cin, _ in conv_maps(size, deepest(layers))
               if STAGES.index(stage(name)) > at)


def _fitting_core(need, budget: int, size, layers, limit: int, least: int = 0,
                  align: int = 1) -> tuple[int, int] | None:
    """The best core (tiling.best_core) for crops of up to the most pixels whose `need(crop)`
    fits `budget`, capped at `limit` (one pass's most); None when that crop is under `least`
    pixels or no core fits it."""
    crop = _bisect(need, budget, size[0] * size[1] * 4 + 1)
    if crop is None or crop < least:
        return None
    return tiling.best_core(*size, layers, min(crop, limit), align)


def _bisect(need, budget: int, most: int) -> int | None:
    """The largest crop (pixels, within 1024) for which `need(crop)` fits `budget`."""
    if need(1) > budget:
        return None
    lo, hi = 0, most
    while hi - lo > 1024:
        mid = (lo + hi) // 2
        if need(mid) <= budget:
            lo = mid
        else:
            hi = mid
    return lo


def _check_forced_tile(height: int, width: int, layers: Sequence[str], tile: int,
                       limit: int, align: int = 1) -> None:
    """Refuse a `tile` whose passes oneDNN's GEMM convolutions could not run (they would fall
    back to a reference loop hundreds of times slower); larger passes than
    machine.MAX_PASS_PIXELS are the user's call."""
    if (limit >= machine.MAX_PASS_PIXELS
            or tiling.largest_crop(height, width, layers, tile, align) <= limit):
        return
    g = tiling.grid(layers, align)
    fits = next((t for t in range(tile // g * g, 0, -g)
                 if tiling.largest_crop(height, width, layers, t, align) <= limit), g)
    raise StyleflowError(
        f"tile: {tile} px tiles make passes of more than {limit} pixels, which oneDNN's "
        f"convolutions cannot run on this CPU with {machine.intra_op_threads()} threads; use "
        f"tile={fits} or less (or TF_ENABLE_ONEDNN_OPTS=0)", params=("tile", f"tile={fits}"))


def _histories(optimiser: str) -> list[int]:
    if optimiser != "lbfgs":
        return [LBFGS_HISTORY]
    return list(range(LBFGS_HISTORY, MIN_HISTORY - 1, -1))


def _layout(size, layers, content_layers, precision, optimiser, core, history,
            photo=False) -> Layout:
    height, width = size
    align = tiling.crop_align(layers, precision)
    crop = tiling.largest_crop(height, width, layers, core, align)
    need = tiled_need(size, crop, layers, content_layers, precision, optimiser, history, photo)
    forward = tiling.best_core(height, width, layers,
                               min(machine.pass_pixels(precision),
                                   forward_crop(crop, layers, precision, size)), align)
    return Layout(tuple(core), history, need, forward)


def forward_crop(crop_pixels: int, layers: Sequence[str], precision: str,
                 whole: tuple[int, int] | None = None) -> int:
    """The most pixels a forward-only pass's crop may have while holding no more than the
    gradient pass over `crop_pixels` does (up to 1 / FORWARD_SHARE times as many: Winograd's
    transient tiles do not shrink with the activations kept); crops of an image of size
    `whole`."""
    def square(pixels: int) -> tuple[int, int]:
        side = max(1, int(pixels ** 0.5))
        return side, side

    room = pass_bytes(square(crop_pixels), layers, precision, whole=whole)
    lo, hi = crop_pixels, int(crop_pixels / FORWARD_SHARE)
    if pass_bytes(square(hi), layers, precision, forward=True, whole=whole) <= room:
        return hi
    while hi - lo > 1024:
        mid = (lo + hi) // 2
        if pass_bytes(square(mid), layers, precision, forward=True, whole=whole) <= room:
            lo = mid
        else:
            hi = mid
    return lo


def _refusal(what: str, size: tuple[int, int], need: int, budget: int, how: str,
             max_memory: float | None, params: Sequence[str] = (),
             largest: tuple[int, int] | None = None) -> StyleflowError:
    h, w = size
    if max_memory is not None:  # as given: 0.05 GB is not 0.0
        given = f"{max_memory:.1f}" if round(max_memory, 1) == max_memory else f"{max_memory:g}"
    room = (f"the budget is {given} GB (max_memory)" if max_memory is not None
            else f"{budget / 2**30:.1f} GB is available")
    if largest is None and how.startswith("even") and max_memory is not None:
        advice = "no size fits: use a larger max_memory"
    else:
        advice = (f"use at most about {largest[1]}x{largest[0]} (width/height)" if largest
                  else "use a smaller width/height")
        advice += " or a larger max_memory" if max_memory is not None else ""
    return StyleflowError(
        f"{what}: a {w}x{h} image needs about {need / 2**30:.1f} GB of memory {how} but "
        f"{room}; {advice}", params=("width/height", "max_memory", *params))
