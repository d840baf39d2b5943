"""The style-transfer objective: targets computed once, then one compiled function giving the
loss, its parts and the gradient for a candidate image."""

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


class Objective:
    """Loss of a network-space image (1, h, w, 3) against fixed content and style targets.

    content_layers / style_layers map a layer name to its weight within the term; the term
    weights multiply the sums. Several styles are blended by `style_blends` (normalised to sum
    to 1). Because Σᵢ bᵢ‖G − Aᵢ‖² = ‖G − Σᵢ bᵢAᵢ‖² + const, each layer compares with one blended
    Gram target plus a precomputed constant: the loss equals the per-style sum exactly, at the
    cost of a single style.
    """

    def __init__(self, extractor, content: np.ndarray, styles: Sequence[np.ndarray],
                 content_layers: Mapping[str, float], style_layers: Mapping[str, float],
                 content_weight: float, style_weight: float, tv_weight: float,
                 normalisation: str = KERAS_EXAMPLE, style_blends: Sequence[float] | None = None,
                 jit_compile: bool = False):
        if normalisation not in (KERAS_EXAMPLE, NEURAL_STYLE):
            raise ValueError(f"unknown normalisation {normalisation!r}")
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

        content_features = self._features(content)
        self.content_targets = {name: tf.constant(content_features[name])
                                for name in self.content_layers}
        grams = [{name: self._gram(feats[name]).numpy().astype(np.float64)
                  for name in self.style_layers}
                 for feats in (self._features(style) for style in styles)]
        self.gram_targets = {}
        self.gram_offsets = {}
        for name in self.style_layers:
            blended = sum(b * g[name] for b, g in zip(blends, grams))
            self.gram_targets[name] = tf.constant(blended.astype(np.float32))
            offset = sum(b * self._style_raw(g[name], 0.0) for b, g in zip(blends, grams))
            self.gram_offsets[name] = float(offset - self._style_raw(blended, 0.0))

        signature = [tf.TensorSpec(self.shape, tf.float32)]
        self._compiled = tf.function(self._loss_and_grads, input_signature=signature,
                                     jit_compile=jit_compile)

    # -- building blocks -------------------------------------------------------------------

    def _features(self, image: np.ndarray) -> dict[str, tf.Tensor]:
        outputs = self.extractor(tf.constant(image, tf.float32), training=False)
        return {name: tf.cast(value, tf.float32) for name, value in outputs.items()}

    def _gram(self, features: tf.Tensor) -> tf.Tensor:
        if self.normalisation == KERAS_EXAMPLE:
            return losses.gram_matrix(features)
        return losses.gram_matrix_mean(features)

    def _style_raw(self, gram, target) -> float:
        """A style loss computed in float64 NumPy, for the blend constant."""
        diff = np.asarray(gram, np.float64) - target
        if self.normalisation == KERAS_EXAMPLE:
            return float(np.sum(diff ** 2) / (4.0 * 9.0 * float(self._pixels) ** 2))
        return float(np.mean(diff ** 2))

    @property
    def _pixels(self) -> int:
        return int(self.shape[1] * self.shape[2])

    def loss_parts(self, image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        """(total, content, style, tv) as tensors; usable inside tf.function and GradientTape."""
        feats = self.extractor(image, training=False)
        content = tf.constant(0.0)
        for name, weight in self.content_layers.items():
            current = tf.cast(feats[name], tf.float32)
            if self.normalisation == KERAS_EXAMPLE:
                term = losses.content_loss_sum(current, self.content_targets[name])
            else:
                term = losses.content_loss_mean(current, self.content_targets[name])
            content += weight * term
        style = tf.constant(0.0)
        for name, weight in self.style_layers.items():
            gram = self._gram(tf.cast(feats[name], tf.float32))
            if self.normalisation == KERAS_EXAMPLE:
                term = losses.style_loss_keras(gram, self.gram_targets[name], self._pixels)
            else:
                term = losses.style_loss_mean(gram, self.gram_targets[name])
            style += weight * (term + self.gram_offsets[name])
        if self.normalisation == KERAS_EXAMPLE:
            tv = losses.total_variation_keras(image)
        else:
            tv = losses.total_variation_mean(image)
        content *= self.content_weight
        style *= self.style_weight
        tv *= self.tv_weight
        return content + style + tv, content, style, tv

    def _loss_and_grads(self, image: tf.Tensor):
        with tf.GradientTape() as tape:
            tape.watch(image)
            total, content, style, tv = self.loss_parts(image)
        return tf.stack([total, content, style, tv]), tape.gradient(total, image)

    # -- public evaluation -----------------------------------------------------------------

    def loss_and_grads(self, image: np.ndarray) -> tuple[Parts, np.ndarray]:
        """Loss parts and the float32 gradient for a network-space image of this objective's shape."""
        values, grad = self._compiled(tf.constant(np.reshape(image, self.shape), tf.float32))
        return Parts(*(float(v) for v in values.numpy())), grad.numpy()
