"""Pairs per minute: `styleflow batch` (one process: TensorFlow, the network and the compiled
loss loaded once) against a shell loop of `neural_style_transfer.py` (everything again for
every pair), and the Ray engine with 2 CPU actors against 1 — measured in one run.

    python bench/batch.py [--pairs 8] [--size 128] [--iter 2] [--no-ray]

Each variant runs as its own process, start-up included, as a user would run it. On a 2-core
machine the Ray engine cannot scale (two actors share two cores); its line shows its overhead.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
IMAGES = ROOT.parent / "shared" / "images"

from cpu import cpu_description  # noqa: E402


def timed(command: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=8, help="pairs (contents x 2 styles)")
    parser.add_argument("--size", type=int, default=128, help="output height in pixels")
    parser.add_argument("--iter", type=int, default=2, help="L-BFGS iterations per pair")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray engine")
    args = parser.parse_args()
    contents = sorted(IMAGES.glob("base*.jpg"))[: max(1, args.pairs // 2)]
    styles = [IMAGES / "ref6.jpg", IMAGES / "ref7.jpg"]
    pairs = [(c, s) for c in contents for s in styles]
    common = ["--iter", str(args.iter), "--height", str(args.size), "--weights", "random"]
    print(f"CPU: {cpu_description()}")
    print(f"{len(pairs)} pairs at {args.size} px, {args.iter} iterations each, random weights")
    work = Path(tempfile.mkdtemp(prefix="styleflow-bench-batch-"))
    try:
        results = {}
        results["shell loop of neural_style_transfer.py"] = sum(
            timed([sys.executable, "neural_style_transfer.py", str(c), str(s),
                   str(work / "loop" / f"{c.stem}_{s.stem}"), *common, "--quiet"])
            for c, s in pairs)
        batch = [sys.executable, "-m", "styleflow", "batch", "--contents", *map(str, contents),
                 "--styles", *map(str, styles), *common, "--quiet"]
        results["styleflow batch"] = timed([*batch, "--out", str(work / "local")])
        if not args.no_ray:
            for n in (1, 2):
                results[f"styleflow batch --engine ray --workers {n}"] = timed(
                    [*batch, "--out", str(work / f"ray{n}"), "--engine", "ray",
                     "--workers", str(n)])
        loop = results["shell loop of neural_style_transfer.py"]
        print(f"{'variant':<45} {'seconds':>8} {'pairs/min':>10} {'vs loop':>8}")
        for name, seconds in results.items():
            print(f"{name:<45} {seconds:8.1f} {60 * len(pairs) / seconds:10.1f} "
                  f"{loop / seconds:7.2f}x")
        if not args.no_ray:
            one = results["styleflow batch --engine ray --workers 1"]
            two = results["styleflow batch --engine ray --workers 2"]
            print(f"ray --workers 2 vs 1: {one / two:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
