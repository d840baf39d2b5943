"""Seconds per loss+gradient evaluation with TensorFlow running one operation at a time (what
`import styleflow` asks for: TF_NUM_INTEROP_THREADS=1) and with TensorFlow's own default (as
many at once as there are cores: TF_NUM_INTEROP_THREADS=0), each in fresh processes taken in
turns, so both meet the same drift of a shared machine. Full layers, random weights, float32.

    python bench/inter_op.py [--sizes 400x300 800x600] [--rounds 3] [--evals 8]
"""

from __future__ import annotations

import argparse
import statistics

from cpu import cpu_description
from timing import parse_size, run_child

CHILD = r"""
import json
import numpy as np
from common import pair
from timing import median_seconds
from styleflow.defaults import FULL_CONTENT_LAYER, FULL_STYLE_LAYERS
from styleflow.model.network import build_extractor
from styleflow.model.weights import random_weights
from styleflow.objective.objective import Objective
h, w, evals = {h}, {w}, {evals}
layers = [FULL_CONTENT_LAYER, *FULL_STYLE_LAYERS]
content, style = pair((h, w))
x = content + np.random.default_rng(0).normal(0, 5, content.shape).astype(np.float32)
objective = Objective(build_extractor(random_weights(0).layers, layers), content, [style],
                      {{FULL_CONTENT_LAYER: 1.0}},
                      {{n: 1 / len(FULL_STYLE_LAYERS) for n in FULL_STYLE_LAYERS}},
                      0.025, 1.0, 1.0)
seconds = median_seconds(lambda: objective.loss_and_grads(x), evals, warmup=2)
print(json.dumps(dict(seconds=seconds)))
"""

SETTINGS = {"one at a time (styleflow)": "1", "TensorFlow's default": "0"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["400x300", "800x600"], help="WxH")
    parser.add_argument("--rounds", type=int, default=3,
                        help="processes per setting, taken in turns")
    parser.add_argument("--evals", type=int, default=8, help="timed evaluations per process")
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}")
    print(f"full layers, float32, random weights; median of {args.evals} evaluations per "
          f"process, median over {args.rounds} processes per setting, in turns")
    for text in args.sizes:
        h, w = parse_size(text)
        seconds = {name: [] for name in SETTINGS}
        for _ in range(args.rounds):
            for name, value in SETTINGS.items():
                got = run_child(CHILD.format(h=h, w=w, evals=args.evals),
                                TF_NUM_INTEROP_THREADS=value)
                if isinstance(got, str):
                    raise SystemExit(f"{text}, {name}: {got}")
                seconds[name].append(got["seconds"])
        one, default = (statistics.median(seconds[name]) for name in SETTINGS)
        print(f"{text:>9}: one at a time {one:.3f} s/eval, TensorFlow's default {default:.3f} "
              f"s/eval: {default / one:.2f}x", flush=True)


if __name__ == "__main__":
    main()
