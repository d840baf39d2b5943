"""Time to quality: how long each L-BFGS schedule takes to write an image as good as the
original script's final one.

Reference: the original script's schedule and graph: `--iter` iterations (default 10), each a
fresh fmin_l_bfgs_b(maxfun=20) on unbounded pixels, content + style + candidate stacked in one
batch on every evaluation. Its final *saved* image (clipped to 0..255 and rounded, as written
to disk) has loss L_ref, reached after T_ref seconds of optimisation.

Each candidate schedule then runs on the same pair, size and weights until the image it would
write (rounded to uint8) has loss <= L_ref, or its evaluation budget is spent. Losses of
written images are computed untimed, in float32, by one common objective, at every L-BFGS
step, so the time to L_ref has the resolution of one step.

    python bench/time_to_quality.py [--size 400x300] [--weights lite|random] [--iter 10]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from PIL import Image
from scipy.optimize import fmin_l_bfgs_b, minimize

from common import OriginalDesign, pair
from timing import parse_size

from styleflow.defaults import (FULL_CONTENT_LAYER, FULL_STYLE_LAYERS, LITE_CONTENT_LAYER,
                                LITE_STYLE_LAYERS)
from styleflow.optim.lbfgs import pixel_bounds
from styleflow.model.network import KERAS_INPUT, build_extractor
from styleflow.objective.objective import Objective
from styleflow.model.weights import resolve_weights


class Clock:
    """Optimisation time only: the untimed written-image checks are subtracted."""

    def __init__(self):
        self.began = time.perf_counter()
        self.paused = 0.0

    def now(self) -> float:
        return time.perf_counter() - self.began - self.paused

    def untimed(self, fn):
        start = time.perf_counter()
        try:
            return fn()
        finally:
            self.paused += time.perf_counter() - start


def written_loss(judge: Objective, x: np.ndarray) -> float:
    """Loss of the image as written to disk: deprocessed, clipped, rounded, read back."""
    rgb = KERAS_INPUT.deprocess(np.asarray(x, np.float32).reshape(judge.shape))
    return judge.loss_and_grads(KERAS_INPUT.preprocess(rgb))[0].total


def make_objective(extractor, content, style, layers, dtype_extractor=None):
    content_layer, style_layers = layers
    return Objective(dtype_extractor or extractor, content, [style], {content_layer: 1.0},
                     {n: 1 / len(style_layers) for n in style_layers}, 0.025, 1.0, 1.0)


def scipy_fn(objective):
    def f(flat):
        parts, grad = objective.loss_and_grads(flat.astype(np.float32).reshape(objective.shape))
        return parts.total, grad.ravel().astype(np.float64)
    return f


def reference(original, judge, start, iterations):
    """The original schedule; returns (L_ref of the last written image, T_ref, per-iteration)."""
    clock = Clock()
    x = start.astype(np.float64).ravel()
    trace = []
    for _ in range(iterations):
        x, _, _ = fmin_l_bfgs_b(original, x, maxfun=20)
        trace.append((clock.now(), clock.untimed(lambda: written_loss(judge, x))))
    return trace[-1][1], trace[-1][0], trace


def race(fn, judge, start, target, budget, bounds=None, clock=None, evals_done=0):
    """Continuous L-BFGS until the written image's loss <= target; returns (seconds or None,
    evaluations, final x, best written loss)."""
    clock = clock or Clock()
    count = [evals_done]
    best = [np.inf]
    hit = [None]

    def counted(flat):
        count[0] += 1
        return fn(flat)

    def callback(intermediate_result):
        loss = clock.untimed(lambda: written_loss(judge, intermediate_result.x))
        best[0] = min(best[0], loss)
        if loss <= target and hit[0] is None:
            hit[0] = (clock.now(), count[0])
            raise StopIteration  # scipy >= 1.11 stops minimize cleanly on this

    x = np.asarray(start, np.float64).ravel()
    if bounds is not None:
        x = np.clip(x, bounds.lb, bounds.ub)
    result = minimize(counted, x, jac=True, method="L-BFGS-B", bounds=bounds, callback=callback,
                      options={"maxfun": budget - evals_done, "maxiter": budget})
    seconds, evals = hit[0] if hit[0] else (None, count[0])
    return seconds, evals, result.x, best[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="400x300", help="WxH")
    parser.add_argument("--weights", default="lite", help="lite (real block 1-3) or random")
    parser.add_argument("--iter", type=int, default=10, help="the reference's iterations")
    parser.add_argument("--budget", type=int, default=400, help="evaluations per candidate")
    parser.add_argument("--fixed", type=int, default=200,
                        help="evaluations for the float32 vs bfloat16 final-loss comparison")
    parser.add_argument("--precision-only", action="store_true",
                        help="run only the float32 vs bfloat16 comparison")
    args = parser.parse_args()

    h, w = parse_size(args.size)
    weights = resolve_weights(args.weights, seed=0)
    layers = ((LITE_CONTENT_LAYER, LITE_STYLE_LAYERS) if weights.lite else
              (FULL_CONTENT_LAYER, FULL_STYLE_LAYERS))
    names = [layers[0], *layers[1]]
    f32 = build_extractor(weights.layers, names)
    bf16 = build_extractor(weights.layers, names, dtype="bfloat16")
    content, style = pair((h, w))
    judge = make_objective(f32, content, style, layers)
    bounds = pixel_bounds(judge.shape, *KERAS_INPUT.pixel_bounds())
    print(f"{args.size}, weights {weights.source}, content {layers[0]}, style "
          f"{','.join(layers[1])}")

    ours = make_objective(f32, content, style, layers)
    ours_bf16 = make_objective(bf16, content, style, layers)
    for objective in (ours, ours_bf16):
        objective.loss_and_grads(content)  # compile outside the clock
    if not args.precision_only:
        race_schedules(args, f32, judge, ours, ours_bf16, content, style, bounds, layers, (h, w))
    compare_precisions(args, judge, ours, ours_bf16, content, bounds)


def race_schedules(args, f32, judge, ours, ours_bf16, content, style, bounds, layers, size):
    """The reference run, then each candidate schedule racing to its written loss."""
    h, w = size
    original = OriginalDesign(f32, content, style, layers[0], layers[1])
    original(content.astype(np.float64).ravel())  # compile outside the clock
    l_ref, t_ref, trace = reference(original, judge, content, args.iter)
    print(f"reference (original schedule and graph, {args.iter} x maxfun=20): written loss "
          f"L_ref {l_ref:.4e} after T_ref {t_ref:.1f} s")
    print("  written loss per iteration: " + " ".join(f"{loss:.3e}" for _, loss in trace))

    def multiscale(fn_full, factor=2, coarse_evals=60):
        """Optimise at 1/factor size first, upsample, then continue at full size (bounded)."""
        small_size = (h // factor, w // factor)
        c_small, s_small = pair(small_size)
        small = make_objective(f32, c_small, s_small, layers)
        small.loss_and_grads(c_small)
        clock = Clock()
        small_bounds = pixel_bounds(small.shape, *KERAS_INPUT.pixel_bounds())
        xs = minimize(scipy_fn(small), c_small.astype(np.float64).ravel(), jac=True,
                      method="L-BFGS-B", bounds=small_bounds,
                      options={"maxfun": coarse_evals}).x
        rgb = KERAS_INPUT.deprocess(xs.astype(np.float32).reshape(small.shape))
        up = np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.BICUBIC))
        # Keep the full-size content's fine detail: coarse result + content's high frequencies.
        content_rgb = KERAS_INPUT.deprocess(content)
        blurred = np.asarray(Image.fromarray(content_rgb).resize(
            (w // factor, h // factor), Image.Resampling.LANCZOS).resize((w, h),
                                                                         Image.Resampling.BICUBIC))
        start_rgb = np.clip(up.astype(np.float32) + content_rgb - blurred.astype(np.float32),
                            0, 255)
        start = KERAS_INPUT.preprocess(start_rgb)
        return race(fn_full, judge, start, l_ref, args.budget, bounds=bounds, clock=clock)

    candidates = [
        ("original schedule, our engine", lambda: faithful_ours(ours, judge, content, l_ref,
                                                                args.budget)),
        ("continuous, unbounded", lambda: race(scipy_fn(ours), judge, content, l_ref,
                                               args.budget)),
        ("continuous, bounded 0..255 (default)", lambda: race(scipy_fn(ours), judge, content,
                                                              l_ref, args.budget,
                                                              bounds=bounds)),
        ("continuous, bounded, bfloat16", lambda: race(scipy_fn(ours_bf16), judge, content,
                                                       l_ref, args.budget, bounds=bounds)),
        ("multi-scale 1/2 then full, bounded", lambda: multiscale(scipy_fn(ours))),
    ]
    print(f"{'schedule':<40} {'evals':>6} {'seconds':>8} {'T_ref / seconds':>16} "
          f"{'best written loss / L_ref':>26}")
    for name, run in candidates:
        seconds, evals, _, best = run()
        ratio = f"{t_ref / seconds:15.2f}x" if seconds else f"{'not reached':>16}"
        shown = f"{seconds:8.1f}" if seconds else f"{'-':>8}"
        print(f"{name:<40} {evals:6d} {shown} {ratio} {best / l_ref:26.3f}", flush=True)


def compare_precisions(args, judge, ours, ours_bf16, content, bounds):
    """bfloat16 is kept only if its result is as good as float32's."""
    # bfloat16 is kept only if its result is as good: same schedule and number of evaluations,
    # final written image judged in float32.
    finals = {}
    for name, objective in (("float32", ours), ("bfloat16", ours_bf16)):
        clock = Clock()
        x = minimize(scipy_fn(objective), content.astype(np.float64).ravel(), jac=True,
                     method="L-BFGS-B", bounds=bounds,
                     options={"maxfun": args.fixed, "maxiter": args.fixed}).x
        finals[name] = (written_loss(judge, x), clock.now())
    (l32, t32), (l16, t16) = finals["float32"], finals["bfloat16"]
    print(f"fixed {args.fixed} evaluations, default schedule: float32 written loss {l32:.4e} in "
          f"{t32:.1f} s; bfloat16 {l16:.4e} ({100 * (l16 / l32 - 1):+.2f}%) in {t16:.1f} s "
          f"({t32 / t16:.2f}x faster)")


def faithful_ours(objective, judge, start, target, budget):
    """The original schedule (fresh maxfun=20 runs, unbounded) on our engine."""
    clock = Clock()
    fn = scipy_fn(objective)
    x = start.astype(np.float64).ravel()
    best = np.inf
    for i in range(budget // 20):
        x, _, _ = fmin_l_bfgs_b(fn, x, maxfun=20)
        loss = clock.untimed(lambda: written_loss(judge, x))
        best = min(best, loss)
        if loss <= target:
            return clock.now(), 20 * (i + 1), x, best
    return None, budget, x, best


if __name__ == "__main__":
    main()
