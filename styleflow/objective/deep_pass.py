"""The deep layers of a split tiled evaluation (`tiled_loss.TiledLoss` with a `split`): the
network past a pooling layer run forward and back over the whole map there at once.

Past block2_pool the maps hold 16 times fewer pixels than the image (64 past block3_pool), so
where the image's shallow layers need tiles, the whole map of the deep ones often fits. Run
whole, the deep layers need no halo and go forward once, not twice; and their loss terms are
computed exactly as the one pass computes them.

The pass goes layer by layer, each layer (with the pooling after it) one compiled call under a
tape of its own, and the chain rule is applied between them by hand: so a stop is looked at
between layers both ways (a whole deep pass at print size takes tens of seconds), and each
layer's tape lets go of its activations as soon as the backward pass has gone through it.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from ..model import winograd
from ..model.layout import STAGES, deepest, stage


def segments(split: str, layers: Sequence[str]) -> list[tuple[str, ...]]:
    """The stages past `split` up to the deepest of `layers`, grouped one conv layer (and the
    pooling right after it) per group."""
    first = STAGES.index(stage(split)) + 1
    last = STAGES.index(stage(deepest(layers)))
    groups: list[list[str]] = []
    for s in STAGES[first:last + 1]:
        if s.conv or not groups:
            groups.append([s.name])
        else:
            groups[-1].append(s.name)
    return [tuple(g) for g in groups]


class DeepPass:
    """The layers of `extractor` (a `network.build_extractor` model) past `split`, run over a
    whole (1, h, w, c) map at `split`; `layers` are the loss's layers past it."""

    def __init__(self, extractor, split: str, layers: Sequence[str]):
        if stage(split).conv:
            raise ValueError(f"split: a pooling layer, not {split!r}")
        self.split = split
        self.layers = tuple(layers)
        self._groups = segments(split, self.layers)
        self._wanted = [tuple(n for n in group if n in self.layers) for group in self._groups]
        # One compiled call per group, each traced once for its (static) map size, so the
        # deeper layers convolve by Winograd where it suits, as the one pass does.
        # XLA's transforms, as in the tiles: a split loss runs where memory is short.
        self._calls = [tf.function(functools.partial(winograd.with_xla_transforms, self._run,
                                                     [extractor.get_layer(n) for n in group],
                                                     wanted))
                       for group, wanted in zip(self._groups, self._wanted)]

    @staticmethod
    def _run(layers, wanted, x):
        outputs = {}
        for layer in layers:
            x = layer(x)
            if layer.name in wanted:
                outputs[layer.name] = tf.cast(x, tf.float32)
        return x, outputs

    def loss_and_grad(self, split_map: np.ndarray,
                      term: Callable[[str, tf.Tensor], tuple[tf.Tensor, tf.Tensor]],
                      check: Callable[[], None]) -> tuple[float, float, np.ndarray]:
        """(content, style, gradient with respect to `split_map`) of the loss terms `term`
        gives for each layer's float32 features: `term(name, features)` returns that layer's
        (content, style) contributions as scalar tensors. `check()` is called before each
        layer's forward and backward step (it raises to stop the pass)."""
        x = tf.constant(split_map, tf.float32)
        steps = []
        content, style = 0.0, 0.0
        for call, wanted in zip(self._calls, self._wanted):
            check()
            with tf.GradientTape() as tape:
                tape.watch(x)
                out, feats = call(x)
                loss = None
                for name in wanted:
                    c, s = term(name, feats[name])
                    content += float(c)
                    style += float(s)
                    loss = c + s if loss is None else loss + c + s
            steps.append((tape, x, out, loss))
            x = out
        del x, out, loss, tape
        grad = None
        while steps:
            check()
            # Popped, so that what this layer held is let go once its step is done.
            tape, x_in, out, loss = steps.pop()
            targets, seeds = [], []
            if loss is not None:
                targets.append(loss)
                seeds.append(tf.ones_like(loss))
            if grad is not None:
                targets.append(out)
                seeds.append(grad)
            grad = tape.gradient(targets, x_in, output_gradients=seeds)
            del tape, x_in, out, loss, targets, seeds
        return content, style, grad.numpy()
