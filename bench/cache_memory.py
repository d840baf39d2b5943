"""Does a long-lived process stay bounded when it sees many image sizes? One Stylizer (as a
batch, a Ray actor or `styleflow serve` keeps) runs `--method` for `--iterations` on pairs of
`--sizes` different widths, and the process's resident memory is printed after each; the
ratio of the last to the one at the middle is the figure to watch (compiled functions are kept
for defaults.SIZES_KEPT sizes, so it should stay near 1).

    python bench/cache_memory.py [--sizes 24] [--first 256] [--step 8] [--method adam]
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


def resident_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, default=24)
    parser.add_argument("--first", type=int, default=256)
    parser.add_argument("--step", type=int, default=8)
    parser.add_argument("--method", choices=("adam", "lbfgs"), default="adam")
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--weights", default="lite")
    args = parser.parse_args()
    from styleflow import Stylizer
    from styleflow.defaults import SIZES_KEPT

    print(cpu_description())
    print(f"compiled functions kept for {SIZES_KEPT} sizes")
    stylizer = Stylizer(args.weights, seed=0, jit="off")
    content, style = ROOT / "images" / "base5.jpg", ROOT / "images" / "ref6.jpg"
    seen = []
    for k in range(args.sizes):
        width = args.first + args.step * k
        if args.method == "adam":
            stylizer.stylize(content, style, width=width, iterations=args.iterations)
        else:
            stylizer.transfer(content, style, width=width, iterations=args.iterations)
        seen.append(resident_bytes())
        print(f"{k + 1:3d} sizes (last {width} px): {seen[-1] / 2**30:.2f} GB resident")
    middle = seen[len(seen) // 2 - 1]
    print(f"after {args.sizes} sizes / after {len(seen) // 2}: {seen[-1] / middle:.3f}x "
          "(goal: within 1.15x)")


if __name__ == "__main__":
    main()
