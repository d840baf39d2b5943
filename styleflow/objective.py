"""The style-transfer objective: targets computed once, then one compiled function giving the
loss, its parts and the gradient for a candidate image.

The compiled function (`LossGraph`) takes the targets and weights as arguments rather than
capturing them, so one trace serves every content/style pair of the same size: a `Stylizer`
working through many pairs traces it once per size, not once per pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import tensorflow as tf

from . import losses

# The two normalisations, named for the projects they come from.
KERAS_EXAMPLE = "keras-example"
NEURAL_STYLE = "neural-style"


@dataclass
class Parts:
    """One evaluation's loss and its weighted parts, as Python floats."""

    total: float
    content: float
    style: float
    tv: float

    def as_dict(self) -> dict[str, float]:
        return {"total": self.total, "content": self.content, "style": self.style, "tv": self.tv}


@dataclass(frozen=True)
class Targets:
    """What one problem compares a candidate with, as tensors (arguments of a LossGraph)."""

    content: tuple  # content features, one per content layer
    content_weights: tf.Tensor  # (n_content,)
    grams: tuple  # blended Gram targets, one per style layer
    style_weights: tf.Tensor  # (n_style,)
    gram_offsets: tf.Tensor  # (n_style,): the blend's constant (see Objective)
    term_weights: tf.Tensor  # (3,): content, style, tv

    def as_args(self) -> tuple:
        return (self.content, self.content_weights, self.grams, self.style_weights,
                self.gram_offsets, self.term_weights)


class LossGraph:
    """The loss of one network with one normalisation and layer split, compiled once.

    `traces` counts how often TensorFlow traced the loss (once per image size); `cache` holds
    other compiled functions built on it (e.g. the Adam step) so they are traced once too.
    """

    def __init__(self, extractor, normalisation: str, content_layers: Sequence[str],
                 style_layers: Sequence[str], jit_compile: bool = False):
        if normalisation not in (KERAS_EXAMPLE, NEURAL_STYLE):
            raise ValueError(f"unknown normalisation {normalisation!r}")
        self.extractor = extractor
        self.normalisation = normalisation
        self.content_layers = tuple(content_layers)
        self.style_layers = tuple(style_layers)
        self.traces = 0
        self.cache: dict[str, object] = {}
        # Whether XLA compiles the functions: a default, and per image shape once measured.
        self.jit_compile = bool(jit_compile)
        self.jit_by_shape: dict[tuple, bool] = {}
        self._compiled = {xla: tf.function(self._loss_and_grads, jit_compile=xla)
                          for xla in (False, True)}

    def gram(self, features: tf.Tensor) -> tf.Tensor:
        """The Gram matrix in this graph's normalisation."""
        if self.normalisation == KERAS_EXAMPLE:
            return losses.gram_matrix(features)
        return losses.gram_matrix_mean(features)

    def loss_parts(self, image: tf.Tensor, targets: tuple) -> tf.Tensor:
        """[total, content, style, tv] for `image` against `targets` (Targets.as_args());
        usable inside tf.function and GradientTape."""
        self.traces += 1  # Python runs this body only while tracing
        content_t, content_w, grams, style_w, offsets, terms = targets
        feats = self.extractor(image, training=False)
        keras = self.normalisation == KERAS_EXAMPLE
        content = tf.constant(0.0)
        for i, name in enumerate(self.content_layers):
            current = tf.cast(feats[name], tf.float32)
            term = (losses.content_loss_sum if keras else losses.content_loss_mean)(
                current, content_t[i])
            content += content_w[i] * term
        style = tf.constant(0.0)
        pixels = tf.shape(image)[1] * tf.shape(image)[2]
        for i, name in enumerate(self.style_layers):
            gram = self.gram(tf.cast(feats[name], tf.float32))
            if keras:
                term = losses.style_loss_keras(gram, grams[i], pixels)
            else:
                term = losses.style_loss_mean(gram, grams[i])
            style += style_w[i] * (term + offsets[i])
        tv = (losses.total_variation_keras if keras else losses.total_variation_mean)(image)
        content *= terms[0]
        style *= terms[1]
        tv *= terms[2]
        return tf.stack([content + style + tv, content, style, tv])

    def _loss_and_grads(self, image: tf.Tensor, targets: tuple):
        with tf.GradientTape() as tape:
            tape.watch(image)
            values = self.loss_parts(image, targets)
            total = values[0]  # inside the tape, so the slice is recorded too
        return values, tape.gradient(total, image)

    def uses_xla(self, shape) -> bool:
        """Whether images of `shape` run through XLA."""
        return self.jit_by_shape.get(tuple(shape), self.jit_compile)

    def loss_and_grads(self, image: tf.Tensor, targets: tuple, xla: bool | None = None):
        """Compiled: ([total, content, style, tv], gradient) as tensors; `xla` forces the
        plain (False) or XLA (True) compilation, else the graph's choice for this shape."""
        xla = self.uses_xla(image.shape) if xla is None else xla
        return self._compiled[xla](image, targets)


class Objective:
    """Loss of a network-space image (1, h, w, 3) against fixed content and style targets.

    content_layers / style_layers map a layer name to its weight within the term; the term
    weights multiply the sums. Several styles are blended by `style_blends` (normalised to sum
    to 1). Because Σᵢ bᵢ‖G − Aᵢ‖² = ‖G − Σᵢ bᵢAᵢ‖² + const, each layer compares with one blended
    Gram target plus a precomputed constant: the loss equals the per-style sum exactly, at the
    cost of a single style.

    `graph` is a LossGraph to reuse (its layers must match); without one, a new one is built.
    `tile` (a core side, or (rows, columns)) evaluates loss and gradient exactly over tiles of
    that size (`tiled_loss`), and computes the content features and large style Grams likewise;
    `forward_tile`, larger, serves the forward-only passes (Gram sums, content features).
    """

    def __init__(self, extractor, content: np.ndarray, styles: Sequence[np.ndarray],
                 content_layers: Mapping[str, float], style_layers: Mapping[str, float],
                 content_weight: float, style_weight: float, tv_weight: float,
                 normalisation: str = KERAS_EXAMPLE, style_blends: Sequence[float] | None = None,
                 graph: LossGraph | None = None, jit_compile: bool = False,
                 tile: int | tuple[int, int] | None = None,
                 forward_tile: int | tuple[int, int] | None = None):
        if graph is None:
            graph = LossGraph(extractor, normalisation, list(content_layers), list(style_layers),
                              jit_compile=jit_compile)
        if (graph.normalisation, graph.content_layers, graph.style_layers) != (
                normalisation, tuple(content_layers), tuple(style_layers)):
            raise ValueError("the LossGraph was built for other layers or normalisation")
        self.graph = graph
        self.extractor = extractor
        self.normalisation = normalisation
        self.shape = tuple(content.shape)
        self.content_layers = dict(content_layers)
        self.style_layers = dict(style_layers)
        self.content_weight = float(content_weight)
        self.style_weight = float(style_weight)
        self.tv_weight = float(tv_weight)
        blends = np.ones(len(styles)) if style_blends is None else np.asarray(style_blends, float)
        blends = blends / blends.sum()
        self.tile = tile
        self.forward_tile = forward_tile

        if tile is None:
            content_features = self._features(content)
        else:
            from . import tiling

            content_features = tiling.tiled_features(extractor, content,
                                                     list(self.content_layers),
                                                     forward_tile or tile)
        self.content_targets = {name: tf.constant(content_features[name])
                                for name in self.content_layers}
        grams = [self._style_grams(style) for style in styles]
        self.gram_targets = {}
        self.gram_offsets = {}
        for name in self.style_layers:
            blended = sum(b * g[name] for b, g in zip(blends, grams))
            self.gram_targets[name] = tf.constant(blended.astype(np.float32))
            offset = sum(b * self._style_raw(g[name], 0.0) for b, g in zip(blends, grams))
            self.gram_offsets[name] = float(offset - self._style_raw(blended, 0.0))
        self.targets = Targets(
            content=tuple(self.content_targets[n] for n in self.content_layers),
            content_weights=tf.constant(list(self.content_layers.values()), tf.float32),
            grams=tuple(self.gram_targets[n] for n in self.style_layers),
            style_weights=tf.constant(list(self.style_layers.values()), tf.float32),
            gram_offsets=tf.constant([self.gram_offsets[n] for n in self.style_layers],
                                     tf.float32),
            term_weights=tf.constant([self.content_weight, self.style_weight, self.tv_weight],
                                     tf.float32))
        self._tiled = None
        if tile is not None:
            from .tiled_loss import TiledLoss

            key = ("tiled", self.shape, tile, forward_tile)
            if key not in graph.cache:
                graph.cache[key] = TiledLoss(graph, self.shape, tile, forward_tile)
            self._tiled = graph.cache[key]
            self._tiled_targets = self._tiled.prepare(self.targets)

    @property
    def tiled(self) -> bool:
        """Whether loss and gradient are evaluated over tiles."""
        return self._tiled is not None

    def _style_grams(self, style: np.ndarray) -> dict[str, np.ndarray]:
        """A style image's Gram targets (float64), in tiles when it is large."""
        from . import tiling

        pixels = style.shape[1] * style.shape[2]
        precision = _precision(self.extractor)
        if pixels > tiling.pass_limit(precision) or (
                self.tile is not None and pixels > _pixels_of(self.tile)):
            sums = tiling.tiled_gram_sums(self.extractor, style, list(self.style_layers),
                                          self.forward_tile or self.tile, precision)
            keras = self.normalisation == KERAS_EXAMPLE
            return {name: total if keras else total / count
                    for name, (total, count) in sums.items()}
        feats = self._features(style)
        return {name: self.graph.gram(feats[name]).numpy().astype(np.float64)
                for name in self.style_layers}

    def _features(self, image: np.ndarray) -> dict[str, tf.Tensor]:
        outputs = self.extractor(tf.constant(image, tf.float32), training=False)
        return {name: tf.cast(value, tf.float32) for name, value in outputs.items()}

    def _style_raw(self, gram, target) -> float:
        """A style loss computed in float64 NumPy, for the blend constant."""
        diff = np.asarray(gram, np.float64) - target
        if self.normalisation == KERAS_EXAMPLE:
            return float(np.sum(diff ** 2) / (4.0 * 9.0 * float(self._pixels) ** 2))
        return float(np.mean(diff ** 2))

    @property
    def _pixels(self) -> int:
        return int(self.shape[1] * self.shape[2])

    def loss_parts(self, image: tf.Tensor) -> tf.Tensor:
        """[total, content, style, tv] as a tensor; usable inside tf.function and GradientTape."""
        return self.graph.loss_parts(image, self.targets.as_args())

    def loss_and_grads(self, image: np.ndarray,
                       xla: bool | None = None) -> tuple[Parts, np.ndarray]:
        """Loss parts and the float32 gradient for a network-space image of this objective's
        shape (`xla` as in LossGraph.loss_and_grads; tiled evaluation never uses XLA)."""
        if self._tiled is not None:
            return self._tiled.loss_and_grads(image, self._tiled_targets)
        values, grad = self.graph.loss_and_grads(
            tf.constant(np.reshape(image, self.shape), tf.float32), self.targets.as_args(), xla)
        return Parts(*(float(v) for v in values.numpy())), grad.numpy()


def _precision(extractor) -> str:
    """The arithmetic of the extractor's convolutions: bfloat16 under Keras' mixed policy."""
    for layer in getattr(extractor, "layers", ()):
        if getattr(layer, "compute_dtype", None) == "bfloat16":
            return "bfloat16"
    return "float32"


def _pixels_of(tile: int | tuple[int, int]) -> int:
    rows, cols = (tile, tile) if isinstance(tile, int) else tile
    return rows * cols
