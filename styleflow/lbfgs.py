"""scipy's L-BFGS-B over the flattened image, reporting one result per "iteration".

Two schedules:
- ``faithful``: the Keras example's — every iteration is a fresh L-BFGS run of at most 20
  evaluations (its curvature memory is thrown away each time), pixels unbounded;
- ``continuous``: one L-BFGS run kept alive across iterations, reporting the current iterate
  whenever another 20 evaluations have been spent, pixels bounded to displayable values so the
  written image is the optimised one (the faithful schedule clips only when saving).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.optimize import Bounds, minimize

from .objective import Objective, Parts

SCHEDULES = ("continuous", "faithful")


@dataclass
class IterationResult:
    """What one iteration produced: the image in network space and its loss."""

    iteration: int
    image: np.ndarray
    parts: Parts
    evaluations: int
    seconds: float


class Evaluator:
    """Adapts an Objective to scipy (float64 flat vectors) and remembers the best image seen."""

    def __init__(self, objective: Objective,
                 on_evaluation: Callable[[int, float], None] | None = None):
        self.objective = objective
        self.on_evaluation = on_evaluation
        self.evaluations = 0
        self.best_image: np.ndarray | None = None
        self.best_parts: Parts | None = None
        self._recent: dict[float, Parts] = {}

    def __call__(self, flat: np.ndarray) -> tuple[float, np.ndarray]:
        image = flat.astype(np.float32).reshape(self.objective.shape)
        parts, grad = self.objective.loss_and_grads(image)
        self.evaluations += 1
        if len(self._recent) > 64:
            self._recent.clear()
        self._recent[parts.total] = parts
        if self.best_parts is None or parts.total < self.best_parts.total:
            self.best_parts, self.best_image = parts, image
        if self.on_evaluation is not None:
            self.on_evaluation(self.evaluations, parts.total)
        return parts.total, grad.ravel().astype(np.float64)

    def parts_at(self, flat: np.ndarray, value: float) -> Parts:
        """Parts of an already evaluated point, found by its loss value (else re-evaluated)."""
        if value in self._recent:
            return self._recent[value]
        parts, _ = self.objective.loss_and_grads(flat.astype(np.float32))
        return parts


def pixel_bounds(objective_shape: tuple, low: np.ndarray, high: np.ndarray) -> Bounds:
    """Per-element bounds for a flattened (1, h, w, 3) image from per-channel limits."""
    lb = np.broadcast_to(np.asarray(low, np.float64), objective_shape).ravel()
    ub = np.broadcast_to(np.asarray(high, np.float64), objective_shape).ravel()
    return Bounds(lb, ub)


def run_lbfgs(objective: Objective, start: np.ndarray, iterations: int,
              on_iteration: Callable[[IterationResult], None],
              schedule: str = "continuous", evaluations_per_iteration: int = 20,
              bounds: Bounds | None = None, evaluator: Evaluator | None = None) -> Evaluator:
    """Optimise `start` (network space) and call `on_iteration` after each iteration.

    Returns the Evaluator, whose best image survives an interruption (KeyboardInterrupt
    propagates out of here; the caller decides what to write).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}")
    evaluator = evaluator or Evaluator(objective)
    x = np.asarray(start, np.float64).ravel()
    if bounds is not None:
        x = np.clip(x, bounds.lb, bounds.ub)
    # scipy's fmin_l_bfgs_b is this same routine; minimize() also takes array bounds.
    if schedule == "faithful":
        for i in range(iterations):
            began = time.perf_counter()
            result = minimize(evaluator, x, jac=True, method="L-BFGS-B", bounds=bounds,
                              options={"maxfun": evaluations_per_iteration})
            x = result.x
            parts = evaluator.parts_at(x, float(result.fun))
            on_iteration(IterationResult(i, x.astype(np.float32).reshape(objective.shape), parts,
                                         evaluator.evaluations, time.perf_counter() - began))
        return evaluator

    state = {"next": evaluations_per_iteration, "iteration": 0, "began": time.perf_counter()}

    def report(flat: np.ndarray, value: float) -> None:
        parts = evaluator.parts_at(flat, value)
        now = time.perf_counter()
        on_iteration(IterationResult(state["iteration"], flat.astype(np.float32).reshape(
            objective.shape), parts, evaluator.evaluations, now - state["began"]))
        state["iteration"] += 1
        state["began"] = now
        state["next"] = evaluator.evaluations + evaluations_per_iteration

    def callback(intermediate_result) -> None:
        if evaluator.evaluations >= state["next"] and state["iteration"] < iterations:
            report(intermediate_result.x, float(intermediate_result.fun))

    budget = evaluations_per_iteration * iterations
    result = minimize(evaluator, x, jac=True, method="L-BFGS-B", bounds=bounds,
                      callback=callback, options={"maxfun": budget, "maxiter": budget})
    # The run can end early (converged, or the budget ran out inside an iteration): report the
    # final iterate for every iteration still owed, so each iteration has its file.
    while state["iteration"] < iterations:
        report(result.x, float(result.fun))
    return evaluator
