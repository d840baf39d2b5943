"""Coarse-to-fine against one size: the time each takes to reach the loss a single-size run
ends at, at the final size (L-BFGS, the Keras example's problem, shipped lite weights,
base5 + ref6). Coarse sizes are counted in the time; only losses at the final size count.

    python bench/scales.py [--width 1024] [--iterations 10] [--scales 1 3 4] [--ratio 0.5]
                           [--coarse 100]
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
IMAGES = ROOT.parent / "shared" / "images"


def trace(stylizer, width: int, iterations: int, scales: int) -> tuple[list, float]:
    """[(seconds since start, loss at the final size)] per final-size evaluation, and the
    seconds the coarse sizes took."""
    began = time.perf_counter()
    coarse_done = [None]
    points = []

    def on_scale(scale):
        if scale.index == scale.count - 1:
            coarse_done[0] = time.perf_counter() - began

    run = stylizer.iter_transfer(IMAGES / "base5.jpg", IMAGES / "ref6.jpg", width=width,
                                 height=width * 3 // 4, iterations=iterations, scales=scales,
                                 on_scale=on_scale)

    def on_evaluation(n, loss):
        if scales == 1 or coarse_done[0] is not None:
            points.append((time.perf_counter() - began, loss))

    run.on_evaluation = on_evaluation
    for _ in run:
        pass
    return points, coarse_done[0] or 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--iterations", type=int, default=10,
                        help="iterations (20 evaluations each) at the final size")
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 3, 4])
    parser.add_argument("--ratio", type=float, default=None, help="size ratio between scales")
    parser.add_argument("--coarse", type=int, default=None,
                        help="evaluations per coarse size")
    args = parser.parse_args()
    from styleflow.cli.common import quiet_tensorflow

    quiet_tensorflow()
    from styleflow import Stylizer, scales

    if args.ratio:
        scales.RATIO = args.ratio
    if args.coarse:
        scales.COARSE_EVALUATIONS["lbfgs"] = args.coarse
    print(f"CPU: {cpu_description()}")
    print(f"L-BFGS, lite weights, {args.width}x{args.width * 3 // 4}, ratio {scales.RATIO}, "
          f"{scales.COARSE_EVALUATIONS['lbfgs']} evaluations per coarse size")
    # One Stylizer: each size's loss is traced once, by whichever run first uses it (a few
    # seconds, against minutes of optimisation).
    stylizer = Stylizer("lite", seed=0, precision="float32", jit="off")
    results = {}
    for n in args.scales:
        points, coarse = trace(stylizer, args.width, args.iterations, n)
        results[n] = (points, coarse)
    target = results[args.scales[0]][0][-1][1]
    base_time = results[args.scales[0]][0][-1][0]
    print(f"target: the {args.scales[0]}-scale run's final loss {target:.4e} "
          f"after {base_time:.1f} s")
    for n, (points, coarse) in results.items():
        reached = next((t for t, loss in points if loss <= target), None)
        final = points[-1][1]
        if reached is None:
            print(f"scales {n}: not reached in {points[-1][0]:.1f} s (final loss {final:.4e}, "
                  f"{final / target:.3f}x the target); coarse sizes {coarse:.1f} s", flush=True)
        else:
            evals = sum(1 for t, _ in points if t <= reached)
            print(f"scales {n}: reached in {reached:.1f} s ({base_time / reached:.2f}x sooner; "
                  f"coarse sizes {coarse:.1f} s, then {evals} evaluations at full size); "
                  f"final loss {final:.4e}", flush=True)


if __name__ == "__main__":
    main()
