"""The loss of one network, compiled once: `LossGraph` takes the targets and weights as
arguments rather than capturing them, so one trace serves every content/style pair of the same
size: a Stylizer working through many pairs traces it once per size, not once per pair."""

from __future__ import annotations

import functools
from collections import OrderedDict
from typing import Callable, Sequence

import tensorflow as tf

from ..defaults import SIZES_KEPT
from ..model import xla_cache
from ..model.network import sub_extractor

from . import losses, matting
from .terms import KERAS_EXAMPLE, NEURAL_STYLE, NORMALISATIONS

# The photorealism term reads pixels on the 0..1 scale (Luan et al.'s λ is for that scale);
# network space is 0..255 less a mean, which the matting Laplacian ignores (M·1 = 0).
PHOTO_SCALE = 1.0 / 255.0


class LossGraph:
    """The loss of one network with one normalisation and layer split, compiled once.

    `traces` counts how often TensorFlow traced the loss (once per image size); `compiled`
    keeps other compiled functions built on it (e.g. the Adam step) so they are traced once
    too. Compiled functions are kept for the SIZES_KEPT most recently used image sizes: a
    long-lived process that sees many sizes holds what those take.
    `guided`: the style term compares regions' Gram matrices (masks; neural-style's
    normalisation only); `photo`: a photorealism term (the content's matting Laplacian) is
    added; `temporal`: a video's temporal term (Ruder et al. 2016) is added, against the
    previous output warped onto this frame. All take their extra targets as arguments too
    (Targets.guides, .matting, .temporal).
    """

    def __init__(self, extractor, normalisation: str, content_layers: Sequence[str],
                 style_layers: Sequence[str], jit_compile: bool = False, guided: bool = False,
                 photo: bool = False, temporal: bool = False):
        if normalisation not in NORMALISATIONS:
            raise ValueError(f"unknown normalisation {normalisation!r}")
        if guided and normalisation != NEURAL_STYLE:
            raise ValueError("guided Gram matrices take neural-style's normalisation")
        self.guided = bool(guided)
        self.photo = bool(photo)
        self.temporal = bool(temporal)
        self.extractor = extractor
        self.normalisation = normalisation
        self.content_layers = tuple(content_layers)
        self.style_layers = tuple(style_layers)
        self.traces = 0
        self._kept: OrderedDict = OrderedDict()  # (kind, shape, ...) -> compiled, by use
        # Whether XLA compiles the functions: a default, and per image shape once measured.
        self.jit_compile = bool(jit_compile)
        self.jit_by_shape: dict[tuple, bool] = {}

    def compiled(self, key: tuple, make: Callable[[], object]) -> object:
        """The object kept under `key` (a tuple whose second item is the image shape), made by
        `make()` when missing. Objects of the SIZES_KEPT most recently used shapes are kept;
        the others are dropped, with the traced graphs they hold."""
        if key in self._kept:
            self._kept.move_to_end(key)
            return self._kept[key]
        xla_cache.publish()  # what the last size compiled, for other processes
        self._kept[key] = made = make()
        shapes = list(dict.fromkeys(k[1] for k in reversed(self._kept)))
        if len(shapes) > SIZES_KEPT:
            old = set(shapes[SIZES_KEPT:])
            for k in [k for k in self._kept if k[1] in old]:
                del self._kept[k]
        return made

    @functools.cached_property
    def style_extractor(self):
        """The extractor's layers up to the deepest style layer only, with the style layers as
        outputs: what the forward-only passes for Gram matrices run (a content layer deeper
        than every style layer is not computed there)."""
        return sub_extractor(self.extractor, self.style_layers)

    @property
    def kept(self) -> int:
        """Compiled objects held now (bounded: see `compiled`)."""
        return len(self._kept)

    def gram(self, features: tf.Tensor) -> tf.Tensor:
        """The Gram matrix in this graph's normalisation."""
        if self.normalisation == KERAS_EXAMPLE:
            return losses.gram_matrix(features)
        return losses.gram_matrix_mean(features)

    def loss_parts(self, image: tf.Tensor, targets: tuple) -> tf.Tensor:
        """[total, content, style, tv] for `image` against `targets` (Targets.as_args());
        usable inside tf.function and GradientTape."""
        self.traces += 1  # Python runs this body only while tracing
        content_t, content_w, grams, style_w, offsets, terms = targets[:6]
        guides, region_w, matting_c = targets[6:9] if len(targets) > 6 else ((), None, ())
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
            if self.guided:
                term = losses.guided_style_loss(tf.cast(feats[name], tf.float32), guides[i],
                                                grams[i], region_w)
                style += style_w[i] * term
                continue
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
        if not (self.photo or self.temporal):
            return tf.stack([content + style + tv, content, style, tv])
        total, extra = content + style + tv, []
        if self.photo:
            photo = terms[3] * matting.window_energy(image * PHOTO_SCALE, *matting_c)
            total, extra = total + photo, extra + [photo]
        if self.temporal:
            warped, weights = targets[9]
            temporal = terms[3 + self.photo] * losses.temporal_loss(image, warped, weights,
                                                                    mean=not keras)
            total, extra = total + temporal, extra + [temporal]
        return tf.stack([total, content, style, tv, *extra])

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
        shape = tuple(image.shape)
        # One function object per size (a partial, so TensorFlow does not count the sizes as
        # retraces of one function): dropping it drops its graph.
        function = self.compiled(("loss", shape, xla), lambda: tf.function(
            functools.partial(self._loss_and_grads), jit_compile=xla))
        return function(image, targets)
