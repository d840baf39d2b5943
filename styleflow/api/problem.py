"""From images and options to a ready optimisation problem: images loaded and sized, layers
chosen and checked, the run laid out in memory, targets computed. The Stylizer builds its
problems here."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..defaults import DEFAULT_HEIGHT, FULL_CONTENT_LAYER, NS_CONTENT_LAYERS
from ..errors import StyleflowError
from ..io import images
from ..model import machine
from ..model.layout import min_image_side
from ..objective import tiling
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
               tile: int | None = None, params: Sequence[str] = ()) -> Layout | None:
    """Raise if an image of `shape` (h, w) is too small for the deepest layer's poolings or too
    large for the memory available: optimised (by `optimiser`: lbfgs or adam; the Layout that
    fits `max_memory` GB, tiled if need be, is returned) or, without one, run forward once for
    its style targets. `params` names the parameters `what` mentions."""
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
                             available=available, resident=resident)
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
                     tile: int | None = None) -> Problem:
    """neural_style_transfer.py's problem (the Keras example): content and style resized to one
    size, content and style layers weighted equally, the example's loss normalisation.

    Images are paths, PIL images or NumPy arrays (see io.images.as_rgb). `max_memory` (GB)
    and `tile` (px) lay the run out in memory (see plan.budget.choose)."""
    base_rgb = images.as_rgb(base, "base image")
    ref_rgb = images.as_rgb(ref, "style image")
    if height is None and width is None:
        height = DEFAULT_HEIGHT
    size = images.fit_size(base_rgb.shape[:2], height, width)
    init_rgb = None if init is None else images.as_rgb(init, "initial image")
    network = networks.get([content_layer] if content_layer is not None else None, style_layers,
                           [FULL_CONTENT_LAYER], KERAS_EXAMPLE)
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
        forward_tile=layout.forward_tile)
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
                    max_memory: float | None = None, tile: int | None = None) -> Problem:
    """neural_style.py's problem (anishathalye/neural-style): several styles, each scaled to
    `scale` x the content width and blended, and that project's loss normalisation.

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
    size = images.fit_size(content_rgb.shape[:2], None, width)
    style_sizes = [images.fit_size(rgb.shape[:2], None, max(1, int(round(scale * size[1]))))
                   for rgb, scale in zip(style_rgbs, scales)]
    initial_rgb = None if initial is None else images.as_rgb(initial, "initial image")

    network = networks.get(content_layers, style_layers, NS_CONTENT_LAYERS, NEURAL_STYLE)
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
    objective = Objective(
        network.extractor, content_x, [spec.preprocess(rgb) for rgb in style_rgbs],
        content_layers=content_weights, style_layers=style_weights,
        content_weight=content_weight, style_weight=style_weight, tv_weight=tv_weight,
        normalisation=NEURAL_STYLE, style_blends=blends, graph=network.graph,
        tile=layout.tile,
        forward_tile=layout.forward_tile)
    if initial_noiseblend is None:
        initial_noiseblend = 1.0 if start_rgb is None else 0.0
    base = content_x if start_rgb is None else spec.preprocess(start_rgb)
    # neural-style's noise: N(0, 0.256) in network space, i.e. close to the mean colour.
    noise = np.random.default_rng(seed).normal(0.0, 0.256, base.shape).astype(np.float32)
    start = (1.0 - initial_noiseblend) * base + initial_noiseblend * noise
    return Problem(objective, start.astype(np.float32), network, size, content_rgb,
                   [rgb.shape[:2] for rgb in style_rgbs], layout)
