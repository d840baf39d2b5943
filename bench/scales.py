"""Coarse-to-fine against one size: the time each takes to reach the loss a single-size run
ends at, at the final size (shipped lite weights, base5 + ref6; L-BFGS on the Keras example's
problem, or Adam on neural-style's from noise). Coarse sizes are counted in the time; only
losses at the final size count. Runs with coarse sizes stop once they reach the target.

    python bench/scales.py [--method lbfgs|adam] [--width 1024] [--iterations N]
                           [--scales 1 3 4] [--ratio 0.5] [--coarse EVALS]
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


def trace(stylizer, method: str, width: int, iterations: int, scales: int,
          target: float | None = None) -> tuple[list, float]:
    """[(seconds since start, loss at the final size)] per final-size evaluation or step, and
    the seconds the coarse sizes took; stops early once `target` is reached."""
    began = time.perf_counter()
    coarse_done = [None]
    points = []

    def on_scale(scale):
        if scale.index == scale.count - 1:
            coarse_done[0] = time.perf_counter() - began

    content, style = IMAGES / "base5.jpg", IMAGES / "ref6.jpg"
    if method == "lbfgs":
        run = stylizer.iter_transfer(content, style, width=width, height=width * 3 // 4,
                                     iterations=iterations, scales=scales, on_scale=on_scale)
    else:
        run = stylizer.iter_stylize(content, [style], width=width, iterations=iterations,
                                    scales=scales, on_scale=on_scale)

    def on_evaluation(n, loss):
        if scales == 1 or coarse_done[0] is not None:
            points.append((time.perf_counter() - began, loss))

    run.on_evaluation = on_evaluation
    for _ in run:
        if target is not None and points and min(loss for _, loss in points) <= target:
            break
    return points, coarse_done[0] or 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=("lbfgs", "adam"), default="lbfgs")
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--iterations", type=int, default=None,
                        help="of the single-size run: L-BFGS iterations (20 evaluations each, "
                             "default 10) or Adam steps (default 300)")
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 3, 4])
    parser.add_argument("--ratio", type=float, default=None, help="size ratio between scales")
    parser.add_argument("--coarse", type=int, default=None,
                        help="evaluations or steps at the coarsest size")
    args = parser.parse_args()
    iterations = args.iterations or (10 if args.method == "lbfgs" else 300)
    from styleflow.model.runtime import quiet_tensorflow

    quiet_tensorflow()
    from styleflow import Stylizer
    from styleflow.optim import scales

    if args.ratio:
        scales.RATIO = args.ratio
    if args.coarse:
        scales.COARSE_EVALUATIONS[args.method] = args.coarse
    print(f"CPU: {cpu_description()}")
    print(f"{args.method}, lite weights, {args.width}x{args.width * 3 // 4}, ratio "
          f"{scales.RATIO}, coarse budgets {scales.budgets(args.method, max(args.scales))}",
          flush=True)
    # One Stylizer: each size's loss is traced once, by whichever run first uses it (a few
    # seconds, against minutes of optimisation).
    stylizer = Stylizer("lite", seed=0, precision="float32", jit="off")
    first, *others = args.scales
    points, _ = trace(stylizer, args.method, args.width, iterations, first)
    target = min(loss for _, loss in points)
    base_time = next(t for t, loss in points if loss <= target)
    print(f"scales {first}: best loss {target:.4e} after {base_time:.1f} s "
          f"({len(points)} {'evaluations' if args.method == 'lbfgs' else 'steps'}): the target",
          flush=True)
    for n in others:
        points, coarse = trace(stylizer, args.method, args.width, iterations, n, target)
        reached = next((t for t, loss in points if loss <= target), None)
        best = min(loss for _, loss in points)
        if reached is None:
            print(f"scales {n}: not reached in {points[-1][0]:.1f} s (best loss {best:.4e}, "
                  f"{best / target:.3f}x the target); coarse sizes {coarse:.1f} s", flush=True)
        else:
            count = sum(1 for t, _ in points if t <= reached)
            print(f"scales {n}: reached in {reached:.1f} s, {base_time / reached:.2f}x sooner "
                  f"(coarse sizes {coarse:.1f} s, then {count} at full size)", flush=True)


if __name__ == "__main__":
    main()
