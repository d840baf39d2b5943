"""A prepared run (`Run`): iterating it optimises and yields an Iteration as each finishes;
`TransferRun` is L-BFGS on the Keras example's problem, `StylizeRun` Adam on neural-style's.
Both optimise at coarse sizes first when asked (coarse-to-fine) and time XLA when planned."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable, Iterator, Sequence

import numpy as np

from ..defaults import EVALUATIONS_PER_ITERATION, LBFGS_HISTORY
from ..io.color import preserve_colors, preserve_colors_float
from ..objective.terms import Parts
from ..optim import jit, scales as _scales
from ..optim.adam import AdamLoop, AdamSettings
from ..optim.lbfgs import Evaluator, iterate_lbfgs, pixel_bounds
from .problem import Problem
from .results import Iteration, LossRecord, Result


class Run:
    """A prepared run: images loaded, sizes checked, targets computed. Iterating it optimises,
    yielding an `Iteration` each time one finishes; stop whenever you like.

    `result()` gives the outcome so far at any time — after the loop, after `break`, or after a
    KeyboardInterrupt — or None when nothing has been evaluated yet.
    """

    method = ""
    unit = ""

    def __init__(self, problem: Problem, iterations: int, progress: bool,
                 on_evaluation: Callable[[int, float], None] | None, jit_plan=None,
                 coarse: Sequence[tuple[tuple[int, int], Callable[[], Problem]]] = (),
                 on_scale: Callable[[_scales.Scale], None] | None = None):
        self.problem = problem
        # Coarse-to-fine: (size, problem maker) for each size before this one, coarsest first.
        self.coarse = list(coarse)
        self.on_scale = on_scale
        self.scales: list[_scales.Scale] = []  # the coarse sizes finished so far
        self._coarse_start: np.ndarray | None = None  # the last one, upsampled to full size
        self.iterations = iterations
        self.on_evaluation = on_evaluation
        self.progress = progress
        self.jit_plan = jit_plan
        self.jit_report: str | None = None  # set once the XLA choice is made
        self._records: list[tuple] = []
        self._started = False
        # The input files the run read (set by the Stylizer): its pictures' save() refuses them.
        self.inputs: tuple = ()

    # -- what the run is -----------------------------------------------------------------

    @property
    def size(self) -> tuple[int, int]:
        """Output (height, width)."""
        return self.problem.size

    @property
    def content_layers(self) -> list[str]:
        return self.problem.network.content_layers

    @property
    def style_layers(self) -> list[str]:
        return self.problem.network.style_layers

    @property
    def weights_source(self) -> str:
        return self.problem.network.weights.source

    @property
    def precision(self) -> str:
        """float32 or bfloat16: the arithmetic of the VGG pass."""
        return self.problem.network.precision

    @property
    def layout(self):
        """How the run is laid out in memory (plan.budget.Layout: one pass or tiles, L-BFGS
        history, the estimate); None when nothing was planned."""
        return self.problem.layout

    @property
    def memory_report(self) -> str:
        """One line: how the run is laid out in memory (one pass or tiles, L-BFGS history)."""
        layout = self.problem.layout
        return layout.describe(self._optimiser) if layout else ""

    @property
    def times_jit(self) -> bool:
        """Whether the run times XLA against plain compilation before it optimises (its
        account is `jit_report` once the first iteration is out)."""
        return bool(self.jit_plan is not None and self.jit_plan.measure)

    @property
    def coarse_units(self) -> int:
        """Evaluations or steps planned at the coarse sizes (coarse-to-fine)."""
        return sum(_scales.budgets(self._optimiser, len(self.coarse) + 1))

    @property
    def total(self) -> int:
        """Units of work the run will do: L-BFGS evaluations or Adam steps (`unit`), those at
        the coarse sizes first, plus the trial evaluations that time XLA against plain
        compilation, if any."""
        return (self.coarse_units + self._units()
                + (self.jit_plan.trials if self.jit_plan else 0))

    _optimiser = ""

    def _units(self) -> int:
        raise NotImplementedError

    @property
    def losses(self) -> list[LossRecord]:
        """Loss parts of every finished iteration or step so far."""
        records = []
        for i, n, seconds, values in self._records:
            parts = values if isinstance(values, Parts) else \
                self.problem.objective.parts_of(np.asarray(values))
            records.append(LossRecord(i, n, parts.total, parts.content, parts.style, parts.tv,
                                      seconds, parts.photo, parts.temporal))
        return records

    def __iter__(self) -> Iterator[Iteration]:
        if self._started:
            raise RuntimeError("a Run can be iterated once; start another for a new run")
        self._started = True
        bar = None
        callback = self.on_evaluation
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.total, unit=self.unit.rstrip("s"), desc=self.method)

            def show(n: int, loss: float, user=self.on_evaluation) -> None:
                # L-BFGS may spend an evaluation past its budget: the bar stops at full.
                bar.update(min(n, bar.total) - bar.n)
                bar.set_postfix(loss=f"{loss:.4e}", refresh=False)
                if user is not None:
                    user(n, loss)
            callback = show
        try:
            done = self._run_coarse(callback) if self.coarse else 0
            if self.jit_plan is not None:
                self.jit_report = jit.apply(
                    self.problem.objective, self.jit_plan, self.problem.start,
                    None if callback is None else lambda n, loss: callback(done + n, loss))
                done += self.jit_plan.trials
            for iteration in self._iterate(callback, done):
                iteration.inputs = self.inputs
                yield iteration
        finally:
            if bar is not None:
                bar.close()

    def _iterate(self, on_evaluation, done: int) -> Iterator[Iteration]:
        """Optimise, yielding iterations; `done` evaluations (coarse sizes, XLA trials) were
        reported already."""
        raise NotImplementedError

    def _run_coarse(self, callback) -> int:
        """Optimise at each coarse size, each starting from the last one's result upsampled;
        start the full size from the last. Returns the evaluations spent."""
        done, image = 0, None
        count = len(self.coarse) + 1
        for k, ((size, make), per) in enumerate(
                zip(self.coarse, _scales.budgets(self._optimiser, count))):
            began = time.perf_counter()
            problem = make()
            size = problem.size  # as the problem rounds it (e.g. from the width alone)
            start = problem.start if image is None else _scales.upsample(image, size)
            report = None if callback is None else (
                lambda n, loss, base=done, per=per: callback(base + min(n, per), loss))
            image, parts, used = self._coarse_stage(problem, start, per, report)
            done += used
            self._coarse_start = _scales.upsample(image, self.problem.size)
            scale = _scales.Scale(k + 1, count, size, used, parts, time.perf_counter() - began)
            self.scales.append(scale)
            if self.on_scale is not None:
                self.on_scale(scale)
        self._restart(self._coarse_start)
        return done

    def _coarse_stage(self, problem: Problem, start: np.ndarray, evaluations: int,
                      on_evaluation) -> tuple[np.ndarray, Parts, int]:
        """Optimise `problem` from `start` for about `evaluations`; (image, parts, used)."""
        raise NotImplementedError

    def _restart(self, start: np.ndarray) -> None:
        """Start the full size from `start` (network space) instead of the problem's start."""
        raise NotImplementedError

    def _coarse_result(self) -> Result | None:
        """When interrupted before the full size's first evaluation: the last coarse size's
        result, upsampled to the full size (None when no coarse size finished)."""
        if self._coarse_start is None:
            return None
        spec = self.problem.network.input_spec
        return Result(spec.deprocess(self._coarse_start), self.scales[-1].parts, [],
                      sum(s.evaluations for s in self.scales), interrupted=True,
                      precise=self._precise_picture(self._coarse_start), inputs=self.inputs)

    def _precise_picture(self, image: np.ndarray) -> np.ndarray:
        """Float RGB 0..255 of a network-space image (as the run's pictures are made)."""
        return self.problem.network.input_spec.deprocess_float(image)

    def result(self) -> Result | None:
        raise NotImplementedError


class TransferRun(Run):
    """L-BFGS on the Keras example's problem (see Stylizer.iter_transfer)."""

    method = "L-BFGS"
    unit = "evaluations"
    _optimiser = "lbfgs"

    def __init__(self, problem, iterations, faithful, progress, on_evaluation, jit_plan=None,
                 coarse=(), on_scale=None):
        super().__init__(problem, iterations, progress, on_evaluation, jit_plan, coarse,
                         on_scale)
        self.faithful = faithful
        self.evaluator = Evaluator(problem.objective)
        self._last = None
        self._finished = 0  # iterations finished

    def _units(self) -> int:
        return self.iterations * EVALUATIONS_PER_ITERATION

    def _iterate(self, on_evaluation, done: int) -> Iterator[Iteration]:
        yield from self._lbfgs(self.evaluator, self.problem.start, self.iterations,
                               on_evaluation, done)

    def _lbfgs(self, evaluator: Evaluator, start: np.ndarray, count: int, on_evaluation,
               done: int, first: int = 0, stage: int = 1) -> Iterator[Iteration]:
        """`count` iterations of `evaluator`'s problem from `start`, numbered after `first`;
        `done` evaluations were reported already."""
        spec = self.problem.network.input_spec
        evaluator.on_evaluation = on_evaluation
        evaluator.evaluations = done  # the XLA trials count as evaluations too
        bounds = None if self.faithful else pixel_bounds(self.problem.objective.shape,
                                                         *spec.pixel_bounds())
        for step in iterate_lbfgs(evaluator, start, count,
                                  schedule="faithful" if self.faithful else "continuous",
                                  evaluations_per_iteration=EVALUATIONS_PER_ITERATION,
                                  bounds=bounds, history=self._history(self.problem)):
            self._last, number = step, first + step.iteration + 1
            self._finished = number
            parts = step.parts
            self._records.append((number, step.evaluations, step.seconds, parts))
            best = evaluator.best_parts.total
            yield Iteration(number, self.iterations, step.evaluations, step.seconds,
                            parts=lambda p=parts: p, best_loss=lambda b=best: b,
                            array=lambda image=step.image: spec.deprocess(image),
                            precise=lambda image=step.image: spec.deprocess_float(image),
                            stage=stage)

    @property
    def stopped(self) -> tuple[int, str] | None:
        """(iterations finished, why) when L-BFGS ended before its evaluations were spent
        (converged, or its line search found no lower loss): the later iterations repeat the
        last image. None otherwise."""
        return self.evaluator.stopped

    @property
    def stage_stops(self) -> list[tuple[int, int, int, str]]:
        """`stopped` as PhotoRun.stage_stops gives it: [(1, the last iteration computed, the
        last iteration, why)], or []."""
        stopped = self.stopped
        return [] if stopped is None else [(1, stopped[0], self.iterations, stopped[1])]

    @staticmethod
    def _history(problem: Problem) -> int:
        return problem.layout.history if problem.layout else LBFGS_HISTORY

    def _coarse_stage(self, problem, start, evaluations, on_evaluation):
        spec = problem.network.input_spec
        evaluator = Evaluator(problem.objective, on_evaluation)
        bounds = pixel_bounds(problem.objective.shape, *spec.pixel_bounds())
        last = None
        for last in iterate_lbfgs(evaluator, start, 1, evaluations_per_iteration=evaluations,
                                  bounds=bounds, history=self._history(problem)):
            pass
        return last.image, last.parts, evaluator.evaluations

    def _restart(self, start):
        self.problem.start = start

    def result(self) -> Result | None:
        """The last iteration's image once all are done; before that (an interruption, an
        early stop) the lowest-loss image evaluated so far."""
        spec = self.problem.network.input_spec
        done = self._finished == self.iterations
        if done:
            image, parts = self._last.image, self._last.parts
        elif self.evaluator.best_image is not None:
            image, parts = self.evaluator.best_image, self.evaluator.best_parts
        else:
            return self._coarse_result()
        return Result(spec.deprocess(image), parts, self.losses, self.evaluator.evaluations,
                      precise=spec.deprocess_float(image),
                      interrupted=not done, inputs=self.inputs)


class PhotoRun(TransferRun):
    """L-BFGS on Deep Photo Style Transfer's problem (see Stylizer.iter_photo): iterations
    of EVALUATIONS_PER_ITERATION evaluations of one continuous run, pixels bounded. With two
    `stages` (Luan et al.'s), the first `first_stage` iterations leave the photorealism term
    out and the rest, a fresh L-BFGS run from where the first stopped, put it in."""

    def __init__(self, problem, iterations, progress, on_evaluation, jit_plan=None,
                 coarse=(), on_scale=None, stages: int = 1):
        super().__init__(problem, iterations, False, progress, on_evaluation, jit_plan, coarse,
                         on_scale)
        two = stages == 2 and problem.objective.photo_weight > 0
        self.stages = 2 if two and iterations >= 2 else 1
        # Iterations without the term; the paper gives both stages the same count.
        self.first_stage = iterations // 2 if self.stages == 2 else 0
        self._first_evaluator: Evaluator | None = None
        self._first_last = None  # stage 1's last iteration

    @property
    def stages_report(self) -> str:
        """One line: where the stages split (empty for one stage)."""
        if self.stages == 1:
            return ""
        return (f"two stages: {_span(1, self.first_stage)} without the photorealism term, "
                f"{_span(self.first_stage + 1, self.iterations)} with it")

    @property
    def stage(self) -> int:
        """The stage under way (1 or 2; 1 before the run starts)."""
        return 2 if self.stages == 2 and self._finished >= self.first_stage else 1

    def _iterate(self, on_evaluation, done: int) -> Iterator[Iteration]:
        start = self.problem.start
        if self.first_stage:
            free = self.problem.objective.with_photo_weight(0.0)
            self._first_evaluator = Evaluator(free)
            first = self._first_evaluator
            self.evaluator, final = first, Evaluator(self.problem.objective)
            for it in self._lbfgs(first, start, self.first_stage, on_evaluation, done):
                yield it
            start, done = self._last.image, first.evaluations
            self._first_last = self._last
            self.evaluator = final
        yield from self._lbfgs(self.evaluator, start, self.iterations - self.first_stage,
                               on_evaluation, done, first=self.first_stage,
                               stage=self.stages)

    @property
    def stopped(self) -> tuple[int, str] | None:
        stopped = self.evaluator.stopped
        if stopped is not None and self.evaluator is not self._first_evaluator:
            return self.first_stage + stopped[0], stopped[1]
        return stopped

    @property
    def stage_stops(self) -> list[tuple[int, int, int, str]]:
        """Each stage that L-BFGS ended before its evaluations were spent, as (stage, the
        last iteration it computed, the stage's last iteration, why): the iterations between
        repeat its last image. Stage 1 only in a two-stage run."""
        stops = []
        if self._first_evaluator is not None and self._first_evaluator.stopped is not None:
            done, why = self._first_evaluator.stopped
            stops.append((1, done, self.first_stage, why))
        if self.evaluator is not self._first_evaluator and self.evaluator.stopped is not None:
            done, why = self.evaluator.stopped
            stops.append((self.stages, self.first_stage + done, self.iterations, why))
        return stops

    def result(self) -> Result | None:
        """As TransferRun's; interrupted at the start of the second stage, the first stage's
        last image."""
        if (self._first_last is not None and self.evaluator.best_image is None
                and self._finished < self.iterations):
            spec = self.problem.network.input_spec
            last = self._first_last
            return Result(spec.deprocess(last.image), last.parts, self.losses,
                          self._first_evaluator.evaluations, interrupted=True,
                          precise=spec.deprocess_float(last.image), inputs=self.inputs)
        return super().result()


def _span(first: int, last: int) -> str:
    """'iteration 3' or 'iterations 3-5'."""
    return f"iteration {first}" if first == last else f"iterations {first}-{last}"


class StylizeRun(Run):
    """Adam on neural-style's problem (see Stylizer.iter_stylize)."""

    method = "Adam"
    unit = "steps"
    _optimiser = "adam"

    def __init__(self, problem, iterations, settings: AdamSettings, preserve_colors: bool,
                 progress, on_evaluation, jit_plan=None, coarse=(), on_scale=None):
        super().__init__(problem, iterations, progress, on_evaluation, jit_plan, coarse,
                         on_scale)
        self.preserve_colors = preserve_colors
        self.settings = settings
        self.loop = AdamLoop(problem.objective, problem.start, settings)

    def _fine_settings(self) -> AdamSettings:
        """Adam's settings at the sizes after the coarsest (`scales.FINE_LEARNING_RATE`,
        reached over `scales.FINE_WARMUP_STEPS`)."""
        return replace(
            self.settings,
            learning_rate=self.settings.learning_rate * _scales.FINE_LEARNING_RATE,
            warmup=_scales.FINE_WARMUP_STEPS)

    def _coarse_stage(self, problem, start, evaluations, on_evaluation):
        # The coarsest size starts from the run's start (noise, by default): full rate there.
        settings = self._fine_settings() if self.scales else self.settings
        loop = AdamLoop(problem.objective, start, settings)
        for i in range(1, evaluations + 1):
            values = loop.step()
            if i == evaluations:
                loop.settle()
            if on_evaluation is not None:
                on_evaluation(i, float(values[0]))
        parts = loop.settled if loop.settled_is_best else None
        if parts is None:
            parts, _ = problem.objective.loss_and_grads(loop.best())
        return loop.best(), parts, evaluations

    def _restart(self, start):
        self.problem.start = start
        self.loop = AdamLoop(self.problem.objective, start, self._fine_settings())

    def _units(self) -> int:
        return self.iterations

    def _precise_picture(self, image: np.ndarray) -> np.ndarray:
        rgb = self.problem.network.input_spec.deprocess_float(image)
        if self.preserve_colors:
            return preserve_colors_float(self.problem.content_rgb, rgb)
        return rgb

    def _picture(self, image: np.ndarray) -> np.ndarray:
        rgb = self.problem.network.input_spec.deprocess(image)
        return preserve_colors(self.problem.content_rgb, rgb) if self.preserve_colors else rgb

    def _iterate(self, on_evaluation, done: int) -> Iterator[Iteration]:
        loop = self.loop
        began = time.perf_counter()
        for i in range(1, self.iterations + 1):
            values = loop.step()
            if i == self.iterations:
                loop.settle()
            if on_evaluation is not None:
                on_evaluation(done + i, float(values[0]))
            now = time.perf_counter()
            self._records.append((i, i, now - began, values))
            yield Iteration(i, self.iterations, i, now - began,
                            parts=lambda v=values: self.problem.objective.parts_of(v.numpy()),
                            best_loss=lambda b=loop.best_loss_tensor: float(b.numpy()),
                            array=lambda best=loop.best_image: self._picture(best.numpy()),
                            precise=lambda best=loop.best_image: self._precise_picture(
                                best.numpy()))
            began = time.perf_counter()

    def result(self) -> Result | None:
        """The lowest-loss image so far (the final output once all steps are done)."""
        loop = self.loop
        if loop.steps == 0:
            return self._coarse_result()
        records = self.losses
        best = loop.best()
        return Result(self._picture(best), self._best_parts(records), records, loop.steps,
                      interrupted=loop.steps < self.iterations,
                      precise=self._precise_picture(best), inputs=self.inputs)

    def _best_parts(self, records: list[LossRecord]) -> Parts:
        settled = self.loop.settled
        if settled is not None and self.loop.settled_is_best:
            return settled  # the image after the last step was the best
        if not records:  # interrupted from on_evaluation after the first step, before its record
            return self.problem.objective.loss_and_grads(self.loop.best())[0]
        return min(records, key=lambda r: r.total).parts
