"""The Stylizer's cache: weights loaded once, and for them a feature extractor per set of
layers and a compiled loss per problem kind, each built once and reused."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..defaults import FULL_STYLE_LAYERS, LITE_CONTENT_LAYER, LITE_STYLE_LAYERS
from ..errors import StyleflowError
from ..model.network import InputSpec, build_extractor, check_layers
from ..model.weights import Weights
from ..objective.graph import LossGraph


@dataclass
class Network:
    """A feature extractor, the pixel convention of its weights and the layers it serves."""

    extractor: object
    input_spec: InputSpec
    weights: Weights
    content_layers: list[str]
    style_layers: list[str]
    precision: str = "float32"
    graph: LossGraph | None = None


class Networks:
    """Weights loaded once, and for them a feature extractor per set of layers and a compiled
    loss per problem kind, each built once and reused (a Stylizer's cache).

    `builds` counts extractors built; each LossGraph counts its own traces.
    """

    def __init__(self, weights: Weights, pooling: str = "max", precision: str = "float32"):
        """`pooling` and `precision` as build_extractor takes them (checked there)."""
        self.weights = weights
        self.pooling = pooling
        self.precision = precision
        self.builds = 0
        self._extractors: dict[tuple, object] = {}
        self._graphs: dict[tuple, LossGraph] = {}

    def get(self, content: Sequence[str] | None, style: Sequence[str] | None,
            full_content: Sequence[str], normalisation: str, *, guided: bool = False,
            photo: bool = False, temporal: bool = False) -> Network:
        """Choose the layers (the caller's, else the defaults for these weights), check the
        weights cover them, and return the network and compiled loss for them (`guided`,
        `photo`, `temporal` as LossGraph takes them)."""
        weights = self.weights
        # One name is one layer (a string is a sequence too: of one-letter "layers").
        content = [content] if isinstance(content, str) else content
        style = [style] if isinstance(style, str) else style
        if content is None:
            content = [LITE_CONTENT_LAYER] if weights.lite else list(full_content)
        if style is None:
            style = list(LITE_STYLE_LAYERS if weights.lite else FULL_STYLE_LAYERS)
        for names, what in ((content, "content layer"), (style, "style layer")):
            if not names:
                raise StyleflowError(f"{what}s: the list is empty; name at least one layer")
            check_layers(names, what)
        weights.require(list(content) + list(style))
        outputs = tuple(dict.fromkeys([*content, *style]))
        if outputs not in self._extractors:
            self._extractors[outputs] = build_extractor(weights.layers, list(outputs),
                                                        pooling=self.pooling,
                                                        dtype=self.precision)
            self.builds += 1
        extractor = self._extractors[outputs]
        key = (outputs, normalisation, tuple(content), tuple(style), guided, photo, temporal)
        if key not in self._graphs:
            self._graphs[key] = LossGraph(extractor, normalisation, content, style,
                                          guided=guided, photo=photo, temporal=temporal)
        return Network(extractor, weights.input_spec, weights, list(content), list(style),
                       self.precision, self._graphs[key])

    @property
    def traces(self) -> int:
        """Loss traces so far over all compiled losses (one per image size and problem kind)."""
        return sum(graph.traces for graph in self._graphs.values())
