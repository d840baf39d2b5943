"""Photorealistic transfer (`styleflow photo`) against painterly transfer (`styleflow transfer`)
on the same photograph pair and size, each run as a user runs it (the command, in a fresh
process, peak memory read from the operating system):

  (a) photorealism: the mean residual of the best local affine colour fit of the output to the
      content over 3x3 windows (matting.affine_residual), photo / transfer: goal <= 0.1x;
  (b) colour moved toward the style: 1 - d(output, style) / d(content, style), d the distance
      of the colours' mean and covariance (Fréchet distance): goal >= 0.5 (half-way or more);
  (c) seconds and peak resident memory of `styleflow photo` at --sizes (e.g. 512 px and
      1024x768), and at --tiled sizes within a --max-memory budget (tiled when needed).

    python bench/photo.py [--content C --style S] [--sizes 512 1024] [--tiled 2048]
                          [--max-memory 4] [--weights lite] [--compare-stages]

`photo` runs as the command does by default: Luan et al.'s two stages.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cpu import cpu_description  # noqa: E402

ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "images"


def run(command: list[str]) -> tuple[float, int, str]:
    """(seconds, peak resident bytes, output) of one command in a fresh process."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    began = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "styleflow", *command], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - began
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): styleflow {' '.join(command)}\n{out}")
    return seconds, usage.ru_maxrss * 1024, out


def frechet(a, b) -> float:
    """Fréchet distance of two images' RGB distributions (mean and covariance), 0..255."""
    import numpy as np
    from scipy import linalg

    x, y = (np.asarray(i, np.float64).reshape(-1, 3) for i in (a, b))
    ca, cb = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = linalg.sqrtm(ca @ cb).real
    return float(np.sqrt(max(0.0, np.sum((x.mean(0) - y.mean(0)) ** 2)
                             + np.trace(ca + cb - 2 * root))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--content", default=str(SHARED / "base1.jpg"))
    parser.add_argument("--style", default=str(SHARED / "ref1.jpg"))
    parser.add_argument("--sizes", nargs="*", default=["512", "1024"],
                        help="output widths (the content keeps its aspect)")
    parser.add_argument("--tiled", nargs="*", default=["2048"],
                        help="widths run within --max-memory (tiles where needed)")
    parser.add_argument("--max-memory", type=float, default=4.0)
    parser.add_argument("--iterations", type=int, default=None,
                        help="photo iterations (default: the command's)")
    parser.add_argument("--tiled-iterations", type=int, default=1)
    parser.add_argument("--weights", default="lite")
    parser.add_argument("--compare-width", type=int, default=512,
                        help="width of the photo vs transfer comparison")
    parser.add_argument("--compare-stages", action="store_true",
                        help="also run one stage (--stages 1: the photorealism term from the "
                             "first evaluation) and compare it with the default two stages")
    args = parser.parse_args()
    from styleflow.io import images
    from styleflow.objective.matting import affine_residual

    print(cpu_description())
    common = ["--weights", args.weights, "--seed", "0", "--quiet", "--jit", "off"]
    iters = [] if args.iterations is None else ["--iterations", str(args.iterations)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # (a), (b): photo vs transfer on the same pair and size.
        w = str(args.compare_width)
        photo_out, transfer_out = tmp / "photo.png", tmp / "transfer"
        photo_s, photo_rss, _ = run(["photo", args.content, args.style, str(photo_out),
                                     "--width", w, *common, *iters])
        transfer_s, _, _ = run(["transfer", args.content, args.style, str(transfer_out),
                                "--width", w, *common, "--iter", "10"])
        photo = images.load_image(photo_out)
        painted = images.load_image(f"{transfer_out}_at_iteration_09.png")
        content = images.resize(images.load_image(args.content), photo.shape[:2])
        style = images.load_image(args.style)
        style = images.resize(style, images.fit_size(style.shape[:2], None, photo.shape[1]))
        r_photo, r_paint = affine_residual(photo, content), affine_residual(painted, content)
        print(f"\n(a) photorealism at {w} px wide: affine residual photo {r_photo:.3e}, "
              f"transfer {r_paint:.3e}: photo / transfer = {r_photo / r_paint:.4f}x "
              f"(goal <= 0.1x)")
        before, after = frechet(content, style), frechet(photo, style)
        print(f"(b) colours toward the style: distance content-style {before:.1f}, "
              f"output-style {after:.1f}: moved {1 - after / before:.2f} of the way "
              f"(goal >= 0.5)")
        print(f"    seconds: photo {photo_s:.1f}, transfer {transfer_s:.1f} (10 iterations "
              "each, process start included)")
        if args.compare_stages:
            # The default is Luan et al.'s two stages (the first half of the iterations
            # without the photorealism term); one stage has it throughout. Same evaluations.
            single = tmp / "one_stage.png"
            s1, _, _ = run(["photo", args.content, args.style, str(single), "--width", w,
                            *common, *iters, "--stages", "1"])
            one = images.load_image(single)
            r_one = affine_residual(one, content)
            moved_one = 1 - frechet(one, style) / before
            print(f"    one stage: residual {r_one:.3e} (two stages' / one's = "
                  f"{r_photo / r_one:.2f}x), moved {moved_one:.2f} of the way (two stages: "
                  f"{1 - after / before:.2f}), {s1:.1f} s (two stages: {photo_s:.1f} s)")
        # (c) seconds and peak memory per size.
        print(f"\n(c) {'width':>6} {'output':>10} {'seconds':>8} {'peak GB':>8} {'budget':>7}"
              "  layout")
        for width, budget, extra in ([(s, None, iters) for s in args.sizes]
                                     + [(s, args.max_memory,
                                         ["--iterations", str(args.tiled_iterations)])
                                        for s in args.tiled]):
            out = tmp / f"photo_{width}.png"
            command = ["photo", args.content, args.style, str(out), "--width", str(width),
                       *common, *extra]
            if budget:
                command += ["--max-memory", str(budget)]
            command = [c for c in command if c != "--quiet"]
            seconds, rss, text = run(command)
            shape = images.load_image(out).shape
            layout = next((line for line in text.splitlines() if line.startswith("memory:")),
                          "one pass")
            ratio = f"{rss / (budget * 2**30):.2f}x" if budget else "-"
            print(f"    {width:>6} {shape[1]:>4}x{shape[0]:<5} {seconds:8.1f} "
                  f"{rss / 2**30:8.2f} {ratio:>7}  {layout} "
                  f"({(extra or ['', 'default'])[1]} iterations)")
            out.unlink()


if __name__ == "__main__":
    main()
