"""The network's forward and backward pass per megapixel over the whole image and over crops
the size of a tiled run's tiles, timed in turns (round after round, so the machine's drift
falls on all alike): whether a crop runs slower per pixel than the whole image. Random weights
(same speed as ImageNet's), the library's default convolutions (Winograd in the deeper layers
where they suit), a surrogate loss on every loss layer's activations.

    python bench/tile_rate.py [--layers lite|full] [--size 1536x2048] [--crops 800x716 400x716]
                              [--rounds 4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cpu import cpu_description  # noqa: E402

sys.path.insert(0, str(HERE.parent))


def shape(text: str) -> tuple[int, int]:
    rows, cols = text.lower().split("x")
    return int(rows), int(cols)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", choices=("lite", "full"), default="lite")
    parser.add_argument("--size", type=shape, default=(1536, 2048), help="rows x columns")
    parser.add_argument("--crops", type=shape, nargs="+", default=[(800, 716), (400, 716)])
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    from styleflow.model.runtime import quiet_tensorflow

    quiet_tensorflow()
    import numpy as np
    import tensorflow as tf

    from styleflow.defaults import (FULL_CONTENT_LAYER, FULL_STYLE_LAYERS, LITE_CONTENT_LAYER,
                                    LITE_STYLE_LAYERS)
    from styleflow.model.network import build_extractor
    from styleflow.model.weights import random_weights

    content, styles = ((LITE_CONTENT_LAYER, LITE_STYLE_LAYERS) if args.layers == "lite"
                       else (FULL_CONTENT_LAYER, FULL_STYLE_LAYERS))
    extractor = build_extractor(random_weights(1).layers, [content, *styles])

    def forward_backward(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            features = extractor(x, training=False)
            loss = tf.add_n([tf.reduce_sum(tf.square(f)) for f in features.values()])
        return loss, tape.gradient(loss, x)

    rng = np.random.default_rng(0)
    sizes = [args.size, *args.crops]
    inputs, passes = {}, {}
    for size in sizes:  # each traced and run once before the timed rounds
        inputs[size] = tf.constant(rng.normal(0, 50, (1, *size, 3)).astype(np.float32))
        passes[size] = tf.function(forward_backward)
        passes[size](inputs[size])[1].numpy()
    per_mp = {size: [] for size in sizes}
    for _ in range(args.rounds):
        for size in sizes:
            began = time.perf_counter()
            passes[size](inputs[size])[1].numpy()
            per_mp[size].append((time.perf_counter() - began) / (size[0] * size[1] / 1e6))
    print(f"CPU: {cpu_description()}")
    print(f"{args.layers} layers, forward and backward, seconds per megapixel, median of "
          f"{args.rounds} rounds")
    whole = statistics.median(per_mp[args.size])
    for size in sizes:
        rate = statistics.median(per_mp[size])
        label = "whole image" if size == args.size else "crop"
        print(f"{size[0]:>5}x{size[1]:<5} {label:>11}: {rate:.3f} s/MP ({rate / whole:.2f}x the "
              f"whole image's); rounds {' '.join(f'{v:.3f}' for v in per_mp[size])}")


if __name__ == "__main__":
    main()
