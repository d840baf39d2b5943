"""Milliseconds for the Keras example's total variation and its gradient: TensorFlow's own
gradient of the formula (three strided-slice gradients) beside the written-out one styleflow
uses (`objective.losses.total_variation_keras`), each in a tf.function, timed in turns.

    python bench/total_variation.py [--sizes 400x300 800x600 2048x1536] [--repeats 50]
"""

from __future__ import annotations

import argparse

import numpy as np

from common import median_seconds  # noqa: F401 - sets up paths and quiet TensorFlow
from cpu import cpu_description
from timing import interleaved_medians, parse_size

import tensorflow as tf

from styleflow.objective.losses import total_variation_keras


def by_autodiff(image):
    """The same formula, left to TensorFlow's gradients."""
    corner = image[:, :-1, :-1, :]
    down = tf.square(corner - image[:, 1:, :-1, :])
    right = tf.square(corner - image[:, :-1, 1:, :])
    return tf.reduce_sum(tf.pow(down + right, 1.25))


def with_gradient(loss):
    @tf.function
    def run(image):
        with tf.GradientTape() as tape:
            tape.watch(image)
            value = loss(image)
        return value, tape.gradient(value, image)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["400x300", "800x600", "2048x1536"],
                        help="WxH")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}")
    print(f"loss and gradient, float32, median of {args.repeats} rounds in turns")
    ours, theirs = with_gradient(total_variation_keras), with_gradient(by_autodiff)
    for text in args.sizes:
        h, w = parse_size(text)
        image = tf.constant(np.random.default_rng(0).normal(0, 60, (1, h, w, 3)), tf.float32)
        timed = interleaved_medians({"autodiff": lambda: theirs(image)[1].numpy(),
                                     "written out": lambda: ours(image)[1].numpy()},
                                    args.repeats, warmup=2)
        want, got = theirs(image)[1].numpy(), ours(image)[1].numpy()
        diff = np.abs(got - want).max() / np.abs(want).max()
        print(f"{text:>10}: TensorFlow's gradient {1e3 * timed['autodiff']:.2f} ms, written "
              f"out {1e3 * timed['written out']:.2f} ms: "
              f"{timed['autodiff'] / timed['written out']:.2f}x (gradients differ by {diff:.1e})",
              flush=True)


if __name__ == "__main__":
    main()
