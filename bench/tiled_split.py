"""The tiled loss split at a pooling layer (`objective.tiled_loss` with a split: the shallow
layers over tiles, the deep ones over the whole map there) against the one pass and the tiles
of the whole network, in one run: each loss part and the network's gradient compared, and
all three timed in turns.

    python bench/tiled_split.py [--size 2048x1536] [--split block2_pool] [--core 512]
                                [--max-memory 4] [--layers full|lite] [--repeats 2]
                                [--only-split]

`--max-memory` plans the whole network's tiles (plan.budget, the split left out) for the
comparison; `--only-split` times the split alone, so that its peak resident memory is the
process's.
"""

from __future__ import annotations

import argparse

import numpy as np

from common import CONTENT_WEIGHT, STYLE_WEIGHT, TV_WEIGHT, layer_choice, pair
from cpu import cpu_description
from timing import interleaved_medians, median_seconds, parse_size

import tensorflow as tf

from styleflow.model.network import build_extractor
from styleflow.model.weights import random_weights
from styleflow.objective import losses
from styleflow.objective.objective import Objective
from styleflow.plan import budget


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
    content_layer, style_layers = layer_choice(args.layers)
    layers = [content_layer, *style_layers]
    extractor = build_extractor(random_weights(0).layers, layers)
    content, style = pair((h, w))
    image = content + np.random.default_rng(0).normal(0, 5, content.shape).astype(np.float32)
    common = (extractor, content, [style], {content_layer: 1.0},
              {n: 1 / len(style_layers) for n in style_layers}, CONTENT_WEIGHT, STYLE_WEIGHT,
              TV_WEIGHT)
    saved, budget.SPLITS = budget.SPLITS, ()  # the whole network's tiles, for comparison
    layout = budget.choose((h, w), layers, [content_layer], "float32", "adam",
                           max_memory=args.max_memory, resident=0)
    budget.SPLITS = saved
    if args.only_split:
        # Targets over today's tiles, so that no whole-image pass sets the peak.
        split = Objective(*common, tile=layout.tile or (h, w), forward_tile=layout.forward_tile,
                          split=(args.split, args.core))
        seconds = median_seconds(lambda: split.loss_and_grads(image), args.repeats)
        print(f"CPU: {cpu_description()}")
        print(f"{args.size}, layers {args.layers}, split at {args.split}, shallow cores "
              f"{args.core} px ({len(split._tiled.tiles)} tiles): {seconds:.2f} s/evaluation (median "
              f"of {args.repeats}); peak resident {resident_peak_gb():.2f} GiB", flush=True)
        return
    whole = Objective(*common)
    tiled = Objective(*common, graph=whole.graph, tile=layout.tile or (h, w),
                      forward_tile=layout.forward_tile)
    split = Objective(*common, graph=whole.graph, split=(args.split, args.core))
    print(f"CPU: {cpu_description()}")
    planned = (f"cores {layout.tile}, forward {layout.forward_tile}" if layout.tile
               else "one tile (the image fits)")
    print(f"{args.size}, layers {args.layers}, float32, random weights; today's tiles for "
          f"{args.max_memory:g} GB: {planned}; split at "
          f"{args.split}, shallow cores {args.core} px ({len(split._tiled.tiles)} tiles)")
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
