"""Coarse-to-fine: optimise at reduced sizes first, each result upsampled (bicubic) to start the
next size, ending at the requested one. The coarse sizes settle the large-scale structure for a
fraction of the cost, so the full size needs only a few evaluations to reach the loss a
single-size run reaches (`bench/scales.py` measures the ratio and budgets below)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Each size is this fraction of the next (per side): a quarter of the pixels, so a coarse
# evaluation costs about a quarter of the next size's.
RATIO = 0.5
# Evaluations (L-BFGS) or steps (Adam) spent at the coarsest size; each finer coarse size gets
# half as many as the one before (it costs four times as much per evaluation, and starts from
# settled structure), but never fewer than MIN_COARSE_EVALUATIONS.
COARSE_EVALUATIONS = {"lbfgs": 100, "adam": 200}
MIN_COARSE_EVALUATIONS = 20
# Adam's learning rate at every size after the coarsest, as a fraction of the run's. Each finer
# size starts from a settled, upsampled image: full-rate first steps (about lr per pixel, fresh
# moments) add noise that takes many steps to remove (docs/large-images.md has the figures).
FINE_LEARNING_RATE = 0.3
# ... reached over this many steps (optim.adam.AdamSettings.warmup; 0: from the first step).
# Measured at 1024 px (bench/fine_steps.py), a warm-up only slowed the descent; in the 4096 px
# print the first full-rate step at 2048 and 4096 px raised the loss of the upsampled start
# 1.5x and 3x, which a warm-up may prevent there: docs/large-images.md has the figures.
FINE_WARMUP_STEPS = 0


def budgets(optimiser: str, count: int) -> list[int]:
    """Evaluations or steps for each of the `count` - 1 coarse sizes, coarsest first."""
    first = COARSE_EVALUATIONS[optimiser]
    return [max(min(first, MIN_COARSE_EVALUATIONS), first >> k) for k in range(count - 1)]


@dataclass(frozen=True)
class Scale:
    """One finished coarse size: which (1-based, of `count` sizes in all), its (h, w), the
    evaluations or steps it took, its final loss parts and seconds."""

    index: int
    count: int
    size: tuple[int, int]
    evaluations: int
    parts: object
    seconds: float


def sizes(final: tuple[int, int], count: int, ratio: float = RATIO) -> list[tuple[int, int]]:
    """(h, w) of the `count` sizes, coarsest first, the last being `final`."""
    if count < 1:
        raise ValueError("count must be at least 1")
    h, w = final
    out = []
    for k in range(count - 1, 0, -1):
        f = ratio ** k
        out.append((max(1, int(round(h * f))), max(1, int(round(w * f)))))
    out.append((h, w))
    return out


def upsample(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A network-space image (1, h, w, 3) resized bicubically to (1, *size, 3), float32."""
    import tensorflow as tf

    image = np.asarray(image, np.float32).reshape((1, *np.shape(image)[-3:]))
    if image.shape[1:3] == tuple(size):
        return image
    return tf.image.resize(image, size, method="bicubic").numpy().astype(np.float32)
