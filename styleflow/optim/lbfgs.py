"""L-BFGS-B (scipy's routine, driven by `lbfgsb`) over the flattened image, one result per
"iteration".

Two schedules:
- ``faithful``: the Keras example's — every iteration is a fresh L-BFGS run of at most 20
  evaluations (its curvature memory is thrown away each time), pixels unbounded;
- ``continuous``: one L-BFGS run kept alive across iterations, reporting the current iterate
  whenever another 20 evaluations have been spent, pixels bounded to displayable values so the
  written image is the optimised one (the faithful schedule clips only when saving).

`iterate_lbfgs` yields the iterations. scipy drives the continuous run through callbacks, so
that run lives in a helper thread which hands each iteration over and waits until the next one
is asked for; closing the generator (or an interrupt in the consumer) stops it after the tile
in progress of a tiled evaluation, else after the evaluation in progress.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
from scipy.optimize import Bounds
from threadpoolctl import threadpool_limits

from ..defaults import EVALUATIONS_PER_ITERATION, LBFGS_HISTORY
from ..objective.objective import Objective
from ..objective.tiled_loss import EvaluationStopped
from ..objective.terms import Parts
from . import lbfgsb

SCHEDULES = ("continuous", "faithful")
# How often a consumer waiting for the helper thread wakes to let signals (Ctrl-C) through.
_POLL_SECONDS = 0.05
# How soon either side of the hand-over looks again for the other's value or go-ahead (the
# consumer backs off to _POLL_SECONDS while an iteration's evaluations run).
_HANDOFF_SECONDS = 0.002


@dataclass
class IterationResult:
    """What one iteration produced: the image in network space and its loss."""

    iteration: int
    image: np.ndarray
    parts: Parts
    evaluations: int
    seconds: float


class _Stop(Exception):
    """Raised inside scipy's loop when the consumer no longer wants iterations."""


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
        self.stop = threading.Event()
        # (iterations finished, why) when L-BFGS ended before its evaluations were spent.
        self.stopped: tuple[int, str] | None = None

    def __call__(self, flat: np.ndarray) -> tuple[float, np.ndarray]:
        if self.stop.is_set():
            raise _Stop()
        image = flat.astype(np.float32).reshape(self.objective.shape)
        try:
            # A tiled evaluation also looks at the stop between tiles.
            parts, grad = self.objective.loss_and_grads(image, stop=self.stop)
        except EvaluationStopped:
            raise _Stop() from None
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


def minimize(*args, **kwargs):
    """L-BFGS-B (`lbfgsb.minimize`) with the BLAS on one thread: its own vector work is small,
    and OpenBLAS's threads keep spinning after each call, taking the cores TensorFlow needs
    for the next evaluation (`python bench/lbfgs_threads.py` measures it)."""
    with threadpool_limits(limits=1, user_api="blas"):
        return lbfgsb.minimize(*args, **kwargs)


def pixel_bounds(objective_shape: tuple, low: np.ndarray, high: np.ndarray) -> Bounds:
    """Per-element bounds for a flattened (1, h, w, 3) image from per-channel limits."""
    lb = np.broadcast_to(np.asarray(low, np.float64), objective_shape).ravel()
    ub = np.broadcast_to(np.asarray(high, np.float64), objective_shape).ravel()
    return Bounds(lb, ub)


def iterate_lbfgs(evaluator: Evaluator, start: np.ndarray, iterations: int,
                  schedule: str = "continuous",
                  evaluations_per_iteration: int = EVALUATIONS_PER_ITERATION,
                  bounds: Bounds | None = None,
                  history: int = LBFGS_HISTORY) -> Iterator[IterationResult]:
    """Optimise `start` (network space), yielding an IterationResult after each iteration.
    `history` is L-BFGS's number of correction pairs (scipy's maxcor, default 10).

    The Evaluator keeps the best image seen, which survives an interruption or an early close.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}")
    # As it is: the L-BFGS-B driver makes its own float64 copy and clips it to the bounds.
    x = np.asarray(start).ravel()
    shape = evaluator.objective.shape
    if schedule == "faithful":
        # scipy's fmin_l_bfgs_b is this same routine; minimize() also takes array bounds.
        for i in range(iterations):
            began = time.perf_counter()
            result = minimize(evaluator, x, bounds=bounds, history=history,
                              max_evaluations=evaluations_per_iteration)
            x = result.x
            parts = evaluator.parts_at(x, float(result.fun))
            yield IterationResult(i, x.astype(np.float32).reshape(shape), parts,
                                  evaluator.evaluations, time.perf_counter() - began)
        return
    yield from _handed_over(lambda report: _continuous(evaluator, x, iterations,
                                                       evaluations_per_iteration, bounds,
                                                       report, history), evaluator.stop)


def _continuous(evaluator: Evaluator, x: np.ndarray, iterations: int, per_iteration: int,
                bounds: Bounds | None, on_iteration: Callable[[IterationResult], None],
                history: int = LBFGS_HISTORY) -> None:
    """One L-BFGS-B run, calling `on_iteration` whenever another iteration's evaluations are
    spent, and for every iteration still owed when the run ends early."""
    shape = evaluator.objective.shape
    # Relative to the evaluations already counted (e.g. XLA trials before the run).
    state = {"next": evaluator.evaluations + per_iteration, "iteration": 0,
             "began": time.perf_counter()}

    def report(flat: np.ndarray, value: float) -> None:
        parts = evaluator.parts_at(flat, value)
        now = time.perf_counter()
        on_iteration(IterationResult(state["iteration"], flat.astype(np.float32).reshape(shape),
                                     parts, evaluator.evaluations, now - state["began"]))
        state["iteration"] += 1
        state["began"] = time.perf_counter()
        state["next"] = evaluator.evaluations + per_iteration

    def callback(intermediate_result) -> None:
        if evaluator.evaluations >= state["next"] and state["iteration"] < iterations:
            report(intermediate_result.x, float(intermediate_result.fun))

    budget = per_iteration * iterations
    result = minimize(evaluator, x, bounds=bounds, callback=callback, history=history,
                      max_evaluations=budget, max_iterations=budget)
    # The run can end early (converged, or the budget ran out inside an iteration): report the
    # final iterate for every iteration still owed, so each iteration has its image.
    if state["iteration"] < iterations and result.status != 1:  # 1: the budget was spent
        evaluator.stopped = (state["iteration"], stop_reason(result))
    while state["iteration"] < iterations:
        report(result.x, float(result.fun))


def stop_reason(result) -> str:
    """Why scipy's L-BFGS-B ended, in a few plain words."""
    message = str(getattr(result, "message", ""))
    said = message.upper().replace("_", " ")  # scipy's spelling differs between versions
    if "PROJECTED GRADIENT" in said:
        return "converged (the gradient is within tolerance)"
    if "REDUCTION OF F" in said:
        return "converged (the loss stopped decreasing)"
    if "ABNORMAL" in said:
        return "its line search found no lower loss"
    return message.strip().lower() or "it stopped"


def _handed_over(work: Callable[[Callable], None], stop: threading.Event) -> Iterator:
    """Run `work(report)` in a helper thread and yield each value it reports, one at a time:
    the thread waits inside `report` until the consumer asks for the next value.

    Errors in the thread are raised here. When the consumer stops early (close, an exception,
    Ctrl-C while waiting), `stop` is set, the thread ends at its next check and is waited for.

    The consumer's side takes no lock: Ctrl-C raises KeyboardInterrupt wherever the main thread
    is, and one raised while it held a lock (a queue's, a semaphore's, a join's) could leave
    that lock taken and the thread waiting on it for ever. So values and the consumer's go-ahead
    pass through deques (whose append and popleft are single atomic steps) and both sides poll.
    """
    handoff: collections.deque = collections.deque()  # ("value" | "done" | "error", value)
    resumed: collections.deque = collections.deque()  # one go-ahead per value consumed
    ended: collections.deque = collections.deque()  # the thread's last act

    def report(value) -> None:
        handoff.append(("value", value))
        while not resumed and not stop.is_set():
            time.sleep(_HANDOFF_SECONDS)
        if stop.is_set():
            raise _Stop()
        resumed.popleft()

    def run() -> None:
        try:
            work(report)
            handoff.append(("done", None))
        except _Stop:
            handoff.append(("done", None))
        except BaseException as exc:  # handed to the consumer, raised there
            handoff.append(("error", exc))
        finally:
            ended.append(True)

    thread = threading.Thread(target=run, name="styleflow-lbfgs", daemon=True)
    thread.start()
    try:
        pause = _HANDOFF_SECONDS
        while True:
            if not handoff:  # the thread evaluates: look less often the longer it takes
                time.sleep(pause)
                pause = min(2 * pause, _POLL_SECONDS)
                continue
            pause = _HANDOFF_SECONDS
            kind, value = handoff.popleft()
            if kind == "error":
                raise value
            if kind == "done":
                return
            yield value
            resumed.append(True)
    finally:
        stop.set()
        _join(thread, ended)


def _join(thread: threading.Thread, ended: collections.deque) -> None:
    """Wait for the helper thread to end (it stops at its next look at the stop: the next tile
    of a tiled evaluation, else the next evaluation), also through further interrupts, so that
    none leaves it running; the last such interrupt is raised once it has ended. Polled until
    its last act rather than joined: a join interrupted on Python 3.11 may take a running
    thread for ended. The join after it only waits for the thread's exit."""
    interrupted = None
    while not ended or thread.is_alive():
        try:
            if ended:
                thread.join()
            else:
                time.sleep(_POLL_SECONDS)
        except KeyboardInterrupt as exc:
            interrupted = exc
    if interrupted is not None:
        raise interrupted
