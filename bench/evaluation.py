"""Seconds per loss+gradient evaluation: styleflow's engine (float32 and bfloat16) vs the
original batch-of-three design, on random weights (same speed as ImageNet's), and GFLOP/s
against a large float32 matmul measured in the same run.

    python bench/evaluation.py [--sizes 400x300 800x600] [--repeats 5] [--no-bf16]
"""

from __future__ import annotations

import argparse

import numpy as np

from common import OriginalDesign, conv_gflop, matmul_gflops, median_seconds, pair
from cpu import cpu_description
from timing import parse_size

import tensorflow as tf

from styleflow.defaults import FULL_CONTENT_LAYER, FULL_STYLE_LAYERS
from styleflow.model.machine import onednn_enabled
from styleflow.model.layout import deepest
from styleflow.model.network import build_extractor
from styleflow.objective.objective import Objective
from styleflow.model.weights import random_weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["400x300", "800x600"], help="WxH")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-bf16", action="store_true", help="skip the bfloat16 column")
    args = parser.parse_args()

    layers = [FULL_CONTENT_LAYER, *FULL_STYLE_LAYERS]
    weights = random_weights(0).layers
    precisions = ["float32"] + ([] if args.no_bf16 else ["bfloat16"])
    extractors = {p: build_extractor(weights, layers, dtype=p) for p in precisions}
    peak = matmul_gflops()
    print(f"CPU: {cpu_description()}")
    print(f"TensorFlow {tf.__version__}: oneDNN {'on' if onednn_enabled() else 'off'}, "
          f"XLA off (plain tf.function; bench/peer_pytorch.py compares with PyTorch)")
    print(f"large float32 matmul: {peak:.0f} GFLOP/s (the practical ceiling here); GFLOP/s "
          "below counts a direct convolution's work, so Winograd's layers can take it above")
    header = (f"{'size':>9} {'original s/eval':>16} {'ours s/eval':>12} {'speed-up':>9} "
              f"{'GFLOP/s':>8} {'% of matmul':>12}")
    if not args.no_bf16:
        header += f" {'bf16 s/eval':>12} {'bf16 vs f32':>12} {'bf16 loss diff':>15}"
    print(header)
    for text in args.sizes:
        h, w = parse_size(text)
        content, style = pair((h, w))
        x = content + np.random.default_rng(0).normal(0, 5, content.shape).astype(np.float32)
        seconds, totals = {}, {}
        for precision, extractor in extractors.items():
            ours = Objective(extractor, content, [style], {FULL_CONTENT_LAYER: 1.0},
                             {n: 1 / len(FULL_STYLE_LAYERS) for n in FULL_STYLE_LAYERS},
                             0.025, 1.0, 1.0)
            seconds[precision] = median_seconds(lambda: ours.loss_and_grads(x), args.repeats)
            totals[precision] = ours.loss_and_grads(x)[0].total
        original = OriginalDesign(extractors["float32"], content, style, FULL_CONTENT_LAYER,
                                  FULL_STYLE_LAYERS)
        flat = x.astype(np.float64).ravel()
        t_orig = median_seconds(lambda: original(flat), args.repeats)
        t32 = seconds["float32"]
        gflop = conv_gflop((h, w), deepest(layers))
        line = (f"{text:>9} {t_orig:16.3f} {t32:12.3f} {t_orig / t32:8.2f}x "
                f"{gflop / t32:8.0f} {100 * gflop / t32 / peak:11.0f}%")
        if not args.no_bf16:
            tb = seconds["bfloat16"]
            diff = abs(totals["bfloat16"] - totals["float32"]) / totals["float32"]
            line += f" {tb:12.3f} {t32 / tb:11.2f}x {100 * diff:14.2f}%"
        print(line, flush=True)


if __name__ == "__main__":
    main()
