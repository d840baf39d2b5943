"""XLA or not, by measurement: as cuDNN's benchmark mode picks convolution algorithms, `auto`
compiles the loss both ways for the run's size, times a few evaluations of each and keeps the
faster: which is faster differs between CPUs (docs/performance.md), so no fixed setting is
right everywhere. The choice is remembered per image size on the LossGraph, so a batch measures
once per size."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import StyleflowError
from ..model.runtime import deterministic_kernels
from ..objective.objective import Objective
# Below this many evaluations the trials (two compilations and their timings) cannot pay.
AUTO_MIN_EVALUATIONS = 100
# Evaluations of each compilation: the first (compiling) is not timed, the others are.
TRIALS_EACH = 3
TRIALS = 2 * TRIALS_EACH


@dataclass
class JitPlan:
    """What a run will do about XLA: `measure` (with TRIALS evaluations) or use `xla`."""

    measure: bool
    xla: bool
    reason: str

    @property
    def trials(self) -> int:
        return TRIALS if self.measure else 0


def plan(objective: Objective, mode: str, seeded: bool, evaluations: int) -> JitPlan:
    """The plan for a run of about `evaluations` evaluations in `mode` (defaults.JIT_MODES).
    With an explicit seed the choice must not depend on timing (repeat runs give the same
    bytes): plain compilation then."""
    graph, shape = objective.graph, tuple(objective.shape)
    if mode == "on" and deterministic_kernels():
        raise StyleflowError("jit=on: XLA has no deterministic max-pooling gradient, and "
                             "seed asks for deterministic kernels; use jit=off or auto",
                             params=("jit=on", "seed", "jit=off"))
    if getattr(objective, "tiled", False):
        return JitPlan(False, False, "jit: plain compilation (tiled evaluation)")
    if mode != "auto":
        return JitPlan(False, mode == "on", f"jit {mode}")
    if shape in graph.jit_by_shape:
        return JitPlan(False, graph.jit_by_shape[shape], "jit auto: measured earlier for this size")
    if seeded or deterministic_kernels():
        return JitPlan(False, False, "jit auto: plain compilation, not timed (a seed was given)")
    if evaluations < AUTO_MIN_EVALUATIONS:
        return JitPlan(False, False, "jit auto: plain compilation (run too short to time both)")
    return JitPlan(True, False, "jit auto: to be measured")


def apply(objective: Objective, jit: JitPlan, image: np.ndarray,
          on_evaluation: Callable[[int, float], None] | None = None) -> str:
    """Carry out `jit` for this objective's size (timing both compilations on `image` when it
    says so, reporting each trial to `on_evaluation`); returns a one-line account."""
    graph, shape = objective.graph, tuple(objective.shape)
    if not jit.measure:
        graph.jit_by_shape.setdefault(shape, jit.xla)
        return jit.reason
    medians = {}
    done = 0
    for xla in (False, True):
        times = []
        for _ in range(TRIALS_EACH):
            began = time.perf_counter()
            parts, _ = objective.loss_and_grads(image, xla=xla)
            times.append(time.perf_counter() - began)
            done += 1
            if on_evaluation is not None:
                on_evaluation(done, parts.total)
        medians[xla] = statistics.median(times[1:])  # the first one compiles
    choice = medians[True] < medians[False]
    graph.jit_by_shape[shape] = choice
    return (f"jit auto: plain {medians[False]:.3f} s, XLA {medians[True]:.3f} s per evaluation "
            f"({TRIALS} trial evaluations): using {'XLA' if choice else 'plain'}")
