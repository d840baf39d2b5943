"""Where Winograd's convolution pays: each VGG19 layer's forward and backward pass (loss =
Σ activations · r, gradient with respect to the input) through oneDNN's direct kernels
(`frozen_conv`) and through Winograd's F(4x4, 3x3) (`winograd`), at the map size an image of
the given size reaches there, measured in one run. The `rule` column marks the layers
styleflow convolves by Winograd in an untiled pass (`winograd.convolves`); `max diff`
is the largest difference of the layer's outputs over the largest output. Winograd runs twice:
with its tile transforms by Numba (styleflow's default, `winograd_kernels`) and by XLA (`XLA
ms`; `Numba gain` is XLA's time over Numba's, the same bits either way). Last, per size, what
Winograd costs once: the first loss+gradient evaluation of the full objective (tracing, and for
Winograd its XLA compilations), each in a fresh process.

With `ONEDNN_MAX_CPU_ISA=AVX2` both sides' matrix products run oneDNN's AVX2 kernels, as on
an AVX2-only CPU (the transforms, memory-bound passes, are compiled for this CPU either way).

    python bench/winograd.py [--sizes 400x300 800x600] [--repeats 5]
"""

from __future__ import annotations

import argparse

import numpy as np

from common import median_seconds  # noqa: F401 - sets up paths and quiet TensorFlow
from cpu import cpu_description
from timing import parse_size, run_child

import tensorflow as tf

from styleflow.model import winograd
from styleflow.model.frozen_conv import make_layer
from styleflow.model.layout import conv_maps


FIRST = r"""
import json, time
import numpy as np
from common import pair
from styleflow.defaults import FULL_CONTENT_LAYER as C, FULL_STYLE_LAYERS as S
from styleflow.model.network import build_extractor
from styleflow.objective.objective import Objective
from styleflow.model.weights import random_weights
content, style = pair(({h}, {w}))
extractor = build_extractor(random_weights(0).layers, [C, *S], convolution={convolution!r})
objective = Objective(extractor, content, [style], {{C: 1.0}}, {{n: 0.2 for n in S}}, 0.025, 1, 1)
began = time.perf_counter()
objective.loss_and_grads(content)
first = time.perf_counter() - began
began = time.perf_counter()
objective.loss_and_grads(content)
print(json.dumps(dict(first=first, second=time.perf_counter() - began)))
"""


def step(layer):
    @tf.function
    def run(x, r):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x) * r)
        return tape.gradient(loss, x)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["400x300", "800x600"], help="WxH")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}")
    print(f"forward + backward per layer, float32, median of {args.repeats}; "
          "speed-up: direct seconds over Winograd's")
    print(f"{'size':>9} {'layer':>13} {'map':>9} {'channels':>9} {'direct ms':>10} "
          f"{'Winograd ms':>12} {'speed-up':>9} {'XLA ms':>8} {'Numba gain':>11} "
          f"{'max diff':>9} {'rule':>5}")
    rng = np.random.default_rng(0)
    for text in args.sizes:
        h, w = parse_size(text)
        total = {"direct": 0.0, "winograd": 0.0, "rule": 0.0, "rule_xla": 0.0}
        for name, lh, lw, cin, cout in conv_maps((h, w)):
            kernel = (rng.normal(size=(3, 3, cin, cout)) / np.sqrt(9 * cin)).astype(np.float32)
            bias = (0.1 * rng.normal(size=cout)).astype(np.float32)
            x = tf.constant(rng.normal(size=(1, lh, lw, cin)).astype(np.float32))
            r = tf.constant(rng.normal(size=(1, lh, lw, cout)).astype(np.float32))
            direct_layer = make_layer(kernel, bias, name)
            direct = step(direct_layer)
            # Forced for every layer (the rule's thresholds set aside) to show where it pays.
            saved = (winograd.MIN_IN_CHANNELS, winograd.MIN_PIXELS, winograd.MIN_OUT_CHANNELS)
            winograd.MIN_IN_CHANNELS = winograd.MIN_PIXELS = winograd.MIN_OUT_CHANNELS = 0
            try:
                fast_layer = make_layer(kernel, bias, name, winograd=True)
                fast = step(fast_layer)
                ms = {"winograd": 1e3 * median_seconds(lambda: fast(x, r).numpy(), args.repeats)}
                got = fast_layer(x).numpy()
                xla = step(make_layer(kernel, bias, name, winograd=True, transforms="xla"))
                ms["xla"] = 1e3 * median_seconds(lambda: xla(x, r).numpy(), args.repeats)
            finally:
                (winograd.MIN_IN_CHANNELS, winograd.MIN_PIXELS,
                 winograd.MIN_OUT_CHANNELS) = saved
            ms["direct"] = 1e3 * median_seconds(lambda: direct(x, r).numpy(), args.repeats)
            want = direct_layer(x).numpy()
            diff = np.abs(got - want).max() / np.abs(want).max()
            picked = winograd.convolves(lh, lw, cin, cout,
                                        winograd.narrow_pays(lh, lw, cin, cout))
            total["direct"] += ms["direct"]
            total["winograd"] += ms["winograd"]
            total["rule"] += ms["winograd" if picked else "direct"]
            # With XLA's transforms block1_conv2 stays direct (`winograd.narrow`).
            picked_xla = winograd.convolves(lh, lw, cin, cout, narrow_too=False)
            total["rule_xla"] += ms["xla" if picked_xla else "direct"]
            print(f"{text:>9} {name:>13} {f'{lw}x{lh}':>9} {f'{cin}>{cout}':>9} "
                  f"{ms['direct']:10.1f} {ms['winograd']:12.1f} "
                  f"{ms['direct'] / ms['winograd']:8.2f}x {ms['xla']:8.1f} "
                  f"{ms['xla'] / ms['winograd']:10.2f}x {diff:9.1e} {'*' if picked else '':>5}",
                  flush=True)
        print(f"{text:>9} {'all layers':>13} {'':>9} {'':>9} {total['direct']:10.1f} "
              f"{total['winograd']:12.1f}; by the rule {total['rule']:.1f} ms, "
              f"{total['direct'] / total['rule']:.2f}x (with XLA's transforms "
              f"{total['rule_xla']:.1f} ms: Numba's {total['rule_xla'] / total['rule']:.2f}x)",
              flush=True)
        first = {}
        for convolution in ("transposed", "winograd-xla", "winograd"):
            result = run_child(FIRST.format(h=h, w=w, convolution=convolution))
            first[convolution] = (result if isinstance(result, str) else
                                  f"{result['first']:.2f} s (then {result['second']:.2f} s)")
        print(f"{text:>9} first evaluation of the objective: direct {first['transposed']}, "
              f"Winograd {first['winograd']} (XLA's transforms {first['winograd-xla']})",
              flush=True)


if __name__ == "__main__":
    main()
