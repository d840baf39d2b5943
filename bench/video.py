"""Temporal consistency, measured in one run: the warping error (Lai et al. 2018: mean squared
difference on the 0..1 scale between each output frame and the previous output warped by the
input's optical flow, over the pixels the consistency check trusts) of `styleflow video`
(Ruder et al.) against independent frames (what a shell loop over frames gives), the seconds a
frame of both, the optical flow's seconds a frame, what reusing the style targets saves per
frame, and what Ray segments' seams cost against one sequential run (the segments run here one
after another, through the same planning and cross-fade).

    python bench/video.py [--frames 24] [--fps 12] [--width 256] [--iterations 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clips import pan_frames  # noqa: E402
from cpu import cpu_description  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--fps", type=int, default=12)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=2,
                        help="L-BFGS iterations of the first frame (and of every independent "
                             "frame); the other temporal frames get half (at least 1)")
    parser.add_argument("--weights", default="lite")
    args = parser.parse_args()

    import numpy as np

    from styleflow import Stylizer
    from styleflow.api.problem import transfer_problem
    from styleflow.api.video import crossfade, plan_segments
    from styleflow.objective.flow import FlowEstimator, warping_error

    print(f"CPU: {cpu_description()}")
    frames = pan_frames(args.frames, (args.width, args.width * 2 // 3))
    style = ROOT / "images" / "ref7.jpg"
    frame_iterations = max(1, args.iterations // 2)
    print(f"clip: {args.frames} frames ({args.frames / args.fps:.1f} s at {args.fps} fps), "
          f"{frames[0].shape[1]}x{frames[0].shape[0]} px, a pan with a moving disc; "
          f"L-BFGS, weights {args.weights}, {args.iterations} iterations (temporal: "
          f"{frame_iterations} after the first frame)")
    stylizer = Stylizer(weights=args.weights, seed=0)
    options = dict(iterations=args.iterations, frame_iterations=frame_iterations,
                   width=args.width)
    # Warm-up: the loss is traced once per size and problem kind, not part of a frame's cost.
    for independent in (True, False):
        list(stylizer.iter_video(frames[:2], style, independent=independent,
                                 **{**options, "iterations": 1, "frame_iterations": 1}))

    results = {}
    for name, independent in (("independent", True), ("temporal", False)):
        run = stylizer.iter_video(frames, style, independent=independent, **options)
        began = time.perf_counter()
        records = list(run)
        wall = time.perf_counter() - began
        outputs = [r.array for r in records]
        results[name] = dict(outputs=outputs, wall=wall, inputs=run.frames,
                             flow=sum(r.flow_seconds for r in records))
    inputs = results["temporal"]["inputs"]
    estimator = FlowEstimator()
    for name in results:
        results[name]["error"] = warping_error(results[name]["outputs"], inputs, estimator)
    flow_per_frame = estimator.seconds / estimator.calls * 2  # a link is two flows
    for name in ("independent", "temporal"):
        r = results[name]
        print(f"{name:>11}: warping error {r['error']:.5f}, {r['wall'] / args.frames:.2f} s a "
              f"frame ({r['wall']:.1f} s in all, optical flow {r['flow']:.2f} s of it)")
    ratio = results["temporal"]["error"] / results["independent"]["error"]
    speed = (results["temporal"]["wall"] / args.frames) / (results["independent"]["wall"]
                                                           / args.frames)
    print(f"ratios: warping error temporal/independent {ratio:.3f} (goal <= 0.3); seconds a "
          f"frame temporal/independent {speed:.3f} (goal <= 1)")
    print(f"optical flow (OpenCV DIS, medium preset): {flow_per_frame * 1000:.1f} ms a frame "
          f"(forward and backward, {inputs[0].shape[1]}x{inputs[0].shape[0]} px)")

    # The style targets once per video: a frame's objective from the first (with_frame)
    # against a whole new problem per frame.
    first = transfer_problem(stylizer.networks, frames[0], style, width=args.width,
                             temporal_weight=1.0)
    spec = first.network.input_spec
    content = spec.preprocess(inputs[1])
    zeros = (np.zeros_like(content), np.zeros(content.shape[1:3], np.float32))
    began = time.perf_counter()
    for _ in range(5):
        first.objective.with_frame(content, zeros)
    reused = (time.perf_counter() - began) / 5
    began = time.perf_counter()
    for _ in range(5):
        transfer_problem(stylizer.networks, frames[1], style, width=args.width,
                         temporal_weight=1.0)
    rebuilt = (time.perf_counter() - began) / 5
    print(f"a frame's targets: {reused * 1000:.1f} ms reusing the style Grams, "
          f"{rebuilt * 1000:.1f} ms building the problem anew")

    # Seams: two segments with an overlap of 2 cross-faded, against the sequential run.
    segments = plan_segments(args.frames, -(-args.frames // 2), 2)
    pieces = {}
    for seg in segments:
        run = stylizer.iter_video(frames, style, start=seg.start, stop=seg.stop, **options)
        for r in run:
            pieces[(seg.index, r.index)] = r.array
    joined = [crossfade(segments, lambda s, i: pieces[(s, i)], i) for i in range(args.frames)]
    seams = warping_error(joined, inputs, estimator)
    print(f"segments {[(s.start + 1, s.stop) for s in segments]} (overlap 2, cross-faded): "
          f"warping error {seams:.5f} against {results['temporal']['error']:.5f} for one "
          f"sequential run ({seams / results['temporal']['error']:.2f}x)")


if __name__ == "__main__":
    main()
