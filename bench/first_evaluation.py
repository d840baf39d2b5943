"""A new process's way to its first evaluation, with the persistent XLA cache off, cold and warm,
beside PyTorch's first call of the same objective.

Each measurement is a fresh process, as in a shell loop over image pairs: styleflow with the
cache off (STYLEFLOW_XLA_CACHE=off), cold (an empty folder) and warm (the folder the cold
process filled), and PyTorch (bench/peer_pytorch.py's objective, channels-last), taken in turns
round after round. Printed per size, medians: seconds for the imports, the targets (the
objective built: content features and style Gram matrices, whose passes compile the forward
transforms), the first evaluation (tracing, compiling) and the second (steady state), and the
process's time to its first result. PyTorch's imports include TensorFlow (its weights come from
the same Keras model); compare its first call with its second.

    python bench/first_evaluation.py [--sizes 400x300 800x600] [--rounds 3] [--layers full|lite]
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
STEPS = ("imports", "targets", "first", "second")


def child(side: str, size: str, layers: str) -> None:
    """One process's timings, printed as JSON: styleflow's objective, or PyTorch's."""
    sys.path.insert(0, str(HERE))
    import numpy as np

    from common import layer_choice, ours_objective, pair
    from timing import parse_size

    from styleflow.model.weights import random_weights

    if side == "torch":  # not imported by styleflow's processes: PyTorch's threads would stay
        from peer_pytorch import side_objectives
    h, w = parse_size(size)
    content, style = pair((h, w))
    x = content + np.random.default_rng(0).normal(0, 5, content.shape).astype(np.float32)
    marks = [time.perf_counter()]
    if side == "torch":
        call = side_objectives("torch", layers, None, content, style, x)["channels-last"]
    else:
        last, styles = layer_choice(layers)
        ours = ours_objective(random_weights(0).layers, last, list(styles), content, style)
        call = lambda: ours.loss_and_grads(x)  # noqa: E731
    marks.append(time.perf_counter())
    for _ in range(2):
        call()
        marks.append(time.perf_counter())
    steps = [marks[0] - STARTED] + [b - a for a, b in zip(marks, marks[1:])]
    print(json.dumps(dict(zip(STEPS, steps), total=marks[2] - STARTED)))


def measure(side: str, size: str, layers: str, cache: str) -> dict:
    env = dict(os.environ, STYLEFLOW_XLA_CACHE=cache)
    proc = subprocess.run([sys.executable, __file__, "--child", side, "--sizes", size,
                           "--layers", layers], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"{side} child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["400x300", "800x600"], help="WxH")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--layers", choices=("full", "lite"), default="full")
    parser.add_argument("--child", choices=("ours", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.sizes[0], args.layers)

    sys.path.insert(0, str(HERE))
    from cpu import cpu_description

    sides = ["off", "cold", "warm"]
    if importlib.util.find_spec("torch") is None:
        print("(PyTorch not installed: pip install -r requirements-bench.txt to compare)")
    else:
        sides.append("PyTorch")
    print(f"CPU: {cpu_description()}")
    print(f"layers {args.layers}, float32, random weights; medians of {args.rounds} rounds, "
          "each measurement a fresh process, the variants in turns")
    print(f"{'size':>9} {'variant':>8} " + " ".join(f"{s:>8}" for s in STEPS)
          + f" {'to result':>10}")
    for size in args.sizes:
        runs = {side: [] for side in sides}
        with tempfile.TemporaryDirectory(prefix="xla-cache-") as folder:
            for round_ in range(args.rounds):
                for side in sides:
                    # warm: the folder this round's cold process has just filled
                    cache = "off" if side in ("off", "PyTorch") else f"{folder}/{round_}"
                    runs[side].append(measure("torch" if side == "PyTorch" else "ours", size,
                                              args.layers, cache))
        medians = {side: {k: statistics.median(r[k] for r in rs) for k in (*STEPS, "total")}
                   for side, rs in runs.items()}
        for side, m in medians.items():
            print(f"{size:>9} {side:>8} " + " ".join(f"{m[s]:8.2f}" for s in STEPS)
                  + f" {m['total']:10.2f}")
        off, warm = medians["off"], medians["warm"]
        print(f"{size:>9} warm cache: first evaluation {off['first'] / warm['first']:.2f}x "
              f"sooner, targets {off['targets'] / warm['targets']:.2f}x, time to the first "
              f"result {off['total'] / warm['total']:.2f}x")
        if "PyTorch" in medians:
            t = medians["PyTorch"]
            print(f"{size:>9} first call / second: ours {warm['first'] / warm['second']:.2f} "
                  f"(warm), {off['first'] / off['second']:.2f} (off); PyTorch "
                  f"{t['first'] / t['second']:.2f}")


if __name__ == "__main__":
    main()
