"""Peak resident memory of one L-BFGS run (targets + `--evals` loss+gradient evaluations) per image
width, full (or `--layers lite`) VGG19 layers on random weights, each size in a fresh process; next to it the
estimate styleflow uses to refuse sizes that cannot fit.

    python bench/memory.py [--widths 512 1024 2048] [--precision float32 bfloat16] [--evals 12]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r"""
import json, resource, sys
sys.path.insert(0, {root!r})
from styleflow.model.runtime import quiet_tensorflow
quiet_tensorflow()
import numpy as np
from styleflow.defaults import (FULL_CONTENT_LAYER, FULL_STYLE_LAYERS, LITE_CONTENT_LAYER,
                                LITE_STYLE_LAYERS)
from styleflow.optim.lbfgs import Evaluator, iterate_lbfgs
from styleflow.plan.memory import estimate_bytes
from styleflow.model.network import build_extractor, KERAS_INPUT
from styleflow.objective.objective import Objective
from styleflow.model.weights import random_weights
w, h, precision = {w}, {h}, {precision!r}
content_layer, style_layers = ((LITE_CONTENT_LAYER, LITE_STYLE_LAYERS) if {layers!r} == "lite"
                               else (FULL_CONTENT_LAYER, FULL_STYLE_LAYERS))
layers = [content_layer, *style_layers]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rng = np.random.default_rng(0)
content = KERAS_INPUT.preprocess(rng.integers(0, 256, (h, w, 3)).astype(np.uint8))
style = KERAS_INPUT.preprocess(rng.integers(0, 256, (h, w, 3)).astype(np.uint8))
extractor = build_extractor(random_weights(0).layers, layers, dtype=precision)
objective = Objective(extractor, content, [style], {{content_layer: 1.0}},
                      {{n: 1 / len(style_layers) for n in style_layers}}, 0.025, 1.0, 1.0)
for _ in iterate_lbfgs(Evaluator(objective), content, 1, evaluations_per_iteration={evals}):
    pass
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(dict(peak_kb=peak, start_kb=base,
                      estimate=estimate_bytes((h, w), layers, precision))))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--precision", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--layers", choices=("full", "lite"), default="full",
                        help="the default layers of the full or the lite (blocks 1-3) weights")
    parser.add_argument("--evals", type=int, default=12,
                        help="loss+gradient evaluations (L-BFGS keeps 10 correction pairs)")
    args = parser.parse_args()
    print(f"{'size':>10} {'precision':>9} {'peak RSS GB':>12} {'estimate GB':>12}")
    for width in args.widths:
        height = width * 3 // 4
        for precision in args.precision:
            code = CHILD.format(root=str(HERE.parent), w=width, h=height, precision=precision,
                                evals=args.evals, layers=args.layers)
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            size = f"{width}x{height}"
            if proc.returncode != 0:
                tail = (proc.stderr.strip().splitlines() or ["killed"])[-1]
                print(f"{size:>10} {precision:>9} failed: {tail}", flush=True)
                continue
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"{size:>10} {precision:>9} {result['peak_kb'] / 2**20:12.2f} "
                  f"{result['estimate'] / 2**30:12.2f}", flush=True)


if __name__ == "__main__":
    main()
