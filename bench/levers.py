"""Which lever gives what: seconds per loss+gradient evaluation of the Keras example's
objective (full layers, float32, random weights) with TensorFlow's oneDNN kernels on and off
(each in a fresh process: TensorFlow reads the setting once), convolutions through Keras'
Conv2D, through `frozen_conv` (oneDNN's input-gradient kernels) or through those with
Winograd's algorithm in the deeper layers (`winograd`; `winograd-xla` with its tile transforms
by XLA instead of Numba; "pooling apart" with max pooling as layers of its own rather than
in the transforms, `build_extractor(fuse_pooling=False)`), and XLA off or on, all measured
in one run. The `auto` column marks what styleflow picks by default.

To see an AVX2-only CPU's kernels on an AVX-512 machine, cap oneDNN (PyTorch too, for
bench/peer_pytorch.py): `ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python
bench/levers.py`; TensorFlow's own kernels (oneDNN off) are the same on both.

    python bench/levers.py [--sizes 400x300 800x600] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cpu import cpu_description  # noqa: E402
from timing import parse_size, run_child  # noqa: E402

CHILD = r"""
import json
from common import pair, median_seconds
import numpy as np
from styleflow.defaults import FULL_CONTENT_LAYER as C, FULL_STYLE_LAYERS as S
from styleflow.model.machine import transposed_convolutions
from styleflow.model.network import build_extractor
from styleflow.objective.objective import Objective
from styleflow.model.weights import random_weights
weights = random_weights(0).layers
content, style = pair(({h}, {w}))
x = content + np.random.default_rng(0).normal(0, 5, content.shape).astype(np.float32)
rows = []
for convolution in ("keras", "transposed", "winograd-xla", "winograd, pooling apart",
                    "winograd"):
    extractor = build_extractor(weights, [C, *S], convolution=convolution.split(",")[0],
                                fuse_pooling="apart" not in convolution)
    # Compiled by XLA as a whole, Winograd's transforms are XLA's either way.
    for xla in (False,) if convolution.startswith("winograd") and convolution != "winograd" \
            else (False, True):
        objective = Objective(extractor, content, [style], {{C: 1.0}},
                              {{n: 1 / len(S) for n in S}}, 0.025, 1.0, 1.0, jit_compile=xla)
        seconds = median_seconds(lambda: objective.loss_and_grads(x), {repeats})
        rows.append(dict(convolution=convolution, xla=xla, seconds=seconds,
                         loss=objective.loss_and_grads(x)[0].total))
print(json.dumps(dict(rows=rows, auto="winograd" if transposed_convolutions("float32") else "keras")))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["400x300", "800x600"], help="WxH")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}")
    print(f"full layers, float32, random weights, median of {args.repeats}; "
          "vs first: the first row's seconds over this row's")
    print(f"{'size':>9} {'oneDNN':>7} {'convolutions':>22} {'XLA':>4} {'s/eval':>8} "
          f"{'vs first':>9} {'loss diff':>10} {'auto':>5}")
    for text in args.sizes:
        h, w = parse_size(text)
        first = None
        for onednn in ("0", "1"):
            code = CHILD.format(h=h, w=w, repeats=args.repeats)
            result = run_child(code, TF_ENABLE_ONEDNN_OPTS=onednn)
            if isinstance(result, str):
                print(f"{text:>9} {'on' if onednn == '1' else 'off':>7} failed: {result}")
                continue
            for row in result["rows"]:
                first = first or row
                diff = abs(row["loss"] - first["loss"]) / abs(first["loss"])
                # styleflow's default: oneDNN on, its convolution choice, XLA by --jit auto
                # (measured per run; off here marks the plain graph it starts from).
                picked = (onednn == "1" and row["convolution"] == result["auto"]
                          and not row["xla"])
                print(f"{text:>9} {'on' if onednn == '1' else 'off':>7} "
                      f"{row['convolution']:>22} {'on' if row['xla'] else 'off':>4} "
                      f"{row['seconds']:8.3f} {first['seconds'] / row['seconds']:8.2f}x "
                      f"{100 * diff:9.3f}% {'*' if picked else '':>5}", flush=True)


if __name__ == "__main__":
    main()
