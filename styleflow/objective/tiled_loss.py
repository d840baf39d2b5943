"""The loss and its gradient for an image too large for one pass, computed exactly over tiles
(the method of Galerne et al., "Scaling Painting Style Transfer", EGSR 2024).

The style loss depends on the image only through Gram matrices, which are sums over positions,
and the content loss is itself a sum over positions. So:

1. a forward-only pass over tiles sums each style layer's FᵀF over the tiles' cores: the whole
   image's Gram matrices, from which the style loss and S = ∂loss/∂(FᵀF) follow in closed form;
2. a second pass runs each tile forward and back against the surrogate
   Σ_l ⟨F_coreᵀF_core, S_l⟩ + content loss of the core, whose gradient with respect to the core
   features is exactly the whole loss's (2·F·S for a symmetric S), and adds the tile's input
   gradient into the image's, halo included;
3. total variation, a sum over neighbouring pixels, is taken over row strips.

With cores on the pooling grid and halos as wide as the receptive field (`tiling`), loss and
gradient equal the untiled ones up to rounding, while memory follows the tile size.
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from ..model.layout import stage
from . import losses, matting, tiling
from .graph import PHOTO_SCALE
from .terms import KERAS_EXAMPLE, Parts


class EvaluationStopped(Exception):
    """Raised between tiles when the evaluation's `stop` was set: the caller asked for no
    more of it (see TiledLoss.loss_and_grads)."""


class TiledLoss:
    """Loss and gradient of a LossGraph's problem at one image size, over tiles with cores of
    `core` pixels (a side, or (rows, columns)); the forward-only first pass over tiles of
    `forward_core` when given. Each pass is traced once per crop shape, with static sizes, so
    the tiles convolve as the untiled pass does (Winograd in the deeper layers where it
    suits); the plan has at most three crop lengths along each side."""

    def __init__(self, graph, shape: tuple, core: int | tuple[int, int],
                 forward_core: int | tuple[int, int] | None = None):
        self.graph = graph
        self.shape = tuple(shape)
        _, height, width, _ = self.shape
        self.core = core
        self.style_layers = graph.style_layers
        self.content_layers = graph.content_layers
        # The first pass needs only the style layers' (smaller) halo, and may use larger
        # tiles (`forward_core`): it keeps no activations for a backward pass.
        self.style_tiles = tiling.plan(height, width, self.style_layers, forward_core or core)
        self.tiles = tiling.plan(height, width, (*self.content_layers, *self.style_layers), core)
        self.keras = graph.normalisation == KERAS_EXAMPLE
        self.guided, self.photo = graph.guided, graph.photo
        self.temporal = graph.temporal
        # The network's passes, one trace per crop shape (`_pass`); the plan has a few shapes
        # only (interior, edges, corners), and a static one lets the deeper layers convolve
        # by Winograd (model.winograd.suits), as the untiled pass and the targets do.
        self._passes: dict[tuple, object] = {}
        crop = tf.TensorSpec((1, None, None, 3), tf.float32)
        self._tv = tf.function(self._tv_strip, input_signature=[crop, tf.TensorSpec((), tf.int32)])
        self._photo = tf.function(self._photo_strip, input_signature=[
            crop, tf.TensorSpec((), tf.int32), tf.TensorSpec((None, None, 3), tf.float32),
            tf.TensorSpec((None, None, 3), tf.float32),
            tf.TensorSpec((None, None, 3, 3), tf.float32)])

    def _pass(self, kind: str, crop: np.ndarray, regions: int = 0):
        """The compiled pass `kind` ("grams" or "gradient") for crops of `crop`'s shape, with
        `regions` guide regions (guided problems) or none; every other argument's sizes are
        left dynamic, so each crop shape is traced once."""
        key = (kind, crop.shape, regions)
        if key not in self._passes:
            n_style, n_content = len(self.style_layers), len(self.content_layers)
            n = n_style if kind == "grams" else n_content + n_style
            signature = [tf.TensorSpec(crop.shape, tf.float32), tf.TensorSpec((n, 4), tf.int32)]
            if kind == "gradient":
                signature += [
                    tuple(tf.TensorSpec((1, None, None, None), tf.float32)
                          for _ in range(n_content)),
                    tf.TensorSpec((n_content,), tf.float32)]
            if regions:
                signature.append(tuple(tf.TensorSpec((1, None, None, regions), tf.float32)
                                       for _ in range(n_style)))
            if kind == "gradient":
                slope = (None, None, None) if regions else (None, None)
                signature.append(tuple(tf.TensorSpec(slope, tf.float32) for _ in range(n_style)))
            method = {("grams", False): self._tile_grams,
                      ("grams", True): self._tile_region_grams,
                      ("gradient", False): self._tile_gradient,
                      ("gradient", True): self._tile_guided_gradient}[kind, bool(regions)]
            # A partial per shape: TensorFlow counts retraces per Python function.
            self._passes[key] = tf.function(functools.partial(method), input_signature=signature)
        return self._passes[key]

    def _tile_grams(self, crop, boxes):
        feats = self.graph.style_extractor(crop, training=False)
        grams = []
        for i, name in enumerate(self.style_layers):
            grams.append(_flat_gram(_core(tf.cast(feats[name], tf.float32), boxes[i])))
        return grams

    def _tile_gradient(self, crop, boxes, content_targets, content_scales, style_slopes):
        return self._gradient(crop, boxes, content_targets, content_scales,
                              lambda i, core: _flat_gram(core) * style_slopes[i])

    def _gradient(self, crop, boxes, content_targets, content_scales, style_products):
        """(content loss of the core, the crop's gradient of content + Σ style_products(i,
        core)): the gradient pass's body, plain or guided."""
        with tf.GradientTape() as tape:
            tape.watch(crop)
            feats = self.graph.extractor(crop, training=False)
            content = tf.constant(0.0)
            for i, name in enumerate(self.content_layers):
                f = _core(tf.cast(feats[name], tf.float32), boxes[i])
                content += content_scales[i] * losses.content_loss_sum(f, content_targets[i])
            surrogate = content
            offset = len(self.content_layers)
            for i, name in enumerate(self.style_layers):
                f = _core(tf.cast(feats[name], tf.float32), boxes[offset + i])
                surrogate += tf.reduce_sum(style_products(i, f))
        return content, tape.gradient(surrogate, crop)

    def _tile_region_grams(self, crop, boxes, guides):
        feats = self.graph.style_extractor(crop, training=False)
        return [self._region_sums(_core(tf.cast(feats[name], tf.float32), boxes[i]), guides[i])
                for i, name in enumerate(self.style_layers)]

    @staticmethod
    def _region_sums(core, guide):
        """(R, c, c): Σ (g_r F)ᵀ(g_r F) over a core for each region r of `guide` (1, h, w, R)."""
        flat = tf.reshape(core, (-1, tf.shape(core)[-1]))
        regions = guide.shape[-1]
        g = tf.reshape(guide, (-1, regions))
        return tf.stack([losses.flat_gram(flat * g[:, r:r + 1]) for r in range(regions)])

    def _tile_guided_gradient(self, crop, boxes, content_targets, content_scales, guides,
                              style_slopes):
        return self._gradient(
            crop, boxes, content_targets, content_scales,
            lambda i, core: self._region_sums(core, guides[i]) * style_slopes[i])

    def _photo_strip(self, strip, first, colours, mean_offset, whiten):
        """The photorealism energy of the windows centred in image rows first..stop-1, and
        its gradient; `strip` holds those rows and one more on either side where the image
        has one. (Window k's constants are stored at row k-1: windows lie inside the image.)"""
        top = tf.maximum(first - 1, 0)
        rows = tf.shape(strip)[1]
        with tf.GradientTape() as tape:
            tape.watch(strip)
            value = matting.window_energy(strip * PHOTO_SCALE, colours[top:top + rows],
                                          mean_offset[top:top + rows - 2],
                                          whiten[top:top + rows - 2])
        return value, tape.gradient(value, strip)

    def _tv_strip(self, strip, rows):
        """The total variation contributed by `rows` image rows, and its gradient; `strip`
        holds one more row below them when there is one."""
        with tf.GradientTape() as tape:
            tape.watch(strip)
            if self.keras:
                value = losses.total_variation_keras(strip)
            else:
                _, height, width, _ = self.shape
                value = losses.total_variation_mean_rows(strip, rows, height, width)
        return value, tape.gradient(value, strip)

    def _regions(self, weights: dict) -> int:
        """Guide regions of a guided problem's prepared targets; 0 for plain ones."""
        return int(weights["guides"][0].shape[-1]) if self.guided else 0

    @staticmethod
    def prepare(targets) -> dict:
        """An Objective's Targets as NumPy values, read once per problem."""
        return _numpy(targets)

    def loss_and_grads(self, image: np.ndarray, weights: dict,
                       stop=None) -> tuple[Parts, np.ndarray]:
        """Parts and the float32 gradient for a network-space image of this size against
        `weights` (`prepare`d targets: the whole image's content features, blended Grams).
        `stop` (anything with `is_set()`, e.g. a threading.Event) is looked at before every
        tile and strip; once set, EvaluationStopped is raised there."""
        def check() -> None:
            if stop is not None and stop.is_set():
                raise EvaluationStopped()

        image = np.asarray(image, np.float32).reshape(self.shape)
        _, height, width, _ = self.shape
        pixels = height * width
        # Pass 1: the whole image's FᵀF per style layer, summed over tile cores in float64.
        sums = [np.zeros(g.shape, np.float64) for g in weights["grams"]]
        for t in self.style_tiles:
            check()
            crop = tiling._crop(image, t)
            run = self._pass("grams", crop, self._regions(weights))
            args = (_pieces(weights["guides"], t.places),) if self.guided else ()
            grams = run(tf.constant(crop), tf.constant(t.boxes), *args)
            for i, g in enumerate(grams):
                sums[i] += g.numpy()
        style, slopes = 0.0, []
        for i, name in enumerate(self.style_layers):
            channels = sums[i].shape[-1]
            w = weights["style_weights"][i] * weights["terms"][1]
            if self.guided:
                # Per region r: w_r·Σ(G_r − A_r)²/c², G_r = sums_r / (c·Σ g_r²).
                norm = 1.0 / weights["guide_norms"][i][:, None, None]
                diff = sums[i] * norm - weights["grams"][i]
                regions = weights["region_weights"][:, None, None] / channels ** 2
                style += w * float(np.sum(regions * diff ** 2))
                slopes.append(tf.constant((w * 2.0 * regions * norm * diff).astype(np.float32)))
                continue
            rows, cols = stage(name).map_size((height, width))
            size = rows * cols * channels
            norm = 1.0 if self.keras else 1.0 / size
            diff = sums[i] * norm - weights["grams"][i]
            if self.keras:
                scale = 1.0 / losses.keras_style_norm(pixels)
            else:
                scale = 1.0 / channels ** 2
            style += w * (np.sum(diff ** 2) * scale + weights["offsets"][i])
            # ∂loss/∂(FᵀF) for this layer, symmetric.
            slopes.append(tf.constant((w * 2.0 * scale * norm * diff).astype(np.float32)))
        slopes = tuple(slopes)
        # Pass 2: per tile, the gradient of content + Σ⟨FᵀF, S⟩ over its core.
        grad = np.zeros(self.shape, np.float32)
        scales = []
        for i, name in enumerate(self.content_layers):
            full = weights["content"][i]
            per = 1.0 if self.keras else 1.0 / full.size
            scales.append(weights["content_weights"][i] * weights["terms"][0] * per)
        scales = tf.constant(scales, tf.float32)
        content = 0.0
        n_content = len(self.content_layers)
        for t in self.tiles:
            check()
            pieces = tuple(
                tf.constant(weights["content"][i][:, p[0]:p[1], p[2]:p[3], :])
                for i, p in enumerate(t.places[:n_content]))
            crop = tiling._crop(image, t)
            run = self._pass("gradient", crop, self._regions(weights))
            guides = (_pieces(weights["guides"], t.places[n_content:]),) if self.guided else ()
            value, g = run(tf.constant(crop), tf.constant(t.boxes), pieces, scales, *guides,
                           slopes)
            content += float(value)
            y0, y1, x0, x1 = t.crop
            grad[:, y0:y1, x0:x1, :] += g.numpy()
        # Total variation over row strips, each with the row below it.
        tv = 0.0
        tv_rows = max(1, tiling.STRIP_PIXELS // width)
        for r0 in range(0, height, tv_rows):
            check()
            r1 = min(height, r0 + tv_rows)
            strip = image[:, r0:min(height, r1 + 1)]
            value, g = self._tv(tf.constant(strip), tf.constant(r1 - r0))
            tv += float(value)
            grad[:, r0:r0 + g.shape[1]] += weights["terms"][2] * g.numpy()
        tv *= weights["terms"][2]
        # From here on, the photorealism term's row strips: narrower than total variation's,
        # as it holds far more per pixel (tiling.PHOTO_STRIP_PIXELS).
        photo_rows = max(1, tiling.PHOTO_STRIP_PIXELS // width)
        total = content + style + tv
        temporal = None
        if self.temporal:
            # Per pixel, like total variation: summed over the whole image in float64.
            temporal = self._temporal(image, grad, weights)
        if not self.photo:
            if temporal is not None:
                total += temporal
            return Parts(float(total), float(content), float(style), float(tv),
                         temporal=temporal), grad
        # Photorealism over row strips, each with a row of halo on either side: windows are
        # 3x3, so a strip's windows need nothing further.
        photo = 0.0
        lam = weights["terms"][3]
        # Weighted 0 (photo's first stage), the term is left out, not computed and discarded.
        for r0 in range(0, height if lam else 0, photo_rows):
            check()
            r1 = min(height, r0 + photo_rows)
            top, bottom = max(r0 - 1, 0), min(r1 + 1, height)
            value, g = self._photo(tf.constant(image[:, top:bottom]), tf.constant(r0),
                                   *weights["matting"])
            photo += float(value)
            grad[:, top:bottom] += lam * g.numpy()
        photo *= lam
        total += photo
        if temporal is not None:
            total += temporal
        return Parts(float(total), float(content), float(style), float(tv), float(photo),
                     temporal), grad

    def _temporal(self, image: np.ndarray, grad: np.ndarray, weights: dict) -> float:
        """The temporal term (losses.temporal_loss) and its gradient, added into `grad`."""
        warped, mask = weights["temporal"]
        lam = weights["terms"][3 + self.photo]
        diff = image.astype(np.float64) - warped
        scale = lam / (1.0 if self.keras else image.size)
        grad += (2.0 * scale * mask * diff).astype(np.float32)
        return float(scale * np.sum(mask * diff ** 2))


def _pieces(maps, places) -> tuple:
    """Each layer's map (1, h, w, k) cut to a tile's core there."""
    return tuple(tf.constant(m[:, p[0]:p[1], p[2]:p[3], :]) for m, p in zip(maps, places))


def _flat_gram(core):
    """FᵀF of a (1, h, w, c) core."""
    return losses.flat_gram(tf.reshape(core, (-1, tf.shape(core)[-1])))


def _core(features, box):
    return features[:, box[0]:box[1], box[2]:box[3], :]


def _numpy(targets) -> dict:
    """Targets as NumPy values."""
    content, content_w, grams, style_w, offsets, terms = targets.as_args()[:6]
    extra = {}
    if targets.guides:
        guides = [g.numpy() for g in targets.guides]
        extra = {"guides": guides,
                 "region_weights": targets.region_weights.numpy().astype(np.float64),
                 # c·Σ g² per layer and region: the region Gram's divisor (losses.region_gram).
                 "guide_norms": [grams[i].shape[-1] * np.sum(np.square(g, dtype=np.float64),
                                                             axis=(0, 1, 2))
                                 for i, g in enumerate(guides)]}
    if targets.matting:
        extra["matting"] = targets.matting
    if targets.temporal:
        extra["temporal"] = tuple(t.numpy().astype(np.float64) for t in targets.temporal)
    return {**extra, "content": [c.numpy() if hasattr(c, "numpy") else c for c in content],
            "content_weights": content_w.numpy().astype(np.float64),
            "grams": [g.numpy().astype(np.float64) for g in grams],
            "style_weights": style_w.numpy().astype(np.float64),
            "offsets": offsets.numpy().astype(np.float64),
            "terms": terms.numpy().astype(np.float64)}
