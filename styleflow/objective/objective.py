"""The style-transfer objective: content and style targets computed once, then the loss, its
parts and the gradient of a candidate image, in one pass (`graph.LossGraph`) or exactly over
tiles (`tiled_loss.TiledLoss`) for images too large for one."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Mapping, Sequence

import numpy as np
import tensorflow as tf

from ..model import machine, winograd
from . import losses, masks, tiling
from .graph import LossGraph
from .terms import KERAS_EXAMPLE, Parts, Targets
from .tiled_loss import TiledLoss


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
    `split` = (a pooling layer, a core): loss and gradient are evaluated with only the layers
    up to that layer over tiles of that core, the deeper ones over the whole map there
    (`tiled_loss` with a split); `tile` and `forward_tile` then serve the targets only.

    Guided problems (masks; the graph's `guided`): `guides` (h, w, R) says how much of each of
    R regions every output pixel belongs to; region r compares its Gram matrix with that of
    style image `region_styles[r][0]` within the style guide `region_styles[r][1]` ((h, w) at
    the style image's size, or None for the whole image), weighted by `region_weights[r]`;
    guides are carried down the network as masks.carry_down does. Photorealism (the graph's
    `photo`): `laplacian`, the content's matting.MattingLaplacian, weighted by `photo_weight`.
    Video (the graph's `temporal`): `temporal` = (the previous output warped onto this frame,
    network space (1, h, w, 3); per-pixel weights (h, w)), weighted by `temporal_weight`;
    `with_frame` makes the objective of the next frame, reusing the style targets.
    """

    def __init__(self, extractor, content: np.ndarray, styles: Sequence[np.ndarray],
                 content_layers: Mapping[str, float], style_layers: Mapping[str, float],
                 content_weight: float, style_weight: float, tv_weight: float,
                 normalisation: str = KERAS_EXAMPLE, style_blends: Sequence[float] | None = None,
                 graph: LossGraph | None = None, jit_compile: bool = False,
                 tile: int | tuple[int, int] | None = None,
                 forward_tile: int | tuple[int, int] | None = None,
                 split: tuple[str, int | tuple[int, int]] | None = None,
                 guides: np.ndarray | None = None,
                 region_styles: Sequence[tuple[int, np.ndarray | None]] | None = None,
                 region_weights: Sequence[float] | None = None, laplacian=None,
                 photo_weight: float = 0.0, temporal: tuple | None = None,
                 temporal_weight: float = 0.0):
        guided, photo = guides is not None, laplacian is not None
        is_temporal = temporal is not None
        if graph is None:
            graph = LossGraph(extractor, normalisation, list(content_layers), list(style_layers),
                              jit_compile=jit_compile, guided=guided, photo=photo,
                              temporal=is_temporal)
        if (graph.normalisation, graph.content_layers, graph.style_layers, graph.guided,
                graph.photo, graph.temporal) != (normalisation, tuple(content_layers),
                                                 tuple(style_layers), guided, photo,
                                                 is_temporal):
            raise ValueError("the LossGraph was built for other layers or normalisation")
        if graph.extractor is not extractor:
            # Targets and passes would come from two networks (style targets go through the
            # graph's, content targets through this one).
            raise ValueError("the LossGraph was built for another extractor")
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
            content_features = tiling.tiled_features(extractor, content,
                                                     list(self.content_layers),
                                                     forward_tile or tile, _precision(extractor))
        self.content_targets = {name: tf.constant(content_features[name])
                                for name in self.content_layers}
        self.gram_targets = {}
        self.gram_offsets = {}
        extra = {}
        if guided:
            # Each region has its own target: nothing is blended, no constant is left over.
            self.gram_targets = self._region_targets(styles, region_styles)
            self.gram_offsets = {name: 0.0 for name in self.style_layers}
            carried = masks.carry_down(np.asarray(guides, np.float32), list(self.style_layers))
            extra.update(
                guides=tuple(tf.constant(carried[name][None]) for name in self.style_layers),
                region_weights=tf.constant(np.asarray(region_weights, np.float32)))
        else:
            grams = [self._style_grams(style) for style in styles]
            for name in self.style_layers:
                blended = sum(b * g[name] for b, g in zip(blends, grams))
                self.gram_targets[name] = tf.constant(blended.astype(np.float32))
                offset = sum(b * self._style_raw(g[name], 0.0) for b, g in zip(blends, grams))
                self.gram_offsets[name] = float(offset - self._style_raw(blended, 0.0))
        term_weights = [self.content_weight, self.style_weight, self.tv_weight]
        self.laplacian = laplacian
        self.photo_weight = float(photo_weight)
        if photo:
            term_weights.append(self.photo_weight)
            extra["matting"] = tuple(laplacian.constants)
        self.temporal_weight = float(temporal_weight)
        if is_temporal:
            term_weights.append(self.temporal_weight)
            extra["temporal"] = _temporal_targets(*temporal)
        if extra:
            extra.setdefault("region_weights", tf.constant([1.0]))
        self.targets = Targets(
            content=tuple(self.content_targets[n] for n in self.content_layers),
            content_weights=tf.constant(list(self.content_layers.values()), tf.float32),
            grams=tuple(self.gram_targets[n] for n in self.style_layers),
            style_weights=tf.constant(list(self.style_layers.values()), tf.float32),
            gram_offsets=tf.constant([self.gram_offsets[n] for n in self.style_layers],
                                     tf.float32),
            term_weights=tf.constant(term_weights, tf.float32), **extra)
        self._tiled = None
        if split is not None:
            layer, core = split
            self._tiled = graph.compiled(("split", self.shape, layer, core),
                                         lambda: TiledLoss(graph, self.shape, core,
                                                           split=layer,
                                                           precision=_precision(extractor)))
            self._tiled_targets = self._tiled.prepare(self.targets)
        elif tile is not None:
            self._tiled = graph.compiled(("tiled", self.shape, tile, forward_tile),
                                         lambda: TiledLoss(graph, self.shape, tile,
                                                           forward_tile))
            self._tiled_targets = self._tiled.prepare(self.targets)

    def with_frame(self, content: np.ndarray, temporal: tuple | None = None) -> "Objective":
        """The objective of another video frame of the same size: new content targets (from
        `content`, network space) and temporal targets (as the constructor's `temporal`), the
        style targets, weights and compiled loss reused (nothing recomputed for the style)."""
        if tuple(content.shape) != self.shape:
            raise ValueError("with_frame takes a frame of the objective's size")
        if (temporal is not None) != self.graph.temporal:
            raise ValueError("temporal targets go with a temporal LossGraph only")
        frame = object.__new__(Objective)
        frame.__dict__.update(self.__dict__)
        if self.tile is None:
            features = self._features(content)
        else:
            features = tiling.tiled_features(self.extractor, content, list(self.content_layers),
                                             self.forward_tile or self.tile,
                                             _precision(self.extractor))
        frame.content_targets = {name: tf.constant(features[name])
                                 for name in self.content_layers}
        changes = dict(content=tuple(frame.content_targets[n] for n in self.content_layers))
        if temporal is not None:
            changes["temporal"] = _temporal_targets(*temporal)
        frame.targets = replace(self.targets, **changes)
        if frame._tiled is not None:
            frame._tiled_targets = frame._tiled.prepare(frame.targets)
        return frame

    def with_photo_weight(self, photo_weight: float) -> "Objective":
        """The same objective with the photorealism term weighted by `photo_weight` (0 leaves
        it out of the loss): every target and the compiled loss are shared, nothing is
        recomputed (Deep Photo Style Transfer's first stage runs without the term)."""
        if not self.graph.photo:
            raise ValueError("with_photo_weight needs an objective with a photorealism term")
        twin = object.__new__(Objective)
        twin.__dict__.update(self.__dict__)
        twin.photo_weight = float(photo_weight)
        weights = self.targets.term_weights.numpy().copy()
        weights[3] = photo_weight
        twin.targets = replace(self.targets, term_weights=tf.constant(weights, tf.float32))
        if self._tiled is not None:
            # Only the term weights differ: the prepared arrays are shared, not copied.
            twin._tiled_targets = dict(self._tiled_targets,
                                       terms=weights.astype(np.float64))
        return twin

    def parts_of(self, values) -> Parts:
        """Parts from this objective's graph's loss values (LossGraph.loss_parts)."""
        return Parts.of(np.asarray(values), self.graph.photo, self.graph.temporal)

    @property
    def tiled(self) -> bool:
        """Whether loss and gradient are evaluated over tiles."""
        return self._tiled is not None

    def _style_grams(self, style: np.ndarray) -> dict[str, np.ndarray]:
        """A style image's Gram targets (float64), in tiles when it is large."""
        pixels = style.shape[1] * style.shape[2]
        precision = _precision(self.extractor)
        if pixels > machine.pass_pixels(precision) or (
                self.tile is not None and pixels > _pixels_of(self.tile)):
            sums = tiling.tiled_gram_sums(self.graph.style_extractor, style,
                                          list(self.style_layers),
                                          self.forward_tile or self.tile, precision)
            keras = self.normalisation == KERAS_EXAMPLE
            return {name: total if keras else total / count
                    for name, (total, count) in sums.items()}
        # A tiled run's targets take XLA's transforms too (winograd.xla_transforms): it runs
        # where memory is short.
        with (winograd.xla_transforms(winograd.narrow_at(style.shape[1:3], self.style_layers))
              if self.tile is not None else contextlib.nullcontext()):
            feats = self._features(style, self.graph.style_extractor)
        return {name: self.graph.gram(feats[name]).numpy().astype(np.float64)
                for name in self.style_layers}

    def _region_targets(self, styles: Sequence[np.ndarray],
                        region_styles: Sequence[tuple[int, np.ndarray | None]]
                        ) -> dict[str, tf.Tensor]:
        """Per style layer the (R, c, c) Gram targets of the regions: each style image's
        Gram matrices within its regions' guides (losses.region_gram's normalisation), in
        tiles when the image is large."""
        precision = _precision(self.extractor)
        layers = list(self.style_layers)
        per_region: list[dict[str, np.ndarray]] = [None] * len(region_styles)
        for index, style in enumerate(styles):
            mine = [r for r, (s, _) in enumerate(region_styles) if s == index]
            if not mine:
                continue
            _, h, w, _ = style.shape
            stack = np.stack([np.ones((h, w), np.float32) if region_styles[r][1] is None
                              else np.asarray(region_styles[r][1], np.float32) for r in mine],
                             axis=-1)
            carried = masks.carry_down(stack, layers)
            sums = tiling.tiled_gram_sums(self.graph.style_extractor, style, layers,
                                          self.forward_tile or self.tile, precision,
                                          guides=carried)
            for k, r in enumerate(mine):
                per_region[r] = {}
                for name in layers:
                    total, _ = sums[name]
                    channels = total.shape[-1]
                    norm = channels * float(np.sum(np.square(carried[name][..., k],
                                                             dtype=np.float64)))
                    per_region[r][name] = total[k] / max(norm, 1e-12)
        return {name: tf.constant(np.stack([g[name] for g in per_region]).astype(np.float32))
                for name in layers}

    def _features(self, image: np.ndarray, extractor=None) -> dict[str, tf.Tensor]:
        run = self.extractor if extractor is None else extractor
        outputs = run(tf.constant(image, tf.float32), training=False)
        return {name: tf.cast(value, tf.float32) for name, value in outputs.items()}

    def _style_raw(self, gram, target) -> float:
        """A style loss computed in float64 NumPy, for the blend constant."""
        diff = np.asarray(gram, np.float64) - target
        if self.normalisation == KERAS_EXAMPLE:
            return float(np.sum(diff ** 2) / losses.keras_style_norm(self._pixels))
        return float(np.mean(diff ** 2))

    @property
    def _pixels(self) -> int:
        return int(self.shape[1] * self.shape[2])

    def loss_and_grads(self, image: np.ndarray, xla: bool | None = None,
                       stop=None) -> tuple[Parts, np.ndarray]:
        """Loss parts and the float32 gradient for a network-space image of this objective's
        shape (`xla` as in LossGraph.loss_and_grads; tiled evaluation never uses XLA).
        `stop` (e.g. a threading.Event): a tiled evaluation looks at it between tiles and
        raises tiled_loss.EvaluationStopped once it is set; one pass runs to its end."""
        if self._tiled is not None:
            return self._tiled.loss_and_grads(image, self._tiled_targets, stop)
        values, grad = self.graph.loss_and_grads(
            tf.constant(np.reshape(image, self.shape), tf.float32), self.targets.as_args(), xla)
        return self.parts_of(values.numpy()), grad.numpy()

    @property
    def guided(self) -> bool:
        """Whether the style term compares regions (masks)."""
        return self.graph.guided


def _temporal_targets(warped: np.ndarray, weights: np.ndarray) -> tuple:
    """The temporal term's targets as tensors: the warped previous output (1, h, w, 3) and the
    weights as (1, h, w, 1)."""
    weights = np.asarray(weights, np.float32)
    return (tf.constant(np.asarray(warped, np.float32).reshape(1, *weights.shape[:2], 3)),
            tf.constant(weights.reshape(1, *weights.shape[:2], 1)))


def _precision(extractor) -> str:
    """The arithmetic of the extractor's convolutions: bfloat16 under Keras' mixed policy."""
    for layer in getattr(extractor, "layers", ()):
        if getattr(layer, "compute_dtype", None) == "bfloat16":
            return "bfloat16"
    return "float32"


def _pixels_of(tile: int | tuple[int, int]) -> int:
    rows, cols = (tile, tile) if isinstance(tile, int) else tile
    return rows * cols
