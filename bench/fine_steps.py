"""Adam at the finer sizes of a coarse-to-fine run: each size's loss step by step, from the
upsampled image it starts from, for several warm-up lengths of the fine rate
(`optim.scales.FINE_WARMUP_STEPS`); shipped lite weights, base5 + ref6, neural-style's problem
from noise. Every length runs the whole command's path (`Stylizer.iter_stylize` with `scales`),
so a finer coarse size starts from what the warm-up left at the size before.

    python bench/fine_steps.py [--width 1024] [--scales 3] [--steps 10] [--warmups 0 5 10]
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


def run_once(stylizer, width: int, count: int, steps: int) -> dict:
    """Losses per size: {size: [loss before each step]}, the output's loss and seconds."""
    losses: dict = {}
    current = [None]

    def on_evaluation(n, loss):
        losses.setdefault(current[0], []).append(loss)

    def on_scale(scale):
        # Called as each coarse size ends (index from 1): the next size's losses follow.
        current[0] = None if scale.index == scale.count - 1 else scale.index

    current[0] = 0 if count > 1 else None
    began = time.perf_counter()
    run = stylizer.iter_stylize(IMAGES / "base5.jpg", [IMAGES / "ref6.jpg"], width=width,
                                iterations=steps, scales=count, on_scale=on_scale)
    run.on_evaluation = on_evaluation
    for _ in run:
        pass
    result = run.result()
    return {"losses": losses, "output": result.parts.total,
            "seconds": time.perf_counter() - began}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--scales", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="Adam steps at the final size")
    parser.add_argument("--warmups", type=int, nargs="+", default=[0, 5, 10])
    args = parser.parse_args()
    from styleflow.model.runtime import quiet_tensorflow

    quiet_tensorflow()
    from styleflow import Stylizer
    from styleflow.optim import scales

    print(f"CPU: {cpu_description()}")
    print(f"Adam, lite weights, {args.width}x{args.width * 3 // 4}, {args.scales} scales, "
          f"coarse steps {scales.budgets('adam', args.scales)}, then {args.steps}; fine rate "
          f"{scales.FINE_LEARNING_RATE} of the run's", flush=True)
    stylizer = Stylizer("lite", seed=0, precision="float32", jit="off")
    for warmup in args.warmups:
        scales.FINE_WARMUP_STEPS = warmup
        out = run_once(stylizer, args.width, args.scales, args.steps)
        print(f"warm-up {warmup} steps ({out['seconds']:.0f} s):", flush=True)
        for size, values in out["losses"].items():
            name = ("final size" if size is None
                    else f"size {size + 1}" + (" (from noise)" if size == 0 else ""))
            start, best = values[0], min(values)
            trail = " ".join(f"{v:.3g}" for v in values[:12])
            print(f"  {name}: start {start:.4e}, lowest "
                  f"{best:.4e} ({best / start:.3f}x), last {values[-1]:.4e}; "
                  f"{trail}{' ...' if len(values) > 12 else ''}", flush=True)
        print(f"  output's loss {out['output']:.4e}", flush=True)


if __name__ == "__main__":
    main()
