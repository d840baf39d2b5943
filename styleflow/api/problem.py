"""From images and options to a ready optimisation problem: images loaded and sized, layers
chosen and checked, the run laid out in memory, targets computed. The Stylizer builds its
problems here."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..defaults import (DEFAULT_HEIGHT, FULL_CONTENT_LAYER, NS_CONTENT_LAYERS,
                        PHOTO_CONTENT_LAYERS, PHOTO_DEFAULTS)
from ..errors import Note, StyleflowError
from ..io import images
from ..model import machine
from ..model.layout import min_image_side
from ..objective import masks, tiling
from ..objective.matting import MattingLaplacian
from ..objective.objective import Objective
from ..objective.terms import KERAS_EXAMPLE, NEURAL_STYLE
from ..plan import budget, host
from ..plan.budget import Layout
from ..plan.memory import check_fits
from .networks import Network, Networks

# A tiled style image held whole meanwhile: uint8 RGB, its float32 network copy, and slack.
TILED_BYTES_PER_PIXEL = 3 + 12 + 5


def check_size(shape: tuple[int, int], network: Network, what: str,
               optimiser: str | None = None, max_memory: float | None = None,
               tile: int | None = None, params: Sequence[str] = (),
               photo: bool = False) -> Layout | None:
    """Raise if an image of `shape` (h, w) is too small for the deepest layer's poolings or too
    large for the memory available: optimised (by `optimiser`: lbfgs or adam; the Layout that
    fits `max_memory` GB, tiled if need be, is returned) or, without one, run forward once for
    its style targets. `params` names the parameters `what` mentions; `photo`: the run has
    the photorealism term."""
    layers = network.content_layers + network.style_layers
    need = min_image_side(layers)
    if min(shape) < need:
        raise StyleflowError(
            f"{what}: {shape[1]}x{shape[0]} pixels is too small for the chosen layers; each "
            f"side must be at least {need} px", params=params)
    if optimiser is not None:
        # On a GPU the tiles follow the device's free memory (the host's holds only the
        # optimiser's state there); where that cannot be read, only an explicit budget or
        # tile is planned for and TensorFlow's own out-of-memory error is reported
        # (errors.exhaustion).
        available = resident = None
        if max_memory is None and machine.gpu_visible():
            available = host.gpu_available_bytes()
            resident = 0  # the device's figure already counts what TensorFlow holds
            if available is None:
                available = 2**62
        return budget.choose(shape, layers, network.content_layers, network.precision,
                             optimiser, max_memory=max_memory, tile=tile, what=what,
                             available=available, resident=resident, photo=photo)
    if not machine.gpu_visible():
        # On a GPU TensorFlow's own out-of-memory error is reported instead
        # (errors.exhaustion).
        pixels = shape[0] * shape[1]
        if optimiser is None and pixels > machine.pass_pixels(network.precision):
            # A large style image goes through in tiles: a tile's activations, plus the
            # image itself (uint8 and float32 copies) held meanwhile.
            side = 2 * tiling.TILE_SIDE
            check_fits((min(shape[0], side), min(shape[1], side)), layers, network.precision,
                       "forward", what=what, extra=TILED_BYTES_PER_PIXEL * pixels,
                       shown=shape, params=params)
        else:
            check_fits(shape, layers, network.precision, optimiser or "forward", what=what,
                       params=params)


@dataclass
class Problem:
    """Everything a CLI optimises: the objective, the start image, the network it runs."""

    objective: Objective
    start: np.ndarray
    network: Network
    size: tuple[int, int]
    content_rgb: np.ndarray
    style_sizes: list[tuple[int, int]]
    layout: Layout | None = None


def transfer_problem(networks: Networks, base, ref, *, content_weight: float = 0.025,
                     style_weight: float = 1.0, tv_weight: float = 1.0,
                     height: int | None = None, width: int | None = None,
                     content_layer: str | None = None, style_layers: Sequence[str] | None = None,
                     init=None, max_memory: float | None = None,
                     tile: int | None = None, temporal_weight: float | None = None) -> Problem:
    """neural_style_transfer.py's problem (the Keras example): content and style resized to one
    size, content and style layers weighted equally, the example's loss normalisation.

    Images are paths, PIL images or NumPy arrays (see io.images.as_rgb). `max_memory` (GB)
    and `tile` (px) lay the run out in memory (see plan.budget.choose). `temporal_weight`
    adds a video's temporal term with that weight (no previous frame yet: its weights are 0;
    Objective.with_frame gives the next frames')."""
    base_rgb = images.as_rgb(base, "base image")
    ref_rgb = images.as_rgb(ref, "style image")
    if height is None and width is None:
        height = DEFAULT_HEIGHT
    size = images.fit_size(base_rgb.shape[:2], height, width)
    init_rgb = None if init is None else images.as_rgb(init, "initial image")
    network = networks.get([content_layer] if content_layer is not None else None, style_layers,
                           [FULL_CONTENT_LAYER], KERAS_EXAMPLE,
                           temporal=temporal_weight is not None)
    # Before any large allocation:
    layout = check_size(size, network, "output size", "lbfgs", max_memory, tile)
    start_rgb = None if init_rgb is None else images.resize(init_rgb, size)
    spec = network.input_spec
    content_rgb = images.resize(base_rgb, size)
    content = spec.preprocess(content_rgb)
    objective = Objective(
        network.extractor, content, [spec.preprocess(images.resize(ref_rgb, size))],
        content_layers={name: 1.0 for name in network.content_layers},
        style_layers={name: 1.0 / len(network.style_layers) for name in network.style_layers},
        content_weight=content_weight, style_weight=style_weight, tv_weight=tv_weight,
        normalisation=KERAS_EXAMPLE, graph=network.graph, tile=layout.tile,
        forward_tile=layout.forward_tile, split=_split(layout), **_temporal(content, temporal_weight))
    start = content if start_rgb is None else spec.preprocess(start_rgb)
    return Problem(objective, start, network, size, content_rgb, [size], layout)


def stylize_problem(networks: Networks, content, styles: Sequence, *, width: int | None = None,
                    style_scales: Sequence[float] | None = None,
                    style_blend_weights: Sequence[float] | None = None,
                    content_weight: float = 5.0, content_weight_blend: float = 1.0,
                    style_weight: float = 100.0, style_layer_weight_exp: float = 1.0,
                    tv_weight: float = 100.0, content_layers: Sequence[str] | None = None,
                    style_layers: Sequence[str] | None = None, initial=None,
                    initial_noiseblend: float | None = None, seed: int = 0,
                    max_memory: float | None = None, tile: int | None = None,
                    style_masks: Sequence | None = None,
                    temporal_weight: float | None = None) -> Problem:
    """neural_style.py's problem (anishathalye/neural-style): several styles, each scaled to
    `scale` x the content width and blended, and that project's loss normalisation.
    `style_masks`, one grey image per style, say where on the output each style paints
    (guided Gram matrices, Gatys et al. 2017; soft values blend). `temporal_weight` as in
    transfer_problem.

    Images are paths, PIL images or NumPy arrays (see io.images.as_rgb). `max_memory` (GB)
    and `tile` (px) lay the run out in memory (see plan.budget.choose)."""
    content_rgb = images.as_rgb(content, "content image")
    style_rgbs = [images.as_rgb(style, f"style image {i + 1}") for i, style in enumerate(styles)]
    if not style_rgbs:
        raise StyleflowError("styles: give at least one style image", params=("styles",))
    scales = list(style_scales) if style_scales else [1.0] * len(styles)
    blends = list(style_blend_weights) if style_blend_weights else [1.0] * len(styles)
    for option, values in (("style_scales", scales), ("style_blend_weights", blends)):
        if len(values) != len(styles):
            raise StyleflowError(f"{option}: {len(values)} values given for {len(styles)} styles",
                                 params=(option,))
    if sum(blends) <= 0:
        raise StyleflowError("style_blend_weights: at least one weight must be above zero",
                             params=("style_blend_weights",))
    mask_rgbs = None
    if style_masks is not None:
        if len(style_masks) != len(style_rgbs):
            raise StyleflowError(f"style_masks: {len(style_masks)} masks given for "
                                 f"{len(style_rgbs)} styles; give one per style",
                                 params=("style_masks",))
        mask_rgbs = [images.as_rgb(m, f"style mask {i + 1}") for i, m in enumerate(style_masks)]
        for i, m in enumerate(mask_rgbs):
            masks.check_aspect(m.shape[:2], content_rgb.shape[:2], f"style mask {i + 1}",
                               "the content image")
    size = images.fit_size(content_rgb.shape[:2], None, width)
    style_sizes = [images.fit_size(rgb.shape[:2], None, max(1, int(round(scale * size[1]))))
                   for rgb, scale in zip(style_rgbs, scales)]
    initial_rgb = None if initial is None else images.as_rgb(initial, "initial image")

    network = networks.get(content_layers, style_layers, NS_CONTENT_LAYERS, NEURAL_STYLE,
                           guided=mask_rgbs is not None, temporal=temporal_weight is not None)
    # Sizes are checked before any large allocation.
    layout = check_size(size, network, "content image", "adam", max_memory, tile)
    for i, style_size in enumerate(style_sizes):
        check_size(style_size, network, f"style image {i + 1} after style_scales",
                   params=("style_scales",))
    content_rgb = images.resize(content_rgb, size)
    style_rgbs = [images.resize(rgb, s) for rgb, s in zip(style_rgbs, style_sizes)]
    start_rgb = None if initial_rgb is None else images.resize(initial_rgb, size)
    if content_layers is None and tuple(network.content_layers) == NS_CONTENT_LAYERS:
        # neural-style's --content-weight-blend: relu4_2 vs relu5_2.
        content_weights = {NS_CONTENT_LAYERS[0]: content_weight_blend,
                           NS_CONTENT_LAYERS[1]: 1.0 - content_weight_blend}
    else:
        content_weights = {name: 1.0 / len(network.content_layers)
                           for name in network.content_layers}
    # Layer l weighs exp^l, scaled to sum to the number of layers: exp 1 is the original's sum.
    # In log space, relative to the heaviest layer, so no exponent can overflow.
    count = len(network.style_layers)
    logs = np.arange(count) * math.log(style_layer_weight_exp)
    raw = np.exp(logs - logs.max())
    style_weights = {name: float(w * count / raw.sum())
                     for name, w in zip(network.style_layers, raw)}

    spec = network.input_spec
    content_x = spec.preprocess(content_rgb)
    guided = {}
    if mask_rgbs is not None:
        # Each style is one region of the output, where its mask says; a region weighs its
        # blend weight times its share of the output.
        guides = masks.style_guides(
            [images.resize_mask(m, size, nearest=False).mean(axis=-1) / 255.0
             for m in mask_rgbs], what="style_masks")
        weights = np.asarray(blends, np.float64) * masks.shares(guides)
        if not weights.sum() > 0:
            raise StyleflowError("style_masks: the masks of the styles with a blend weight "
                                 "above zero are empty", params=("style_masks",))
        guided = dict(guides=guides, region_styles=[(i, None) for i in range(len(style_rgbs))],
                      region_weights=weights / weights.sum())
    objective = Objective(
        network.extractor, content_x, [spec.preprocess(rgb) for rgb in style_rgbs],
        content_layers=content_weights, style_layers=style_weights,
        content_weight=content_weight, style_weight=style_weight, tv_weight=tv_weight,
        normalisation=NEURAL_STYLE, style_blends=blends, graph=network.graph,
        tile=layout.tile,
        forward_tile=layout.forward_tile, split=_split(layout), **guided, **_temporal(content_x, temporal_weight))
    if initial_noiseblend is None:
        initial_noiseblend = 1.0 if start_rgb is None else 0.0
    base = content_x if start_rgb is None else spec.preprocess(start_rgb)
    # neural-style's noise: N(0, 0.256) in network space, i.e. close to the mean colour.
    noise = np.random.default_rng(seed).normal(0.0, 0.256, base.shape).astype(np.float32)
    start = (1.0 - initial_noiseblend) * base + initial_noiseblend * noise
    return Problem(objective, start.astype(np.float32), network, size, content_rgb,
                   [rgb.shape[:2] for rgb in style_rgbs], layout)


def _temporal(content: np.ndarray, weight: float | None) -> dict:
    """The Objective's temporal options for a first frame: the term present, nothing to
    follow yet (all weights 0)."""
    if weight is None:
        return {}
    return dict(temporal=(np.zeros_like(content), np.zeros(content.shape[1:3], np.float32)),
                temporal_weight=weight)


P = PHOTO_DEFAULTS


def photo_problem(networks: Networks, content, style, *, content_mask=None, style_mask=None,
                  photorealism: float = P["photorealism"],
                  content_weight: float = P["content_weight"],
                  style_weight: float = P["style_weight"], tv_weight: float = P["tv_weight"],
                  height: int | None = None, width: int | None = None,
                  content_layers: Sequence[str] | None = None,
                  style_layers: Sequence[str] | None = None, init=None,
                  max_memory: float | None = None, tile: int | None = None,
                  notes: Callable[[str], None] | None = None, coarse: bool = False) -> Problem:
    """Deep Photo Style Transfer's problem (Luan et al. 2017): neural-style's content and
    style terms, the style compared region by region when colour-coded `content_mask` and
    `style_mask` are given, and the photorealism term `photorealism`·Σ_c V_cᵀ M V_c (M the
    content's matting Laplacian, V the output on the 0..1 scale; 0 leaves it out). The
    output starts from the content (or `init`); the style image is resized to the output's
    pixel count. Without height and width the output is PHOTO_DEFAULTS["width"] px wide.
    `notes` is told of masks that change nothing (one region); `coarse`: the problem is a
    coarse size of `scales` (said where a mask's region has no pixel there)."""
    content_rgb = images.as_rgb(content, "content image")
    style_rgb = images.as_rgb(style, "style image")
    if (content_mask is None) != (style_mask is None):
        given, missing = (("content_mask", "style_mask") if style_mask is None
                          else ("style_mask", "content_mask"))
        raise StyleflowError(f"{missing}: {given} is given without it; give both masks or "
                             "neither", params=(given, missing))
    if not (math.isfinite(photorealism) and photorealism >= 0):
        raise StyleflowError(f"photorealism: must be a finite number, zero or more, not "
                             f"{photorealism!r}", params=("photorealism",))
    if height is None and width is None:
        width = P["width"]
    size = images.fit_size(content_rgb.shape[:2], height, width)
    scale = math.sqrt(size[0] * size[1] / (style_rgb.shape[0] * style_rgb.shape[1]))
    style_size = (max(1, round(style_rgb.shape[0] * scale)),
                  max(1, round(style_rgb.shape[1] * scale)))
    masked = content_mask is not None
    if masked:
        content_mask = images.as_rgb(content_mask, "content mask")
        style_mask = images.as_rgb(style_mask, "style mask")
        masks.check_aspect(content_mask.shape[:2], content_rgb.shape[:2], "content_mask",
                           "the content image")
        masks.check_aspect(style_mask.shape[:2], style_rgb.shape[:2], "style_mask",
                           "the style image")
    init_rgb = None if init is None else images.as_rgb(init, "initial image")
    if init_rgb is not None:  # stretched, it would start from a distorted picture
        masks.check_aspect(init_rgb.shape, content_rgb.shape, "init", "the content image")
    network = networks.get(content_layers, style_layers, PHOTO_CONTENT_LAYERS, NEURAL_STYLE,
                           guided=masked, photo=photorealism > 0)
    layout = check_size(size, network, "output size", "lbfgs", max_memory, tile,
                        photo=photorealism > 0)
    check_size(style_size, network, "style image at the output's size", params=("width",))
    content_rgb = images.resize(content_rgb, size)
    style_rgb = images.resize(style_rgb, style_size)
    guided = {}
    if masked:
        content_regions, style_regions, colours = masks.colour_regions(
            content_mask, style_mask, content_what="content_mask", style_what="style_mask",
            content_size=size, style_size=style_size,
            **({"size_what": "a coarse size of scales; use fewer scales"} if coarse else {}))
        if len(colours) == 1 and notes is not None:
            notes(Note(f"note: content_mask and style_mask share one region "
                       f"({masks.hex_colour(colours[0])}), so they change nothing: colours "
                       f"closer than {masks.SAME_COLOUR_DISTANCE:g} (RGB distance) are one "
                       "region, grey labels 0, 1, 2, ... too", params=("content_mask",
                                                                       "style_mask")))
        guided = dict(guides=content_regions,
                      region_styles=[(0, style_regions[..., r])
                                     for r in range(style_regions.shape[-1])],
                      region_weights=masks.shares(content_regions))
    photo = {}
    if photorealism > 0:
        photo = dict(laplacian=MattingLaplacian(content_rgb), photo_weight=photorealism)
    spec = network.input_spec
    content_x = spec.preprocess(content_rgb)
    objective = Objective(
        network.extractor, content_x, [spec.preprocess(style_rgb)],
        content_layers={name: 1.0 / len(network.content_layers)
                        for name in network.content_layers},
        style_layers={name: 1.0 for name in network.style_layers},
        content_weight=content_weight, style_weight=style_weight, tv_weight=tv_weight,
        normalisation=NEURAL_STYLE, graph=network.graph, tile=layout.tile,
        forward_tile=layout.forward_tile, split=_split(layout), **guided, **photo)
    start = content_x if init_rgb is None else spec.preprocess(images.resize(init_rgb, size))
    return Problem(objective, start, network, size, content_rgb, [style_size], layout)


def _split(layout: Layout) -> tuple | None:
    """The Objective's `split` for a layout whose loss is split (plan.budget), else None."""
    return None if layout.split is None else (layout.split, layout.split_tile)
