"""The loss and its gradient for an image too large for one pass, computed exactly over tiles
(the method of Galerne et al., "Scaling Painting Style Transfer", EGSR 2024).

The style loss depends on the image only through Gram matrices, which are sums over positions,
and the content loss is itself a sum over positions. So:

1. a forward-only pass over tiles sums each style layer's FᵀF over the tiles' cores: the whole
   image's Gram matrices, from which the style loss and S = ∂loss/∂(FᵀF) follow in closed form;
2. a second pass runs each tile forward and back against the surrogate
   Σ_l ⟨F_coreᵀF_core, S_l⟩ + content loss of the core, whose gradient with respect to the core
   features is exactly the whole loss's (2·F·S for a symmetric S), and adds the tile's input
   gradient into the image's, halo included. The surrogate's value is never needed: its
   gradient at each loss layer is written in closed form (zero outside the core) and carried
   back through the network in one backward pass, so a tile costs about what a plain forward
   and backward pass of its crop costs;
3. total variation, a sum over neighbouring pixels, is taken over row strips.

With cores on the pooling grid and halos as wide as the receptive field (`tiling`), loss and
gradient equal the untiled ones up to rounding, while memory follows the tile size.

With a `split` (a pooling layer), only the layers up to it go over tiles: the first pass also
writes each core's activations at the split into the whole map there, the layers past it run
forward and back over that whole map at once (`deep_pass`, their terms computed as the one pass
does), and the second pass carries the map's gradient there, over the core, back through the
shallow layers with the rest. The tiles' halo is then the split's reach, not the deepest
layer's, and the deep layers, most of the network's work, run forward once and carry no halo.
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from ..model import winograd
from ..model.layout import stage, stages_to
from ..model.network import sub_extractor
from . import losses, matting, tiling
from .deep_pass import DeepPass
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
    suits, in block1_conv2 where the one pass's does); the plan has at most three crop lengths
    along each side. `split` (a pooling layer, e.g. "block2_pool"): only the layers up to it
    go over tiles, the rest runs over the whole map there (see the module's docstring);
    ValueError when no loss layer lies past it.
    `precision`: the extractor's arithmetic (where its tiles must start for Winograd)."""

    def __init__(self, graph, shape: tuple, core: int | tuple[int, int],
                 forward_core: int | tuple[int, int] | None = None, split: str | None = None,
                 precision: str = "float32"):
        self.graph = graph
        self.shape = tuple(shape)
        _, height, width, _ = self.shape
        self.core = core
        self.split = split
        self.style_layers = graph.style_layers
        self.content_layers = graph.content_layers
        self.deep = None
        if split is None:
            self.tile_content, self.tile_styles, at_split = (
                self.content_layers, self.style_layers, ())
            self._gram_model, self._tile_model = graph.style_extractor, graph.extractor
        else:
            shallow = {s.name for s in stages_to(split)}
            self.tile_content = tuple(n for n in self.content_layers if n in shallow)
            self.tile_styles = tuple(n for n in self.style_layers if n in shallow)
            deep = [n for n in (*self.content_layers, *self.style_layers) if n not in shallow]
            if stage(split).conv or not deep:
                raise ValueError(f"split: a pooling layer above the deepest loss layer, not "
                                 f"{split!r}")
            self.deep = DeepPass(graph.extractor, split, deep)
            at_split = (split,)
            self._gram_model = sub_extractor(graph.extractor, [*self.tile_styles, split])
            self._tile_model = sub_extractor(
                graph.extractor, [*self.tile_content, *self.tile_styles, split])
        self._at_split = at_split
        # Where each tiled layer's targets sit in the graph's (whole) lists.
        self._content_index = [self.content_layers.index(n) for n in self.tile_content]
        self._style_index = [self.style_layers.index(n) for n in self.tile_styles]
        # The first pass needs only the style layers' (smaller) halo, and may use larger
        # tiles (`forward_core`): it keeps no activations for a backward pass.
        # The crops start where the tiled Winograd layers' tiles line up with the whole
        # image's (tiling.winograd_align), so tiles convolve exactly as the one pass does.
        align = (tiling.winograd_align(split, precision) if split else
                 tiling.crop_align([*self.tile_content, *self.tile_styles], precision))
        self.style_tiles = tiling.plan(height, width, (*self.tile_styles, *at_split),
                                       forward_core or core, align)
        tiled = (*self.tile_content, *self.tile_styles, *at_split)
        self.tiles = tiling.plan(height, width, tiled, core, align)
        self._narrow = winograd.narrow_at((height, width), tiled)  # as the one pass decides
        self.keras = graph.normalisation == KERAS_EXAMPLE
        self.guided, self.photo = graph.guided, graph.photo
        self.temporal = graph.temporal
        # The network's passes, one trace per crop shape (`_pass`: a few, static shapes).
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
            n_style, n_content = len(self.tile_styles), len(self.tile_content)
            n = (n_style if kind == "grams" else n_content + n_style) + len(self._at_split)
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
                if self.split:  # the whole loss's gradient at the split, over the core
                    signature.append(tf.TensorSpec((1, None, None, None), tf.float32))
            method = {("grams", False): self._tile_grams,
                      ("grams", True): self._tile_region_grams,
                      ("gradient", False): self._tile_gradient,
                      ("gradient", True): self._tile_guided_gradient}[kind, bool(regions)]
            # A partial per shape: TensorFlow counts retraces per Python function. XLA's
            # transforms in the tiles: tiles run where memory is short (winograd.xla_transforms).
            self._passes[key] = tf.function(
                functools.partial(winograd.with_xla_transforms, method, narrow_too=self._narrow),
                input_signature=signature)
        return self._passes[key]

    def _tile_grams(self, crop, boxes):
        return self._grams(crop, boxes, lambda i, core: _flat_gram(core))

    def _tile_region_grams(self, crop, boxes, guides):
        return self._grams(crop, boxes, lambda i, core: self._region_sums(core, guides[i]))

    def _grams(self, crop, boxes, sums):
        """The first pass's body: `sums(i, core)` for each tiled style layer's core, and with
        a split, the core's activations there."""
        feats = self._gram_model(crop, training=False)
        grams = [sums(i, _core(tf.cast(feats[name], tf.float32), boxes[i]))
                 for i, name in enumerate(self.tile_styles)]
        if self.split is None:
            return grams
        return grams, _core(tf.cast(feats[self.split], tf.float32), boxes[len(grams)])

    def _tile_gradient(self, crop, boxes, content_targets, content_scales, style_slopes,
                       split_grad=None):
        # ∂⟨FᵀF, S⟩/∂F = 2·F·S (S symmetric), taken over the whole crop and masked to the core:
        # with halos of 16-32 px, cheaper than cutting the core out and padding its gradient
        # back (docs/large-images.md, stop 34).
        def style_grad(i, features, box):
            flat = tf.reshape(features, (-1, tf.shape(features)[-1]))
            product = tf.reshape(tf.matmul(flat, 2.0 * style_slopes[i]), tf.shape(features))
            return product * _core_mask(features, box)
        return self._gradient(crop, boxes, content_targets, content_scales, style_grad,
                              split_grad)

    def _gradient(self, crop, boxes, content_targets, content_scales, style_grad, split_grad):
        """(content loss of the core, the crop's gradient of content + Σ ⟨core FᵀF, S⟩
        [+ ⟨split core, split_grad⟩]): the gradient pass's body, plain or guided. The
        surrogate's value is never needed, so its gradient with respect to each loss layer's
        activations is written in closed form (`style_grad(i, features, box)`, zero outside
        the core) and carried back through the network in one backward pass."""
        with tf.GradientTape() as tape:
            tape.watch(crop)
            feats = self._tile_model(crop, training=False)
        upstream: dict = {}

        def add(name, grad):
            upstream[name] = upstream[name] + grad if name in upstream else grad
        content = tf.constant(0.0)
        for i, name in enumerate(self.tile_content):
            f = tf.cast(feats[name], tf.float32)
            diff = _core(f, boxes[i]) - content_targets[i]
            content += content_scales[i] * tf.reduce_sum(tf.square(diff))
            add(name, _uncore(2.0 * content_scales[i] * diff, boxes[i], f))
        offset = len(self.tile_content)
        for i, name in enumerate(self.tile_styles):
            add(name, style_grad(i, tf.cast(feats[name], tf.float32), boxes[offset + i]))
        if split_grad is not None:
            add(self.split, _uncore(split_grad, boxes[offset + len(self.tile_styles)],
                                    feats[self.split]))
        names = list(upstream)
        grad = tape.gradient([feats[n] for n in names], crop,
                             output_gradients=[tf.cast(upstream[n], feats[n].dtype)
                                               for n in names])
        return content, grad

    @staticmethod
    def _region_sums(core, guide):
        """(R, c, c): Σ (g_r F)ᵀ(g_r F) over a core for each region r of `guide` (1, h, w, R)."""
        flat = tf.reshape(core, (-1, tf.shape(core)[-1]))
        regions = guide.shape[-1]
        g = tf.reshape(guide, (-1, regions))
        return tf.stack([losses.flat_gram(flat * g[:, r:r + 1]) for r in range(regions)])

    def _tile_guided_gradient(self, crop, boxes, content_targets, content_scales, guides,
                              style_slopes, split_grad=None):
        # ∂Σ_r⟨(g_r F)ᵀ(g_r F), S_r⟩/∂F = Σ_r 2·g_r²·(F·S_r) over the core (each S_r symmetric).
        def style_grad(i, features, box):
            core = _core(features, box)
            flat = tf.reshape(core, (-1, tf.shape(core)[-1]))
            g = tf.reshape(guides[i], (-1, guides[i].shape[-1]))
            product = tf.add_n([
                2.0 * tf.square(g[:, r:r + 1]) * tf.matmul(flat, style_slopes[i][r])
                for r in range(guides[i].shape[-1])])
            return _uncore(tf.reshape(product, tf.shape(core)), box, features)
        return self._gradient(crop, boxes, content_targets, content_scales, style_grad,
                              split_grad)

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

    def _coefficients(self, i: int, weights: dict) -> tuple:
        """(w, norm, coef) of style layer i, whose loss is w·(Σ coef·(sums·norm − A)² +
        offset) for its raw sums FᵀF over the whole image (per region when guided, with
        norm and coef per region), A its target."""
        _, height, width, _ = self.shape
        name = self.style_layers[i]
        channels = weights["grams"][i].shape[-1]
        w = weights["style_weights"][i] * weights["terms"][1]
        if self.guided:
            # Per region r: w_r·Σ(G_r − A_r)²/c², G_r = sums_r / (c·Σ g_r²).
            # A region absent from this layer has no Gram (losses.region_gram's guard).
            return (w, 1.0 / np.maximum(weights["guide_norms"][i], 1e-12)[:, None, None],
                    weights["region_weights"][:, None, None] / channels ** 2)
        if self.keras:
            return w, 1.0, 1.0 / losses.keras_style_norm(height * width)
        rows, cols = stage(name).map_size((height, width))
        return w, 1.0 / (rows * cols * channels), 1.0 / channels ** 2

    def _deep_term(self, weights: dict, content_scales: list):
        """The deep pass's `term(name, features)`: a layer's (content, style) terms computed
        over the whole map as the one pass does, from the same closed form as the tiles'."""
        deep = set(self.deep.layers)
        content = {name: (tf.constant(weights["content"][i]), content_scales[i])
                   for i, name in enumerate(self.content_layers) if name in deep}
        style = {}
        for i, name in enumerate(self.style_layers):
            if name not in deep:
                continue
            w, norm, coef = self._coefficients(i, weights)
            guide = tf.constant(weights["guides"][i]) if self.guided else None
            style[name] = (float(w), tf.constant(np.float32(norm)),
                           tf.constant(np.float32(coef)),
                           tf.constant(weights["grams"][i].astype(np.float32)),
                           float(w * weights["offsets"][i]), guide)

        def term(name, features):
            c = s = tf.constant(0.0)
            if name in content:
                target, scale = content[name]
                c = scale * losses.content_loss_sum(features, target)
            if name in style:
                w, norm, coef, target, offset, guide = style[name]
                sums = (_flat_gram(features) if guide is None
                        else self._region_sums(features, guide))
                s = w * tf.reduce_sum(coef * tf.square(sums * norm - target)) + offset
            return c, s
        return term

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
        tile, strip and deep layer's step; once set, EvaluationStopped is raised there."""
        # The tiles take XLA's transforms: what Numba's pool kept from an untiled pass goes.
        winograd.release_transform_memory()
        def check() -> None:
            if stop is not None and stop.is_set():
                raise EvaluationStopped()

        image = np.asarray(image, np.float32).reshape(self.shape)
        _, height, width, _ = self.shape
        # Pass 1: the whole image's FᵀF per tiled style layer, summed over tile cores in
        # float64; with a split, the whole map there too.
        styles = self._style_index
        sums = [np.zeros(weights["grams"][i].shape, np.float64) for i in styles]
        split_map = None
        if self.split:
            split_map = np.zeros((1, *stage(self.split).map_size((height, width)),
                                  stage(self.split).out_channels), np.float32)
        for t in self.style_tiles:
            check()
            crop = tiling._crop(image, t)
            run = self._pass("grams", crop, self._regions(weights))
            args = ((_pieces([weights["guides"][i] for i in styles], t.places),)
                    if self.guided else ())
            out = run(tf.constant(crop), tf.constant(t.boxes), *args)
            if self.split:
                out, at = out
                p = t.places[-1]
                split_map[:, p[0]:p[1], p[2]:p[3], :] = at.numpy()
            for k, g in enumerate(out):
                sums[k] += g.numpy()
        style, slopes = 0.0, []
        for k, i in enumerate(styles):
            w, norm, coef = self._coefficients(i, weights)
            diff = sums[k] * norm - weights["grams"][i]
            style += w * (float(np.sum(coef * diff ** 2)) + weights["offsets"][i])
            # ∂loss/∂(FᵀF) for this layer (per region when guided), symmetric.
            slopes.append(tf.constant((w * 2.0 * coef * norm * diff).astype(np.float32)))
        slopes = tuple(slopes)
        scales = []
        for i in range(len(self.content_layers)):
            full = weights["content"][i]
            per = 1.0 if self.keras else 1.0 / full.size
            scales.append(weights["content_weights"][i] * weights["terms"][0] * per)
        content = 0.0
        split_grad = None
        if self.split:
            # The layers past the split, forward and back over the whole map.
            deep_content, deep_style, split_grad = self.deep.loss_and_grad(
                split_map, self._deep_term(weights, scales), check)
            content += deep_content
            style += deep_style
            del split_map
        # Pass 2: per tile, the gradient of content + Σ⟨FᵀF, S⟩ over its core (+ the split
        # map's gradient there).
        grad = np.zeros(self.shape, np.float32)
        tile_scales = tf.constant([scales[i] for i in self._content_index], tf.float32)
        n_content = len(self.tile_content)
        n_styles = len(self.tile_styles)
        for t in self.tiles:
            check()
            pieces = tuple(
                tf.constant(weights["content"][i][:, p[0]:p[1], p[2]:p[3], :])
                for i, p in zip(self._content_index, t.places[:n_content]))
            crop = tiling._crop(image, t)
            run = self._pass("gradient", crop, self._regions(weights))
            guides = ((_pieces([weights["guides"][i] for i in styles],
                               t.places[n_content:n_content + n_styles]),)
                      if self.guided else ())
            at = ()
            if self.split:
                p = t.places[-1]
                at = (tf.constant(split_grad[:, p[0]:p[1], p[2]:p[3], :]),)
            value, g = run(tf.constant(crop), tf.constant(t.boxes), pieces, tile_scales,
                           *guides, slopes, *at)
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


def _uncore(core, box, features):
    """A core's values (1, h, w, c) placed in zeros the shape of `features`, at `box`."""
    shape = tf.shape(features)
    return tf.pad(core, [[0, 0], [box[0], shape[1] - box[1]], [box[2], shape[2] - box[3]],
                         [0, 0]])


def _core_mask(features, box):
    """(1, h, w, 1): 1 inside `box` of `features`' map, 0 outside."""
    shape = tf.shape(features)
    rows, cols = tf.range(shape[1]), tf.range(shape[2])
    inside_rows = tf.cast((rows >= box[0]) & (rows < box[1]), tf.float32)
    inside_cols = tf.cast((cols >= box[2]) & (cols < box[3]), tf.float32)
    return (inside_rows[:, None] * inside_cols[None, :])[None, :, :, None]


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
