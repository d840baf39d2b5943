"""Large outputs in a memory budget: peak resident memory and seconds per evaluation at several
sizes with `--max-memory` (exact tiles where the whole image does not fit), beside the plain
one-pass run where that fits the machine; each run in a fresh process, random weights (same
speed as ImageNet's), base5 + ref6. Each `--runs` item is layers-method: full layers with Adam
(neural_style.py's problem) and lite layers (blocks 1-3) with L-BFGS (the Keras example's) by
default; tiled / one-pass is printed per size and run from those separate processes and,
where the budget's run is tiled, from a third process that builds both layouts' objectives and
times their evaluations (loss and gradient, no optimiser step) in turns, one untimed round
then `--evals` rounds, so that both meet the same drift of a shared machine.

    python bench/tiled.py [--widths 1024 2048 4096] [--max-memory 4] [--runs full-adam lite-lbfgs]
                          [--evals 4] [--untiled-up-to 2048] [--no-alternate]

`--max-memory 0` gives the runs no budget of their own (the library's default: the memory
available), tiled only where that requires. In the separate processes the first evaluation
(tracing, targets) is not timed; the median of the others is printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cpu import cpu_description  # noqa: E402
from timing import run_child  # noqa: E402

# What both kinds of child process start with: `make_run(budget, steps)` prepares the run's
# problem (Adam's `steps` steps, or one L-BFGS iteration) in `budget` GB (None: no budget).
SETUP = r"""
import json, resource, statistics, time
from styleflow.model.runtime import quiet_tensorflow
quiet_tensorflow()
from styleflow import Stylizer
from styleflow.defaults import LITE_CONTENT_LAYER, LITE_STYLE_LAYERS
from timing import interleaved_medians
images, evals, lite = {images!r}, {evals}, {lite!r}
stylizer = Stylizer("random", seed=0, precision="float32", jit="off")
def make_run(budget, steps):
    kw = dict(max_memory=budget)
    if {method!r} == "adam":
        if lite:
            kw.update(content_layers=[LITE_CONTENT_LAYER], style_layers=list(LITE_STYLE_LAYERS))
        return stylizer.iter_stylize(images + "/base5.jpg", images + "/ref6.jpg", width={w},
                                     iterations=steps, **kw)
    if lite:
        kw.update(content_layer=LITE_CONTENT_LAYER, style_layers=list(LITE_STYLE_LAYERS))
    return stylizer.iter_transfer(images + "/base5.jpg", images + "/ref6.jpg", width={w},
                                  height={h}, iterations=1, **kw)
"""

CHILD = SETUP + r"""
began = time.perf_counter()
# Adam: one step more than timed, as the last step also evaluates the image after it (Adam's
# settle), which would count two evaluations as one.
run = make_run({budget!r}, evals + 1)
prepared = time.perf_counter() - began
marks = [time.perf_counter()]
def tick(n, loss):
    marks.append(time.perf_counter())
    if len(marks) > evals:  # L-BFGS's iteration is 20 evaluations: stop after `evals`
        raise KeyboardInterrupt
run.on_evaluation = tick
try:
    for _ in run:
        pass
except KeyboardInterrupt:
    pass
steps = [b - a for a, b in zip(marks, marks[1:])]
print(json.dumps(dict(peak_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      per_eval=statistics.median(steps[1:]), first=steps[0], evals=len(steps),
                      prepared=prepared, layout=run.memory_report,
                      tiled=run.problem.objective.tiled)))
"""

# Both layouts' objectives in one process, their evaluations (loss and gradient of the same
# start image) timed in turns: each meets the same drift of a shared machine, which the two
# fresh processes above, run one after the other, do not.
ALTERNATE = SETUP + r"""
tiled, whole = make_run({budget!r}, 1).problem, make_run(None, 1).problem
assert tiled.objective.tiled and not whole.objective.tiled, (
    "the budget's layout is one pass: nothing to compare")
medians = interleaved_medians(
    {{"tiled": lambda: tiled.objective.loss_and_grads(tiled.start),
     "one pass": lambda: whole.objective.loss_and_grads(tiled.start)}},
    repeats=evals, warmup=1)
print(json.dumps(medians))
"""


def _child(code: str, width: int, budget: float | None, run: str, evals: int,
           images: str) -> dict | str:
    """Run `code` (CHILD or ALTERNATE) for one size and `--runs` item: its JSON, or the last
    line of its error output."""
    layers, method = run.split("-")
    return run_child(code.format(images=images, w=width, h=width * 3 // 4, budget=budget,
                                 method=method, evals=evals, lite=layers == "lite"))


def measure(width: int, budget: float | None, run: str, evals: int, images: str
            ) -> dict | str:
    """One run in a fresh process: peak memory, seconds per evaluation and its layout."""
    return _child(CHILD, width, budget, run, evals, images)


def alternate(width: int, budget: float, run: str, evals: int, images: str) -> dict | str:
    """{"tiled": s, "one pass": s}: median seconds per evaluation of both layouts, timed in
    turns in one process (or the child's last line of error)."""
    return _child(ALTERNATE, width, budget, run, evals, images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--max-memory", type=float, default=4.0)
    parser.add_argument("--runs", nargs="+", default=["full-adam", "lite-lbfgs"],
                        choices=("full-adam", "full-lbfgs", "lite-adam", "lite-lbfgs"),
                        help="layers-method: Adam is neural_style.py's problem, L-BFGS the "
                             "Keras example's")
    parser.add_argument("--evals", type=int, default=4)
    parser.add_argument("--untiled-up-to", type=int, default=2048,
                        help="also run the plain one-pass run up to this width")
    parser.add_argument("--no-alternate", action="store_true",
                        help="skip the third process that times both layouts in turns")
    parser.add_argument("--images", default=str(HERE.parent / "images"),
                        help="folder holding base5.jpg and ref6.jpg")
    args = parser.parse_args()
    budget = args.max_memory or None
    print(f"CPU: {cpu_description()}")
    print(f"random weights, budget {f'{budget:g} GB' if budget else 'none (memory available)'}")
    print(f"{'run':>10} {'size':>10} {'layout':>9} {'peak RSS GB':>11} {'x budget':>8} "
          f"{'s/eval':>8} {'first':>7}  memory line")
    ratios = []
    for name in args.runs:
        for width in args.widths:
            size = f"{width}x{width * 3 // 4}"
            per_eval, tiled = {}, False
            runs = [("budget", budget)]
            if width <= args.untiled_up_to:
                runs.append(("one pass", None))
            for label, limit in runs:
                result = measure(width, limit, name, args.evals, args.images)
                if isinstance(result, str):
                    print(f"{name:>10} {size:>10} {label:>9} failed: {result}", flush=True)
                    continue
                peak = result["peak_kb"] / 2**20
                ratio = f"{peak / limit:8.2f}" if limit else f"{'':>8}"
                per_eval[label] = result["per_eval"]
                tiled = tiled or (label == "budget" and result["tiled"])
                print(f"{name:>10} {size:>10} {label:>9} {peak:11.2f} {ratio} "
                      f"{result['per_eval']:8.2f} {result['first']:7.1f}  {result['layout']}",
                      flush=True)
            if len(per_eval) == 2:
                line = (f"{name} {size}: tiled / one pass "
                        f"{per_eval['budget'] / per_eval['one pass']:.2f} (separate processes)")
                if not tiled:
                    line += "; the budget's run is one pass too"
                elif budget and not args.no_alternate:
                    both = alternate(width, budget, name, args.evals, args.images)
                    line += (f", {both['tiled'] / both['one pass']:.2f} in turns in one process "
                             f"({both['tiled']:.2f} / {both['one pass']:.2f} s)"
                             if isinstance(both, dict) else f"; in turns: failed: {both}")
                ratios.append(line)
    for line in ratios:
        print(line)


if __name__ == "__main__":
    main()
