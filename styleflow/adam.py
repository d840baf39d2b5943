"""Adam on the image pixels, compiled, keeping the lowest-loss image seen (neural-style's loop)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import tensorflow as tf

from .objective import Objective, Parts


@dataclass
class AdamSettings:
    """Adam's hyper-parameters; defaults are anishathalye/neural-style's."""

    learning_rate: float = 10.0
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8


@dataclass
class Step:
    """Progress after `iteration` steps: the last loss and the best image so far."""

    iteration: int
    parts: Parts
    best_loss: float
    seconds: float


class AdamLoop:
    """Adam state as tf.Variables and one compiled step; `best()` is the lowest-loss image.

    The update is TF1's AdamOptimizer, which the original used: a bias-corrected step size
    lr·√(1−β₂ᵗ)/(1−β₁ᵗ) and ε added to √v.
    """

    def __init__(self, objective: Objective, start: np.ndarray, settings: AdamSettings):
        self.objective = objective
        self.settings = settings
        start = tf.constant(np.asarray(start, np.float32).reshape(objective.shape))
        self.image = tf.Variable(start)
        self.best_image = tf.Variable(start)
        self.best_loss = tf.Variable(np.inf, dtype=tf.float32)
        self.m = tf.Variable(tf.zeros_like(start))
        self.v = tf.Variable(tf.zeros_like(start))
        self.t = tf.Variable(0.0)
        self._step = tf.function(self._update)

    def _update(self) -> tf.Tensor:
        s = self.settings
        with tf.GradientTape() as tape:
            total, content, style, tv = self.objective.loss_parts(self.image)
        grad = tape.gradient(total, self.image)
        # The loss belongs to the image before this update: remember it if it is the best.
        improved = total < self.best_loss
        self.best_loss.assign(tf.where(improved, total, self.best_loss))
        self.best_image.assign(tf.where(improved, self.image, self.best_image))
        self.t.assign_add(1.0)
        self.m.assign(s.beta1 * self.m + (1.0 - s.beta1) * grad)
        self.v.assign(s.beta2 * self.v + (1.0 - s.beta2) * tf.square(grad))
        rate = s.learning_rate * tf.sqrt(1.0 - s.beta2 ** self.t) / (1.0 - s.beta1 ** self.t)
        self.image.assign_sub(rate * self.m / (tf.sqrt(self.v) + s.epsilon))
        return tf.stack([total, content, style, tv])

    def step(self) -> tf.Tensor:
        """One Adam step; returns (total, content, style, tv) of the image before it."""
        return self._step()

    def settle(self) -> None:
        """Consider the image after the last step too (no step has evaluated it yet)."""
        parts, _ = self.objective.loss_and_grads(self.image.numpy())
        if parts.total < float(self.best_loss.numpy()):
            self.best_loss.assign(parts.total)
            self.best_image.assign(self.image)

    def best(self) -> np.ndarray:
        """The lowest-loss image so far, in network space."""
        return self.best_image.numpy()


def run_adam(loop: AdamLoop, iterations: int, report_every: Callable[[int], bool],
             on_report: Callable[[Step], None],
             on_step: Callable[[int, Callable[[], float]], None] | None = None) -> AdamLoop:
    """Run `iterations` steps; call `on_report` after step i (1-based) when report_every(i) or
    at the last step. Values are read back from the device only then, or when `on_step`
    (called after every step with a function giving that step's loss) asks for them."""
    began = time.perf_counter()
    for i in range(1, iterations + 1):
        values = loop.step()
        if on_step is not None:
            on_step(i, lambda: float(values[0]))
        if report_every(i) or i == iterations:
            if i == iterations:
                loop.settle()
            parts = Parts(*(float(v) for v in values.numpy()))
            now = time.perf_counter()
            on_report(Step(i, parts, float(loop.best_loss.numpy()), now - began))
            began = now
    return loop
