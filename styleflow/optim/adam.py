"""Adam on the image pixels, compiled, keeping the lowest-loss image seen (neural-style's loop)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from ..objective.graph import LossGraph
from ..objective.objective import Objective
from ..objective.terms import Parts


@dataclass
class AdamSettings:
    """Adam's hyper-parameters; defaults are anishathalye/neural-style's."""

    learning_rate: float = 10.0
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8
    # Steps over which the rate rises linearly to learning_rate (step t takes t / warmup of
    # it); 0: the full rate from the first step, as the original.
    warmup: int = 0

    def as_tensor(self) -> tf.Tensor:
        return tf.constant([self.learning_rate, self.beta1, self.beta2, self.epsilon,
                            self.warmup], tf.float32)


def _adam_update(graph: LossGraph, state: tuple, targets: tuple, settings: tf.Tensor):
    """One Adam step as a pure function of (image, m, v, t, best_image, best_loss).

    The update is TF1's AdamOptimizer, which the original used: a bias-corrected step size
    lr·√(1−β₂ᵗ)/(1−β₁ᵗ) and ε added to √v.
    """
    image = state[0]
    with tf.GradientTape() as tape:
        tape.watch(image)
        values = graph.loss_parts(image, targets)
        total = values[0]  # inside the tape, so the slice is recorded too
    grad = tape.gradient(total, image)
    return _adam_apply(state, values, grad, settings), values


def _adam_apply(state: tuple, values: tf.Tensor, grad: tf.Tensor, settings: tf.Tensor) -> tuple:
    """Adam's update of `state` given the loss parts and gradient of its image."""
    image, m, v, t, best_image, best_loss = state
    lr, beta1, beta2, epsilon = settings[0], settings[1], settings[2], settings[3]
    warmup = settings[4]
    # The loss belongs to the image before this update: remember it if it is the best.
    improved = values[0] < best_loss
    best_loss = tf.where(improved, values[0], best_loss)
    best_image = tf.where(improved, image, best_image)
    t = t + 1.0
    m = beta1 * m + (1.0 - beta1) * grad
    v = beta2 * v + (1.0 - beta2) * tf.square(grad)
    rate = lr * tf.sqrt(1.0 - beta2 ** t) / (1.0 - beta1 ** t)
    # Fresh moments make the first step about ±lr on every pixel (m/√v = ±1), wherever the
    # gradient points: a warm-up keeps that noise off an image that is already settled.
    rate = rate * tf.minimum(1.0, t / tf.maximum(warmup, 1.0))
    image = image - rate * m / (tf.sqrt(v) + epsilon)
    return image, m, v, t, best_image, best_loss


# For tiled objectives, whose gradient comes from outside TensorFlow's graph.
_compiled_apply = tf.function(_adam_apply)


def _compiled_step(graph: LossGraph, shape: tuple, xla: bool):
    """The Adam step compiled once per LossGraph, image shape and XLA choice, so every
    problem of a size shares a trace (kept as the graph keeps its compiled functions)."""
    return graph.compiled(("adam", tuple(shape), xla), lambda: tf.function(
        lambda state, targets, settings: _adam_update(graph, state, targets, settings),
        jit_compile=xla))


class AdamLoop:
    """Adam state and one compiled step; `best()` is the lowest-loss image seen."""

    def __init__(self, objective: Objective, start: np.ndarray, settings: AdamSettings):
        self.objective = objective
        self.settings = settings
        start = tf.constant(np.asarray(start, np.float32).reshape(objective.shape))
        zeros = tf.zeros_like(start)
        self._state = (start, zeros, zeros, tf.constant(0.0), start,
                       tf.constant(np.inf, tf.float32))
        self._settings = settings.as_tensor()
        self._step = None  # chosen at the first step: XLA or not may be measured before it
        self.steps = 0
        self.settled: Parts | None = None  # parts of the image after the last step
        # Whether that image is the best: decided once, as the best-loss scalar is float32
        # and the parts may carry more digits (the tiled loss sums in float64).
        self.settled_is_best = False

    def step(self) -> tf.Tensor:
        """One Adam step; returns [total, content, style, tv] of the image before it."""
        if self.objective.tiled:
            parts, grad = self.objective.loss_and_grads(self._state[0].numpy())
            values = tf.constant([parts.total, parts.content, parts.style, parts.tv], tf.float32)
            self._state = _compiled_apply(self._state, values, tf.constant(grad), self._settings)
            self.steps += 1
            return values
        if self._step is None:
            graph = self.objective.graph
            self._step = _compiled_step(graph, self.objective.shape,
                                        graph.uses_xla(self.objective.shape))
        self._state, values = self._step(self._state, self.objective.targets.as_args(),
                                         self._settings)
        self.steps += 1
        return values

    def settle(self) -> None:
        """Consider the image after the last step too (no step has evaluated it yet)."""
        image = self._state[0]
        parts, _ = self.objective.loss_and_grads(image.numpy())
        self.settled = parts
        self.settled_is_best = parts.total < self.best_loss
        if self.settled_is_best:
            state = list(self._state)
            state[4], state[5] = image, tf.constant(parts.total, tf.float32)
            self._state = tuple(state)

    @property
    def best_loss(self) -> float:
        """The lowest loss seen (inf before the first step)."""
        return float(self._state[5].numpy())

    @property
    def best_loss_tensor(self) -> tf.Tensor:
        """The lowest loss so far as a tensor (no device read): each step makes a new one, so
        one kept now still says this step's value later."""
        return self._state[5]

    @property
    def best_image(self) -> tf.Tensor:
        """The lowest-loss image so far, in network space, as a tensor (no device read)."""
        return self._state[4]

    def best(self) -> np.ndarray:
        """The lowest-loss image so far, in network space."""
        return self._state[4].numpy()
