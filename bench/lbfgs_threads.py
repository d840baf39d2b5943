"""L-BFGS-B's BLAS threads against TensorFlow: the same L-BFGS run (pixels bounded, as the
default schedule) with scipy's BLAS on its default threads and limited to one, in one run.
OpenBLAS's threads spin after each call and take the cores the next evaluation needs.

    python bench/lbfgs_threads.py [--sizes 85x64 400x300] [--evaluations 40]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_info, threadpool_limits

from common import pair
from timing import parse_size
from batch import cpu_description

from styleflow.defaults import FULL_CONTENT_LAYER, FULL_STYLE_LAYERS
from styleflow.optim.lbfgs import Evaluator, pixel_bounds
from styleflow.model.network import KERAS_INPUT, build_extractor
from styleflow.objective.objective import Objective
from styleflow.model.weights import random_weights


def seconds(objective, start, bounds, evaluations: int, limit: bool) -> float:
    evaluator = Evaluator(objective)
    began = time.perf_counter()
    if limit:
        with threadpool_limits(limits=1, user_api="blas"):
            minimize(evaluator, start, jac=True, method="L-BFGS-B", bounds=bounds,
                     options={"maxfun": evaluations})
    else:
        minimize(evaluator, start, jac=True, method="L-BFGS-B", bounds=bounds,
                 options={"maxfun": evaluations})
    return (time.perf_counter() - began) / evaluator.evaluations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["85x64", "400x300"], help="WxH")
    parser.add_argument("--evaluations", type=int, default=40)
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}")
    print("BLAS: " + ", ".join(f"{i['internal_api']} {i['num_threads']} threads"
                               for i in threadpool_info() if i["user_api"] == "blas"))
    layers = [FULL_CONTENT_LAYER, *FULL_STYLE_LAYERS]
    extractor = build_extractor(random_weights(0).layers, layers)
    print(f"{'size':>9} {'s/eval, BLAS threads':>21} {'s/eval, 1 thread':>17} {'speed-up':>9}")
    for text in args.sizes:
        h, w = parse_size(text)
        content, style = pair((h, w))
        objective = Objective(extractor, content, [style], {FULL_CONTENT_LAYER: 1.0},
                              {n: 0.2 for n in FULL_STYLE_LAYERS}, 0.025, 1.0, 1.0)
        objective.loss_and_grads(content)  # trace once
        bounds = pixel_bounds(objective.shape, *KERAS_INPUT.pixel_bounds())
        start = np.asarray(content, np.float64).ravel()
        free = seconds(objective, start, bounds, args.evaluations, limit=False)
        one = seconds(objective, start, bounds, args.evaluations, limit=True)
        print(f"{text:>9} {free:21.3f} {one:17.3f} {free / one:8.2f}x", flush=True)


if __name__ == "__main__":
    main()
