"""Helpers shared by the benchmarks: the original design as a reference, timing, FLOP counts."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED_IMAGES = ROOT.parent / "shared" / "images"

from styleflow.model.runtime import quiet_tensorflow  # noqa: E402
from timing import median_seconds  # noqa: E402 - also re-exported for the benchmarks

quiet_tensorflow()
import tensorflow as tf  # noqa: E402

from styleflow.io import images
from styleflow.objective import losses  # noqa: E402
from styleflow.model.layout import conv_maps  # noqa: E402
from styleflow.model.network import KERAS_INPUT  # noqa: E402


# The Keras example's loss weights, as the comparisons with PyTorch use them.
CONTENT_WEIGHT, STYLE_WEIGHT, TV_WEIGHT = 0.025, 1.0, 1.0


def layer_choice(layers: str):
    """(content layer, style layers) of a benchmark's `--layers` (full or lite)."""
    from styleflow.defaults import (FULL_CONTENT_LAYER, FULL_STYLE_LAYERS, LITE_CONTENT_LAYER,
                                    LITE_STYLE_LAYERS)

    return ((FULL_CONTENT_LAYER, FULL_STYLE_LAYERS) if layers == "full"
            else (LITE_CONTENT_LAYER, LITE_STYLE_LAYERS))


def ours_objective(layer_weights, last: str, styles, content, style):
    """styleflow's objective as compared with PyTorch's: the content loss on `last`, the style
    layers `styles` weighted alike, the Keras example's weights."""
    from styleflow.model.network import build_extractor
    from styleflow.objective.objective import Objective

    return Objective(build_extractor(layer_weights, [last, *styles]), content, [style],
                     {last: 1.0}, {n: 1 / len(styles) for n in styles},
                     CONTENT_WEIGHT, STYLE_WEIGHT, TV_WEIGHT)


def pair(size: tuple[int, int], base="base5.jpg", ref="ref6.jpg"):
    """The benchmark's content and style pictures at (h, w), preprocessed for Keras VGG19."""
    folder = SHARED_IMAGES if (SHARED_IMAGES / base).exists() else ROOT / "images"
    base_rgb = images.resize(images.load_image(folder / base), size)
    ref_rgb = images.resize(images.load_image(folder / ref), size)
    return KERAS_INPUT.preprocess(base_rgb), KERAS_INPUT.preprocess(ref_rgb)


class OriginalDesign:
    """The Keras example's evaluation as the original script built it: content, style and
    candidate stacked in one batch and all three run through VGG19 on every call."""

    def __init__(self, extractor, content, style, content_layer, style_layers,
                 content_weight=0.025, style_weight=1.0, tv_weight=1.0):
        self.extractor = extractor
        self.content = tf.constant(content)
        self.style = tf.constant(style)
        self.shape = content.shape
        pixels = content.shape[1] * content.shape[2]

        def loss_and_grads(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                feats = extractor(tf.concat([self.content, self.style, x], axis=0))
                f = feats[content_layer]
                total = content_weight * losses.content_loss_sum(f[2:3], f[0:1])
                for name in style_layers:
                    f = feats[name]
                    s = losses.style_loss_keras(losses.gram_matrix(f[2:3]),
                                                losses.gram_matrix(f[1:2]), pixels)
                    total += style_weight / len(style_layers) * s
                total += tv_weight * losses.total_variation_keras(x)
            return total, tape.gradient(total, x)

        self._compiled = tf.function(loss_and_grads,
                                     input_signature=[tf.TensorSpec(self.shape, tf.float32)])

    def __call__(self, flat: np.ndarray):
        """scipy-style evaluation: float64 flat image -> (loss, float64 flat gradient)."""
        x = tf.constant(flat.reshape(self.shape).astype(np.float32))
        loss, grad = self._compiled(x)
        return float(loss), grad.numpy().ravel().astype(np.float64)


def conv_gflop(size: tuple[int, int], deepest: str, batch: int = 1) -> float:
    """GFLOP (2 per multiply-add) of VGG19's convolutions up to `deepest` for one evaluation:
    the forward pass plus the backward pass to the input only (no weight gradients), ~2x."""
    flops = sum(2.0 * h * w * 9 * cin * cout for _, h, w, cin, cout in conv_maps(size, deepest))
    return 2.0 * flops * batch / 1e9


def matmul_gflops(n: int = 4096, repeats: int = 5) -> float:
    """float32 GFLOP/s of an n x n matmul on this machine: the practical ceiling."""
    a = tf.random.normal((n, n), seed=1)
    b = tf.random.normal((n, n), seed=2)
    mm = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    seconds = median_seconds(lambda: mm().numpy(), repeats)
    return 2.0 * n ** 3 / seconds / 1e9
