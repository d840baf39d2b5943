"""Does L-BFGS reach float32's loss when the VGG pass runs in bfloat16? The Keras example's
problem (neural_style_transfer.py's defaults, shipped lite weights, base5 + ref6), the same
iterations in each precision, each result then scored by the float32 objective (rounded to
the same uint8 picture both ways), with whether and why L-BFGS stopped early.

    python bench/precision_lbfgs.py [--width 400] [--iterations 10]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cpu import cpu_description  # noqa: E402

ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
IMAGES = ROOT / "images"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=400)
    parser.add_argument("--iterations", type=int, default=10)
    args = parser.parse_args()
    from styleflow import Stylizer
    from styleflow.model.machine import native_bfloat16

    print(cpu_description())
    native, why = native_bfloat16()
    print(f"bfloat16 {'native' if native else 'emulated'} here ({why})")
    content, style = IMAGES / "base5.jpg", IMAGES / "ref6.jpg"
    scorer = Stylizer("lite", precision="float32", seed=0)
    rows = {}
    for precision in ("float32", "bfloat16"):
        stylizer = Stylizer("lite", precision=precision, seed=0)
        run = stylizer.iter_transfer(content, style, iterations=args.iterations,
                                     width=args.width)
        began = time.perf_counter()
        for _ in run:
            pass
        seconds = time.perf_counter() - began
        result = run.result()
        # The float32 objective's loss of the written picture (uint8, as both runs save it).
        probe = scorer.iter_transfer(content, style, iterations=1, width=args.width,
                                     init=result.array)
        parts, _ = probe.problem.objective.loss_and_grads(probe.problem.start)
        rows[precision] = (parts.total, result.evaluations, seconds, run.stopped)
    base = rows["float32"]
    print(f"{'precision':>10} {'float32 loss':>14} {'vs float32':>11} {'evaluations':>12} "
          f"{'seconds':>8}  stopped early")
    for precision, (loss, evaluations, seconds, stopped) in rows.items():
        said = "no" if stopped is None else f"after {stopped[0]} iterations: {stopped[1]}"
        print(f"{precision:>10} {loss:14.6e} {loss / base[0]:10.4f}x {evaluations:12d} "
              f"{seconds:8.1f}  {said}")


if __name__ == "__main__":
    main()
