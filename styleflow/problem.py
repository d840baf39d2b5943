"""From files and options to a ready optimisation problem: images loaded and sized, weights
resolved, layers chosen and checked, targets computed. Shared by both CLIs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from . import images
from .defaults import (DEFAULT_HEIGHT, FULL_CONTENT_LAYER, FULL_STYLE_LAYERS, LITE_CONTENT_LAYER,
                       LITE_STYLE_LAYERS)
from .errors import StyleflowError
from .network import InputSpec, build_extractor, check_layers, min_image_side
from .objective import KERAS_EXAMPLE, NEURAL_STYLE, Objective
from .weights import Weights, resolve_weights

@dataclass
class Network:
    """A feature extractor and the pixel convention of its weights."""

    extractor: object
    input_spec: InputSpec
    weights: Weights


def load_network(weights_spec: str, layers: Sequence[str], seed: int = 0, pooling: str = "max",
                 dtype: str = "float32", log: Callable[[str], None] = print,
                 weights: Weights | None = None) -> Network:
    """Resolve weights, check they cover `layers`, and build the extractor up to the deepest."""
    weights = weights or resolve_weights(weights_spec, seed=seed, log=log)
    weights.require(layers)
    extractor = build_extractor(weights.layers, list(dict.fromkeys(layers)), pooling=pooling,
                                dtype=dtype)
    return Network(extractor, weights.input_spec, weights)


def check_size(shape: tuple[int, int], layers: Sequence[str], what: str) -> None:
    """Raise if an image of `shape` (h, w) is too small for the deepest layer's poolings."""
    need = min_image_side(layers)
    if min(shape) < need:
        raise StyleflowError(
            f"{what}: {shape[1]}x{shape[0]} pixels is too small for the chosen layers; each "
            f"side must be at least {need} px")


def choose_layers(weights: Weights, content: Sequence[str] | None, style: Sequence[str] | None,
                  full_content: Sequence[str]) -> tuple[list[str], list[str]]:
    """User-chosen layers, else the defaults for these weights (blocks 1-3 for 'lite')."""
    if content is None:
        content = [LITE_CONTENT_LAYER] if weights.lite else list(full_content)
    if style is None:
        style = list(LITE_STYLE_LAYERS if weights.lite else FULL_STYLE_LAYERS)
    check_layers(content, "content layer")
    check_layers(style, "style layer")
    return list(content), list(style)


@dataclass
class TransferProblem:
    """Everything neural_style_transfer.py optimises: the objective and the start image."""

    objective: Objective
    start: np.ndarray
    network: Network
    size: tuple[int, int]
    content_layers: list[str]
    style_layers: list[str]


def transfer_problem(base: str, ref: str, *, content_weight: float = 0.025,
                     style_weight: float = 1.0, tv_weight: float = 1.0,
                     height: int | None = None, width: int | None = None, weights: str = "auto",
                     content_layer: str | None = None, style_layers: Sequence[str] | None = None,
                     init: str | None = None, seed: int = 0, pooling: str = "max",
                     dtype: str = "float32", log: Callable[[str], None] = print
                     ) -> TransferProblem:
    """The Keras example's problem: content and style at one size, its loss normalisation."""
    base_rgb = images.load_image(base, "base image")
    ref_rgb = images.load_image(ref, "style image")
    if height is None and width is None:
        height = DEFAULT_HEIGHT
    size = images.fit_size(base_rgb.shape[:2], height, width)
    start_rgb = None
    if init is not None:
        start_rgb = images.resize(images.load_image(init, "initial image"), size)
    loaded = resolve_weights(weights, seed=seed, log=log)
    content_layers, style = choose_layers(
        loaded, [content_layer] if content_layer else None, style_layers, [FULL_CONTENT_LAYER])
    check_size(size, content_layers + style, "output size")
    network = load_network(weights, content_layers + style, pooling=pooling, dtype=dtype,
                           weights=loaded)
    spec = network.input_spec
    content = spec.preprocess(images.resize(base_rgb, size))
    style_image = spec.preprocess(images.resize(ref_rgb, size))
    objective = Objective(
        network.extractor, content, [style_image],
        content_layers={name: 1.0 for name in content_layers},
        style_layers={name: 1.0 / len(style) for name in style},
        content_weight=content_weight, style_weight=style_weight, tv_weight=tv_weight,
        normalisation=KERAS_EXAMPLE)
    start = content if start_rgb is None else spec.preprocess(start_rgb)
    return TransferProblem(objective, start, network, size, content_layers, style)

