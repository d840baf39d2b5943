"""Does a long-lived process stay bounded when it sees many image sizes? One Stylizer (as a
batch's worker, a Ray actor or `styleflow serve` keeps) runs `--method` for `--iterations` on
pairs of `--sizes` different widths, and the process's resident memory is printed after each;
the ratio of the last to the one at the middle is the figure to watch. The library's caches
keep compiled functions for defaults.SIZES_KEPT sizes; TensorFlow's own per-size state is not
bounded in one process (batch/processes.py).

With `--batch` the same pairs run as one `styleflow batch` (a manifest with a width per row),
and the memory printed after each pair is the batch's and its worker process's together: the
worker is replaced once it has grown (processes.RECYCLE_GROWTH), which bounds the whole.

    python bench/cache_memory.py [--sizes 24] [--first 256] [--step 8] [--method adam]
                                 [--batch]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cpu import cpu_description  # noqa: E402

ROOT = HERE.parent
sys.path.insert(0, str(ROOT))


from proctree import memory_mb, rss_mb  # noqa: E402


def in_process(args, content: Path, style: Path) -> list[float]:
    """GB resident in this process after each pair."""
    import os

    from styleflow import Stylizer

    stylizer = Stylizer(args.weights, seed=0, jit="off")
    seen = []
    for k in range(args.sizes):
        width = args.first + args.step * k
        if args.method == "adam":
            stylizer.stylize(content, style, width=width, iterations=args.iterations)
        else:
            stylizer.transfer(content, style, width=width, iterations=args.iterations)
        seen.append(rss_mb(os.getpid()) / 1024)
        print(f"{k + 1:3d} sizes (last {width} px): {seen[-1]:.2f} GB resident", flush=True)
    return seen


def as_batch(args, content: Path, style: Path) -> list[float]:
    """GB resident in a `styleflow batch` and its worker process after each pair."""
    import csv
    import subprocess
    import tempfile
    import threading

    folder = Path(tempfile.mkdtemp(prefix="cache-memory-"))
    with open(folder / "pairs.csv", "w", newline="") as handle:
        rows = csv.writer(handle)
        rows.writerow(["content", "style", "output", "width"])
        for k in range(args.sizes):
            rows.writerow([content, style, folder / f"p{k:02d}.png", args.first + args.step * k])
    method = ["--method", "adam", "--network", args.weights] if args.method == "adam" else \
        ["--weights", args.weights]
    iterations = "--iterations" if args.method == "adam" else "--iter"
    command = [sys.executable, "-m", "styleflow", "batch", "--manifest",
               str(folder / "pairs.csv"), *method, iterations, str(args.iterations),
               "--seed", "0", "--jit", "off"]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    said: list[str] = []
    reader = threading.Thread(target=lambda: said.extend(proc.stderr), daemon=True)
    reader.start()
    seen = []
    first = None
    for line in proc.stdout:
        if not line.startswith("["):
            continue
        own, below = memory_mb(proc.pid)
        first = first or below
        width = args.first + args.step * len(seen)
        # Just after a replacement the new worker is still loading: not a figure to compare.
        starting = below < first / 2
        seen.append(None if starting else (own + below) / 1024)
        print(f"{len(seen):3d} sizes (last {width} px): {(own + below) / 1024:.2f} GB resident "
              f"(batch {own / 1024:.2f} + worker {below / 1024:.2f})"
              + (" - a new worker starting" if starting else ""), flush=True)
    proc.wait()
    reader.join()
    for line in said:
        if "replaced" in line:
            print("  " + line.strip())
    if proc.returncode != 0:
        raise SystemExit(f"the batch failed ({proc.returncode}): {''.join(said)[-500:]}")
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, default=24)
    parser.add_argument("--first", type=int, default=256)
    parser.add_argument("--step", type=int, default=8)
    parser.add_argument("--method", choices=("adam", "lbfgs"), default="adam")
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--weights", default="lite")
    parser.add_argument("--batch", action="store_true",
                        help="run the pairs as one `styleflow batch` (its worker process "
                             "replaced when grown) and measure it with its worker")
    args = parser.parse_args()
    from styleflow.defaults import SIZES_KEPT

    print(cpu_description())
    print(f"compiled functions kept for {SIZES_KEPT} sizes; "
          + ("styleflow batch, memory of the batch and its worker process" if args.batch
             else "one Stylizer in this process"))
    content, style = ROOT / "images" / "base5.jpg", ROOT / "images" / "ref6.jpg"
    seen = (as_batch if args.batch else in_process)(args, content, style)
    half = len(seen) // 2
    middle = next(v for v in reversed(seen[:half]) if v is not None)
    last = next(v for v in reversed(seen) if v is not None)
    print(f"after {args.sizes} sizes / after {half}: {last / middle:.3f}x (goal: within 1.15x); "
          f"the most after any: {max(v for v in seen if v is not None) / middle:.3f}x")


if __name__ == "__main__":
    main()
