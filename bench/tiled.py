"""Large outputs in a memory budget: peak resident memory and seconds per evaluation at several
sizes with `--max-memory` (exact tiles where the whole image does not fit), beside the plain
one-pass run where that fits the machine; each run in a fresh process, full VGG19 layers on
random weights (same speed as ImageNet's), base5 + ref6.

    python bench/tiled.py [--widths 1024 2048 4096] [--max-memory 4] [--method adam]
                          [--evals 4]

The first evaluation (tracing, targets) is not timed; the median of the others is printed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cpu import cpu_description  # noqa: E402

CHILD = r"""
import json, resource, statistics, sys, time
sys.path.insert(0, {root!r})
from styleflow.model.runtime import quiet_tensorflow
quiet_tensorflow()
from styleflow import Stylizer
images = {images!r}
stylizer = Stylizer("random", seed=0, precision="float32", jit="off")
kw = dict(max_memory={budget!r}, iterations={evals})
began = time.perf_counter()
if {method!r} == "adam":
    run = stylizer.iter_stylize(images + "/base5.jpg", images + "/ref6.jpg", width={w}, **kw)
else:
    run = stylizer.iter_transfer(images + "/base5.jpg", images + "/ref6.jpg", width={w},
                                 height={h}, **kw)
prepared = time.perf_counter() - began
marks = [time.perf_counter()]
def tick(n, loss):
    marks.append(time.perf_counter())
run.on_evaluation = tick
for _ in run:
    pass
steps = [b - a for a, b in zip(marks, marks[1:])]
print(json.dumps(dict(peak_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      per_eval=statistics.median(steps[1:]), evals=len(steps),
                      prepared=prepared, layout=run.memory_report)))
"""


def measure(width: int, budget: float | None, method: str, evals: int) -> dict | str:
    height = width * 3 // 4
    code = CHILD.format(root=str(HERE.parent), images=str(HERE.parent.parent / "shared" /
                                                           "images"),
                        w=width, h=height, budget=budget, method=method, evals=evals)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        return (proc.stderr.strip().splitlines() or ["killed"])[-1]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--max-memory", type=float, default=4.0)
    parser.add_argument("--method", choices=("adam", "lbfgs"), default="adam",
                        help="adam (neural_style.py; its state fits 4 GB at 4096 px) or lbfgs")
    parser.add_argument("--evals", type=int, default=4)
    parser.add_argument("--untiled-up-to", type=int, default=2048,
                        help="also run the plain one-pass run up to this width")
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}")
    print(f"{args.method}, full layers, random weights, budget {args.max_memory:g} GB")
    print(f"{'size':>10} {'run':>9} {'peak RSS GB':>11} {'x budget':>8} {'s/eval':>8}  layout")
    per_eval = {}
    for width in args.widths:
        size = f"{width}x{width * 3 // 4}"
        runs = [("budget", args.max_memory)]
        if width <= args.untiled_up_to:
            runs.append(("one pass", None))
        for label, budget in runs:
            result = measure(width, budget, args.method, args.evals)
            if isinstance(result, str):
                print(f"{size:>10} {label:>9} failed: {result}", flush=True)
                continue
            peak = result["peak_kb"] / 2**20
            ratio = f"{peak / args.max_memory:8.2f}" if budget else f"{'':>8}"
            per_eval[width, label] = result["per_eval"]
            print(f"{size:>10} {label:>9} {peak:11.2f} {ratio} {result['per_eval']:8.2f}  "
                  f"{result['layout']}", flush=True)
        if (width, "budget") in per_eval and (width, "one pass") in per_eval:
            print(f"{size:>10} tiled / one-pass s/eval: "
                  f"{per_eval[width, 'budget'] / per_eval[width, 'one pass']:.2f}", flush=True)


if __name__ == "__main__":
    main()
