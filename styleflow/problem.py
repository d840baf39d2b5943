"""From files and options to a ready optimisation problem: images loaded and sized, weights
resolved, layers chosen and checked, targets computed. Shared by both CLIs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from . import images
from .defaults import (DEFAULT_HEIGHT, FULL_CONTENT_LAYER, FULL_STYLE_LAYERS, LITE_CONTENT_LAYER,
                       LITE_STYLE_LAYERS, NS_CONTENT_LAYERS)
from .errors import StyleflowError
from .memory import check_fits
from .network import InputSpec, build_extractor, check_layers, min_image_side
from .objective import KERAS_EXAMPLE, NEURAL_STYLE, Objective
from .weights import Weights, resolve_weights

@dataclass
class Network:
    """A feature extractor, the pixel convention of its weights and the layers it serves."""

    extractor: object
    input_spec: InputSpec
    weights: Weights
    content_layers: list[str]
    style_layers: list[str]
    precision: str = "float32"


def load_network(weights_spec: str, content: Sequence[str] | None,
                 style: Sequence[str] | None, full_content: Sequence[str], *, seed: int = 0,
                 pooling: str = "max", dtype: str = "float32",
                 log: Callable[[str], None] = print) -> Network:
    """Resolve weights, choose the layers (user's, else the defaults for these weights), check
    the weights cover them, and build the extractor up to the deepest one."""
    weights = resolve_weights(weights_spec, seed=seed, log=log)
    if content is None:
        content = [LITE_CONTENT_LAYER] if weights.lite else list(full_content)
    if style is None:
        style = list(LITE_STYLE_LAYERS if weights.lite else FULL_STYLE_LAYERS)
    check_layers(content, "content layer")
    check_layers(style, "style layer")
    weights.require(list(content) + list(style))
    extractor = build_extractor(weights.layers, list(dict.fromkeys([*content, *style])),
                                pooling=pooling, dtype=dtype)
    return Network(extractor, weights.input_spec, weights, list(content), list(style), dtype)


def check_size(shape: tuple[int, int], network: Network, what: str,
               optimiser: str | None = None) -> None:
    """Raise if an image of `shape` (h, w) is too small for the deepest layer's poolings or,
    for the image being optimised (by `optimiser`: lbfgs or adam), too large for the memory
    available."""
    layers = network.content_layers + network.style_layers
    need = min_image_side(layers)
    if min(shape) < need:
        raise StyleflowError(
            f"{what}: {shape[1]}x{shape[0]} pixels is too small for the chosen layers; each "
            f"side must be at least {need} px")
    if optimiser and not _on_gpu():
        # On a GPU TensorFlow's own out-of-memory error is reported instead (run_cli).
        check_fits(shape, layers, network.precision, optimiser)


def _on_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


@dataclass
class Problem:
    """Everything a CLI optimises: the objective, the start image, the network it runs."""

    objective: Objective
    start: np.ndarray
    network: Network
    size: tuple[int, int]
    content_rgb: np.ndarray
    style_sizes: list[tuple[int, int]]


def transfer_problem(base: str, ref: str, *, content_weight: float = 0.025,
                     style_weight: float = 1.0, tv_weight: float = 1.0,
                     height: int | None = None, width: int | None = None, weights: str = "auto",
                     content_layer: str | None = None, style_layers: Sequence[str] | None = None,
                     init: str | None = None, seed: int = 0, pooling: str = "max",
                     dtype: str = "float32", log: Callable[[str], None] = print) -> Problem:
    """neural_style_transfer.py's problem (the Keras example): content and style resized to one
    size, content and style layers weighted equally, the example's loss normalisation."""
    base_rgb = images.load_image(base, "base image")
    ref_rgb = images.load_image(ref, "style image")
    if height is None and width is None:
        height = DEFAULT_HEIGHT
    size = images.fit_size(base_rgb.shape[:2], height, width)
    init_rgb = None if init is None else images.load_image(init, "initial image")
    network = load_network(weights, [content_layer] if content_layer else None, style_layers,
                           [FULL_CONTENT_LAYER], seed=seed, pooling=pooling, dtype=dtype, log=log)
    check_size(size, network, "output size", optimiser="lbfgs")  # before any large allocation
    start_rgb = None if init_rgb is None else images.resize(init_rgb, size)
    spec = network.input_spec
    content_rgb = images.resize(base_rgb, size)
    content = spec.preprocess(content_rgb)
    objective = Objective(
        network.extractor, content, [spec.preprocess(images.resize(ref_rgb, size))],
        content_layers={name: 1.0 for name in network.content_layers},
        style_layers={name: 1.0 / len(network.style_layers) for name in network.style_layers},
        content_weight=content_weight, style_weight=style_weight, tv_weight=tv_weight,
        normalisation=KERAS_EXAMPLE)
    start = content if start_rgb is None else spec.preprocess(start_rgb)
    return Problem(objective, start, network, size, content_rgb, [size])


def stylize_problem(content: str, styles: Sequence[str], *, width: int | None = None,
                    style_scales: Sequence[float] | None = None,
                    style_blend_weights: Sequence[float] | None = None,
                    content_weight: float = 5.0, content_weight_blend: float = 1.0,
                    style_weight: float = 100.0, style_layer_weight_exp: float = 1.0,
                    tv_weight: float = 100.0, weights: str = "auto",
                    content_layers: Sequence[str] | None = None,
                    style_layers: Sequence[str] | None = None, initial: str | None = None,
                    initial_noiseblend: float | None = None, seed: int = 0,
                    pooling: str = "max", dtype: str = "float32",
                    log: Callable[[str], None] = print) -> Problem:
    """neural_style.py's problem (anishathalye/neural-style): several styles, each scaled to
    `scale` x the content width and blended, and that project's loss normalisation."""
    content_rgb = images.load_image(content, "content image")
    style_rgbs = [images.load_image(path, f"style image {i + 1}") for i, path in enumerate(styles)]
    scales = list(style_scales) if style_scales else [1.0] * len(styles)
    blends = list(style_blend_weights) if style_blend_weights else [1.0] * len(styles)
    for option, values in (("--style-scales", scales), ("--style-blend-weights", blends)):
        if len(values) != len(styles):
            raise StyleflowError(f"{option}: {len(values)} values given for {len(styles)} styles")
    if sum(blends) <= 0:
        raise StyleflowError("--style-blend-weights: at least one weight must be above zero")
    size = images.fit_size(content_rgb.shape[:2], None, width)
    style_sizes = [images.fit_size(rgb.shape[:2], None, max(1, int(round(scale * size[1]))))
                   for rgb, scale in zip(style_rgbs, scales)]
    initial_rgb = None if initial is None else images.load_image(initial, "initial image")

    network = load_network(weights, content_layers, style_layers, NS_CONTENT_LAYERS, seed=seed,
                           pooling=pooling, dtype=dtype, log=log)
    # Sizes are checked before any large allocation.
    check_size(size, network, "content image", optimiser="adam")
    for i, style_size in enumerate(style_sizes):
        check_size(style_size, network, f"style image {i + 1} after --style-scales")
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
    content_weights = {name: w for name, w in content_weights.items() if w > 0} or \
        {network.content_layers[0]: 0.0}
    # Layer l weighs exp^l, scaled to sum to the number of layers: exp 1 is the original's sum.
    raw = [style_layer_weight_exp ** i for i in range(len(network.style_layers))]
    style_weights = {name: w * len(raw) / sum(raw) for name, w in zip(network.style_layers, raw)}

    spec = network.input_spec
    content_x = spec.preprocess(content_rgb)
    objective = Objective(
        network.extractor, content_x, [spec.preprocess(rgb) for rgb in style_rgbs],
        content_layers=content_weights, style_layers=style_weights,
        content_weight=content_weight, style_weight=style_weight, tv_weight=tv_weight,
        normalisation=NEURAL_STYLE, style_blends=blends)
    if initial_noiseblend is None:
        initial_noiseblend = 1.0 if start_rgb is None else 0.0
    base = content_x if start_rgb is None else spec.preprocess(start_rgb)
    # neural-style's noise: N(0, 0.256) in network space, i.e. close to the mean colour.
    noise = np.random.default_rng(seed).normal(0.0, 0.256, base.shape).astype(np.float32)
    start = (1.0 - initial_noiseblend) * base + initial_noiseblend * noise
    return Problem(objective, start.astype(np.float32), network, size, content_rgb,
                   [rgb.shape[:2] for rgb in style_rgbs])
