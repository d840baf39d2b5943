"""A measured design for the tiled loss: the network split at a pooling layer, its shallow part
over tiles and its deep part over the whole (smaller) map there, against the one pass and
today's tiled loss (`objective.tiled_loss`), in one run.

Today's tiled loss runs every layer over tiles twice forward (Gram sums, then the gradient
pass) and once back, each time with a halo as wide as the deepest layer's reach. But past the
split the maps are 16 (block2_pool) or 64 (block3_pool) times smaller than the image, and there
the whole map fits where the image's shallow layers do not. So:

1. the shallow layers run forward over tiles with their own (small) halo, summing their style
   layers' FᵀF and writing each core's split-layer activations into the whole map;
2. the deep layers run forward and back over that whole map at once: the deep content and
   style terms exactly as one pass computes them, and their gradient with respect to the map;
3. the shallow layers run over the tiles again, forward and back, against the surrogate
   Σ⟨F_coreᵀF_core, S⟩ + ⟨split core, its gradient⟩, and each tile's input gradient is added up.

Only the shallow layers are run twice forward, and only they carry a halo. This script builds
that evaluation from styleflow's own extractor and targets (plain style problems; no shallow
content layer), checks each loss part and the network's gradient against the one pass,
and times all three in turns. It is
the evidence for moving the method into the library, not the library's code.

    python bench/tiled_split.py [--size 2048x1536] [--split block2_pool] [--core 512]
                                [--max-memory 4] [--layers full|lite] [--repeats 2]
                                [--only-split]
"""

from __future__ import annotations

import argparse
import functools

import numpy as np

from common import pair
from cpu import cpu_description
from timing import interleaved_medians, median_seconds, parse_size

import keras
import tensorflow as tf

from styleflow.defaults import (FULL_CONTENT_LAYER, FULL_STYLE_LAYERS, LITE_CONTENT_LAYER,
                                LITE_STYLE_LAYERS)
from styleflow.model.layout import deepest, stage, stages_to
from styleflow.model.network import build_extractor
from styleflow.model.weights import random_weights
from styleflow.objective import losses, tiling
from styleflow.objective.objective import Objective
from styleflow.objective.terms import KERAS_EXAMPLE, Parts
# The tiled loss's own per-core helpers: the split evaluation cuts cores as it does.
from styleflow.objective.tiled_loss import TiledLoss, _core, _flat_gram
from styleflow.plan import budget

CONTENT_WEIGHT, STYLE_WEIGHT, TV_WEIGHT = 0.025, 1.0, 1.0


class SplitTiledLoss:
    """Loss and gradient of a plain Keras-example Objective, its network split at `split`."""

    def __init__(self, objective: Objective, split: str, core: int | tuple[int, int]):
        self.shape = objective.shape
        _, height, width, _ = self.shape
        self.weights = TiledLoss.prepare(objective.targets)
        names = [s.name for s in stages_to(split) if s.conv] + [split]
        graph = objective.graph
        self.shallow_styles = [n for n in graph.style_layers if n in names]
        self.deep_styles = [n for n in graph.style_layers if n not in names]
        if any(n in names for n in graph.content_layers):
            raise ValueError("a content layer above the split: not measured here")
        if (graph.normalisation != KERAS_EXAMPLE or graph.guided or graph.photo
                or graph.temporal):
            raise ValueError("only the Keras example's plain problem is built here")
        self.content_layers = graph.content_layers
        self.style_layers = graph.style_layers
        extractor = objective.extractor
        self.shallow = keras.Model(extractor.input, {
            n: extractor.get_layer(n).output for n in [*self.shallow_styles, split]})
        deep_in = keras.Input((None, None, stage(split).out_channels))
        x, outs = deep_in, {}
        wanted = [*self.content_layers, *self.deep_styles]
        for s in stages_to(deepest(wanted))[len(stages_to(split)):]:
            x = extractor.get_layer(s.name)(x)
            if s.name in wanted:
                outs[s.name] = x
        self.deep = keras.Model(deep_in, outs)
        self.split = split
        self.tiles = tiling.plan(height, width, [*self.shallow_styles, split], core)
        self.pixels = height * width
        self.split_shape = (1, *stage(split).map_size((height, width)), stage(split).out_channels)
        self._passes = {}
        self._deep = tf.function(self._deep_pass)

    def _pass(self, kind, crop):
        key = (kind, crop.shape)
        if key not in self._passes:
            method = self._forward if kind == "forward" else self._backward
            self._passes[key] = tf.function(functools.partial(method))
        return self._passes[key]

    def _forward(self, crop, boxes):
        feats = self.shallow(crop, training=False)
        grams = [_flat_gram(_core(feats[n], boxes[i])) for i, n in enumerate(self.shallow_styles)]
        return grams, _core(feats[self.split], boxes[len(self.shallow_styles)])

    def _backward(self, crop, boxes, slopes, split_grad):
        with tf.GradientTape() as tape:
            tape.watch(crop)
            feats = self.shallow(crop, training=False)
            surrogate = tf.reduce_sum(
                _core(feats[self.split], boxes[len(self.shallow_styles)]) * split_grad)
            for i, n in enumerate(self.shallow_styles):
                surrogate += tf.reduce_sum(_flat_gram(_core(feats[n], boxes[i])) * slopes[i])
        return tape.gradient(surrogate, crop)

    def _deep_pass(self, split_map, content_targets, grams, style_scales, content_scales):
        with tf.GradientTape() as tape:
            tape.watch(split_map)
            feats = self.deep(split_map, training=False)
            content = tf.constant(0.0)
            for i, n in enumerate(self.content_layers):
                content += content_scales[i] * losses.content_loss_sum(feats[n],
                                                                       content_targets[i])
            style = tf.constant(0.0)
            for i, n in enumerate(self.deep_styles):
                diff = _flat_gram(feats[n]) - grams[i]
                style += style_scales[i] * tf.reduce_sum(tf.square(diff))
            total = content + style
        return content, style, tape.gradient(total, split_map)

    def loss_and_grads(self, image):
        w = self.weights
        image = np.asarray(image, np.float32).reshape(self.shape)
        position = {n: i for i, n in enumerate(self.style_layers)}  # the targets' order
        norm = losses.keras_style_norm(self.pixels)
        weight = {n: w["style_weights"][i] * w["terms"][1] for n, i in position.items()}
        scale = {n: weight[n] / norm for n in position}
        # 1. shallow forward over tiles
        sums = [np.zeros(w["grams"][position[n]].shape, np.float64) for n in self.shallow_styles]
        split_map = np.zeros(self.split_shape, np.float32)
        for t in self.tiles:
            crop = tiling._crop(image, t)
            grams, core = self._pass("forward", crop)(tf.constant(crop), tf.constant(t.boxes))
            for i, g in enumerate(grams):
                sums[i] += g.numpy()
            p = t.places[-1]
            split_map[:, p[0]:p[1], p[2]:p[3], :] = core.numpy()
        style, slopes = 0.0, []
        for i, n in enumerate(self.shallow_styles):
            diff = sums[i] - w["grams"][position[n]]
            style += scale[n] * np.sum(diff ** 2) + weight[n] * w["offsets"][position[n]]
            slopes.append(tf.constant((2.0 * scale[n] * diff).astype(np.float32)))
        # 2. the deep layers over the whole split map
        content_scales = tf.constant([w["content_weights"][i] * w["terms"][0]
                                      for i in range(len(self.content_layers))], tf.float32)
        style_scales = tf.constant([scale[n] for n in self.deep_styles], tf.float32)
        content, deep_style, split_grad = self._deep(
            tf.constant(split_map), tuple(tf.constant(c) for c in w["content"]),
            tuple(tf.constant(w["grams"][position[n]].astype(np.float32))
                  for n in self.deep_styles), style_scales, content_scales)
        style += float(deep_style) + sum(weight[n] * w["offsets"][position[n]]
                                          for n in self.deep_styles)
        split_grad = split_grad.numpy()
        # 3. shallow forward and back over tiles
        grad = np.zeros(self.shape, np.float32)
        slopes = tuple(slopes)
        for t in self.tiles:
            crop = tiling._crop(image, t)
            p = t.places[-1]
            g = self._pass("backward", crop)(tf.constant(crop), tf.constant(t.boxes), slopes,
                                            tf.constant(split_grad[:, p[0]:p[1], p[2]:p[3], :]))
            y0, y1, x0, x1 = t.crop
            grad[:, y0:y1, x0:x1, :] += g.numpy()
        tv, tv_grad = weighted_tv(image, w["terms"][2])
        grad += tv_grad
        return Parts(float(content) + style + tv, float(content), style, tv), grad


def weighted_tv(image: np.ndarray, weight: float):
    """`weight` times the Keras example's total variation of a (1, h, w, 3) image, and its
    gradient: over the whole image, on every side of the comparison alike."""
    x = tf.constant(np.asarray(image, np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        tv = weight * losses.total_variation_keras(x)
    return float(tv), tape.gradient(tv, x).numpy()


def resident_peak_gb() -> float:
    """This process's peak resident memory so far, GiB (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="2048x1536", help="WxH")
    parser.add_argument("--split", default="block2_pool")
    parser.add_argument("--core", type=int, default=512, help="shallow tiles' core side, px")
    parser.add_argument("--max-memory", type=float, default=4.0,
                        help="GB: the budget today's tiled loss is planned for")
    parser.add_argument("--layers", choices=("full", "lite"), default="full")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only-split", action="store_true",
                        help="time the split evaluation alone (no one pass, no check): its "
                             "peak resident memory is then the process's")
    args = parser.parse_args()
    h, w = parse_size(args.size)
    content_layer, style_layers = ((FULL_CONTENT_LAYER, FULL_STYLE_LAYERS) if args.layers == "full"
                                   else (LITE_CONTENT_LAYER, LITE_STYLE_LAYERS))
    layers = [content_layer, *style_layers]
    extractor = build_extractor(random_weights(0).layers, layers)
    content, style = pair((h, w))
    image = content + np.random.default_rng(0).normal(0, 5, content.shape).astype(np.float32)
    common = (extractor, content, [style], {content_layer: 1.0},
              {n: 1 / len(style_layers) for n in style_layers}, CONTENT_WEIGHT, STYLE_WEIGHT,
              TV_WEIGHT)
    layout = budget.choose((h, w), layers, [content_layer], "float32", "adam",
                           max_memory=args.max_memory, resident=0)
    if args.only_split:
        # Targets over today's tiles, so that no whole-image pass sets the peak.
        split = SplitTiledLoss(Objective(*common, tile=layout.tile or (h, w),
                                         forward_tile=layout.forward_tile),
                               args.split, args.core)
        seconds = median_seconds(lambda: split.loss_and_grads(image), args.repeats)
        print(f"CPU: {cpu_description()}")
        print(f"{args.size}, layers {args.layers}, split at {args.split}, shallow cores "
              f"{args.core} px ({len(split.tiles)} tiles): {seconds:.2f} s/evaluation (median "
              f"of {args.repeats}); peak resident {resident_peak_gb():.2f} GiB", flush=True)
        return
    whole = Objective(*common)
    tiled = Objective(*common, graph=whole.graph, tile=layout.tile or (h, w),
                      forward_tile=layout.forward_tile)
    split = SplitTiledLoss(whole, args.split, args.core)
    print(f"CPU: {cpu_description()}")
    planned = (f"cores {layout.tile}, forward {layout.forward_tile}" if layout.tile
               else "one tile (the image fits)")
    print(f"{args.size}, layers {args.layers}, float32, random weights; today's tiles for "
          f"{args.max_memory:g} GB: {planned}; split at "
          f"{args.split}, shallow cores {args.core} px ({len(split.tiles)} tiles)")
    parts, g_whole = whole.loss_and_grads(image)
    p_split, g_split = split.loss_and_grads(image)
    p_tiled, g_tiled = tiled.loss_and_grads(image)
    for name in ("total", "content", "style", "tv"):
        want = getattr(parts, name)
        print(f"{name:>7}: one pass {want:.6e}; split {getattr(p_split, name):.6e} "
              f"({abs(getattr(p_split, name) / want - 1):.1e} apart); today's tiles "
              f"{getattr(p_tiled, name):.6e}")
    # The total variation's gradient is the same sum on every side: left out, so that the
    # network's part of the gradient is what is compared.
    _, g_tv = weighted_tv(image.reshape(whole.shape), whole.tv_weight)
    net_whole = g_whole - g_tv
    top = np.abs(net_whole).max()
    print(f"network gradient (total variation's left out), max |difference| / max |g|: split "
          f"{np.abs(g_split - g_tv - net_whole).max() / top:.1e}, today's tiles "
          f"{np.abs(g_tiled - g_tv - net_whole).max() / top:.1e}")
    timed = interleaved_medians({"one pass": lambda: whole.loss_and_grads(image),
                                 "split": lambda: split.loss_and_grads(image),
                                 "tiled": lambda: tiled.loss_and_grads(image)},
                                args.repeats, warmup=0)
    print(f"s/evaluation, median of {args.repeats} rounds in turns: one pass "
          f"{timed['one pass']:.2f}, split {timed['split']:.2f} "
          f"({timed['split'] / timed['one pass']:.2f}x one pass), today's tiles "
          f"{timed['tiled']:.2f} ({timed['tiled'] / timed['one pass']:.2f}x)", flush=True)


if __name__ == "__main__":
    main()
