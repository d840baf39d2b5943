"""The library's front door: `Stylizer` loads VGG19 once and stylises any number of images.

    from styleflow import Stylizer
    stylizer = Stylizer(weights="lite")
    result = stylizer.transfer("photo.jpg", "painting.jpg", iterations=5)
    result.image.save("out.png")

`transfer` is neural_style_transfer.py's problem (the Keras example, L-BFGS); `stylize` is
neural_style.py's (anishathalye/neural-style, Adam, several styles). `iter_transfer` and
`iter_stylize` return a `Run` that yields every iteration as it finishes. Nothing here prints
or names files: the command lines do that on top of this module.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Sequence

import numpy as np

from . import images, scales as _scales
from .adam import AdamLoop, AdamSettings
from .color import preserve_colors as _preserve_colors
from .defaults import EVALUATIONS_PER_ITERATION, STYLIZE_DEFAULTS, TRANSFER_DEFAULTS
from .errors import StyleflowError
from .lbfgs import Evaluator, iterate_lbfgs, pixel_bounds
from .objective import Parts
from .problem import Networks, Problem, stylize_problem, transfer_problem
from .weights import resolve_weights

_logger = logging.getLogger("styleflow")
T = TRANSFER_DEFAULTS
S = STYLIZE_DEFAULTS


@dataclass
class LossRecord:
    """One iteration's (L-BFGS) or step's (Adam) loss parts and the seconds it took."""

    iteration: int
    evaluations: int
    total: float
    content: float
    style: float
    tv: float
    seconds: float

    @property
    def parts(self) -> Parts:
        return Parts(self.total, self.content, self.style, self.tv)


class Iteration:
    """What one iteration (L-BFGS) or step (Adam) produced, as the Run yields it.

    `iteration` counts from 1. `image` / `array` is the picture to show or save for it: the
    iterate for L-BFGS, the best image so far for Adam (as neural-style's checkpoints). Values
    that need a read from the device (`parts`, `best_loss`, the image) are fetched on first use.
    """

    def __init__(self, iteration: int, iterations: int, evaluations: int, seconds: float,
                 parts: Callable[[], Parts], best_loss: Callable[[], float],
                 array: Callable[[], np.ndarray],
                 precise: Callable[[], np.ndarray] | None = None):
        self.iteration = iteration
        self.iterations = iterations
        self.evaluations = evaluations
        self.seconds = seconds
        self._parts, self._best, self._array = parts, best_loss, array
        self._precise = precise
        self._cache: dict[str, object] = {}

    def _once(self, key: str, make: Callable):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @property
    def parts(self) -> Parts:
        """This iteration's loss parts (Adam: of the image before the step)."""
        return self._once("parts", self._parts)

    @property
    def best_loss(self) -> float:
        """The lowest loss seen so far in the run."""
        return self._once("best", self._best)

    @property
    def array(self) -> np.ndarray:
        """The picture as uint8 RGB (h, w, 3)."""
        return self._once("array", self._array)

    @property
    def precise(self) -> np.ndarray:
        """The picture as float32 RGB on the 0..255 scale, before rounding (16-bit outputs)."""
        if self._precise is None:
            return self.array.astype(np.float32)
        return self._once("precise", self._precise)

    @property
    def image(self):
        """The picture as a PIL.Image."""
        from PIL import Image

        return Image.fromarray(self.array)

    def save(self, path, bit_depth: int = 8) -> None:
        """Write the picture atomically, as Result.save."""
        _save(path, self.array, lambda: self.precise, bit_depth)


def _save(path, array: np.ndarray, precise: Callable[[], np.ndarray], bit_depth: int) -> None:
    """Write a picture: 16 bits per channel from the unrounded values when the file gets them
    (.tif, or .png with bit_depth 16), else the uint8 picture."""
    if images.bit_depth_for(path, bit_depth) == 16:
        images.save_image(path, precise(), 16)
    else:
        images.save_image(path, array)


@dataclass
class Result:
    """A finished (or interrupted) run: the picture, its loss and the loss history."""

    array: np.ndarray
    parts: Parts
    losses: list[LossRecord] = field(default_factory=list)
    evaluations: int = 0
    interrupted: bool = False
    precise: np.ndarray | None = None  # float32 RGB 0..255 before rounding, for 16-bit files

    @property
    def image(self):
        """The picture as a PIL.Image."""
        from PIL import Image

        return Image.fromarray(self.array)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return self.array.shape[0], self.array.shape[1]

    def save(self, path, bit_depth: int = 8) -> None:
        """Write the picture atomically with an sRGB profile; the format follows the
        extension (.png, .jpg, ...). .tif files get 16 bits per channel, and .png files too
        with bit_depth=16, from the optimised values before rounding."""
        _save(path, self.array,
              lambda: self.array.astype(np.float32) if self.precise is None else self.precise,
              bit_depth)


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
    def memory_report(self) -> str:
        """One line: how the run is laid out in memory (one pass or tiles, L-BFGS history)."""
        layout = self.problem.layout
        return layout.describe("lbfgs" if self.unit == "evaluations" else "adam") if layout else ""

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
        return [LossRecord(i, n, *(float(v) for v in np.asarray(values)), seconds)
                for i, n, seconds, values in self._records]

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
                from . import jit

                self.jit_report = jit.apply(
                    self.problem.objective, self.jit_plan, self.problem.start,
                    None if callback is None else lambda n, loss: callback(done + n, loss))
                done += self.jit_plan.trials
            yield from self._iterate(callback, done)
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
                      precise=self._precise_picture(self._coarse_start))

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

    def _units(self) -> int:
        return self.iterations * EVALUATIONS_PER_ITERATION

    def _iterate(self, on_evaluation, done: int) -> Iterator[Iteration]:
        spec = self.problem.network.input_spec
        self.evaluator.on_evaluation = on_evaluation
        self.evaluator.evaluations = done  # the XLA trials count as evaluations too
        bounds = None if self.faithful else pixel_bounds(self.problem.objective.shape,
                                                         *spec.pixel_bounds())
        for step in iterate_lbfgs(self.evaluator, self.problem.start, self.iterations,
                                  schedule="faithful" if self.faithful else "continuous",
                                  evaluations_per_iteration=EVALUATIONS_PER_ITERATION,
                                  bounds=bounds, history=self._history(self.problem)):
            self._last = step
            parts = step.parts
            self._records.append((step.iteration + 1, step.evaluations, step.seconds,
                                  [parts.total, parts.content, parts.style, parts.tv]))
            best = self.evaluator.best_parts.total
            yield Iteration(step.iteration + 1, self.iterations, step.evaluations, step.seconds,
                            parts=lambda p=parts: p, best_loss=lambda b=best: b,
                            array=lambda image=step.image: spec.deprocess(image),
                            precise=lambda image=step.image: spec.deprocess_float(image))

    @staticmethod
    def _history(problem: Problem) -> int:
        return problem.layout.history if problem.layout else 10

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
        done = self._last is not None and self._last.iteration + 1 == self.iterations
        if done:
            image, parts = self._last.image, self._last.parts
        elif self.evaluator.best_image is not None:
            image, parts = self.evaluator.best_image, self.evaluator.best_parts
        else:
            return self._coarse_result()
        return Result(spec.deprocess(image), parts, self.losses, self.evaluator.evaluations,
                      precise=spec.deprocess_float(image),
                      interrupted=not done)


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
        """Adam's settings at the sizes after the coarsest (`scales.FINE_LEARNING_RATE`)."""
        return replace(
            self.settings,
            learning_rate=self.settings.learning_rate * _scales.FINE_LEARNING_RATE)

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
            from .color import preserve_colors_float

            return preserve_colors_float(self.problem.content_rgb, rgb)
        return rgb

    def _picture(self, image: np.ndarray) -> np.ndarray:
        rgb = self.problem.network.input_spec.deprocess(image)
        return _preserve_colors(self.problem.content_rgb, rgb) if self.preserve_colors else rgb

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
                            parts=lambda v=values: Parts(*(float(x) for x in v.numpy())),
                            best_loss=lambda: loop.best_loss,
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
                      precise=self._precise_picture(best))

    def _best_parts(self, records: list[LossRecord]) -> Parts:
        settled = self.loop.settled
        if settled is not None and self.loop.settled_is_best:
            return settled  # the image after the last step was the best
        return min(records, key=lambda r: r.total).parts


class Stylizer:
    """Neural style transfer with VGG19 loaded once, for any number of images.

    weights: "auto" (ImageNet when cached or downloadable, else the shipped block 1-3
    weights), "imagenet", "lite", "random" (seeded, untrained: tests and benchmarks), or a
    path to a Keras .h5 or MatConvNet .mat file. precision: "float32", "bfloat16" for the
    VGG pass (losses stay float32), or "auto": bfloat16 where the CPU (AVX512_BF16, AMX) or GPU
    (compute capability 8.0+) runs it natively, else float32; `self.precision` is the choice.
    pooling: "max" or "avg". seed: for random weights and Adam's start noise (default 0;
    given explicitly, results repeat byte for byte, so `jit="auto"` then does not time).
    jit: "auto" compiles the loss with and without XLA for a long run's size and keeps the
    faster; "on" or "off" force it. notes: called with one-line notes (e.g. the weights fallback); default: the "styleflow"
    logger.

    A network is built once per set of layers, and its loss is compiled once per image size, so
    a second pair of the same size starts optimising at once.

    Images are file paths, PIL images or (h, w, 3) uint8 arrays. Problems the caller can fix
    raise StyleflowError with a one-line message. A KeyboardInterrupt during `transfer` or
    `stylize` propagates with the outcome so far as its `result` attribute (a Result, or None
    when nothing was evaluated); with `iter_*`, call the Run's `result()`.
    """

    def __init__(self, weights: str = "auto", *, precision: str = "float32",
                 pooling: str = "max", seed: int | None = None, jit: str = "auto",
                 notes: Callable[[str], None] | None = None):
        from .hardware import resolve_precision
        from .jit import MODES

        if jit not in MODES:
            raise StyleflowError(f"--jit: must be one of {', '.join(MODES)}, not '{jit}'")
        self.jit = jit
        # An explicit seed promises repeatable results: XLA is then not chosen by timing.
        self.seeded = seed is not None
        self.seed = int(seed or 0)
        notes = notes or _logger.warning
        precision, note = resolve_precision(precision)
        if note:
            notes(note)
        self.weights = resolve_weights(str(weights), seed=self.seed, log=notes)
        self.networks = Networks(self.weights, pooling=pooling, precision=precision)
        self.precision = precision
        self.pooling = pooling

    @property
    def builds(self) -> int:
        """Feature extractors built so far (one per set of layers)."""
        return self.networks.builds

    @property
    def traces(self) -> int:
        """Loss functions traced so far (one per image size and problem kind)."""
        return self.networks.traces

    # -- the Keras example's L-BFGS ------------------------------------------------------

    def iter_transfer(self, content, style, *, iterations: int = T["iterations"],
                      content_weight: float = T["content_weight"],
                      style_weight: float = T["style_weight"], tv_weight: float = T["tv_weight"],
                      height: int | None = None, width: int | None = None,
                      content_layer: str | None = None,
                      style_layers: Sequence[str] | None = None, init=None,
                      faithful: bool = False, max_memory: float | None = None,
                      tile: int | None = None, scales: int = 1, progress: bool = False,
                      on_evaluation: Callable[[int, float], None] | None = None,
                      on_scale: Callable[[_scales.Scale], None] | None = None) -> TransferRun:
        """Prepare neural_style_transfer.py's problem and return a Run yielding its iterations.

        Options are the CLI's (`--iter` is `iterations`). Each iteration is 20 L-BFGS
        evaluations of one continuous run with pixels bounded to 0..255, or with
        `faithful=True` a fresh 20-evaluation L-BFGS run per iteration, as the Keras example.
        Output height defaults to 200 px when neither height nor width is given.
        `on_evaluation(count, loss)` is called after every evaluation; `progress=True` shows a
        tqdm bar (a widget in Jupyter).

        Large outputs: `max_memory` (GB, default the memory available) is the process's
        budget, within which sizes that do not fit in one pass are computed exactly in tiles;
        `tile` (px) forces tiles of that core size. `scales=N` optimises first at N-1 smaller
        sizes (each half the next, per side; `scales.budgets` evaluations each), reported to
        `on_scale`, and starts the requested size from the last one's result.
        """
        _check_numbers(iterations=iterations, content_weight=content_weight,
                       style_weight=style_weight, tv_weight=tv_weight, scales=scales)
        content = images.as_rgb(content, "base image")  # read once for every size
        style = images.as_rgb(style, "style image")

        def make(size=None, starts=True):
            h, w = (height, width) if size is None else size
            return transfer_problem(
                self.networks, content, style, content_weight=content_weight,
                style_weight=style_weight, tv_weight=tv_weight, height=h, width=w,
                content_layer=content_layer, style_layers=style_layers,
                init=init if starts else None, max_memory=max_memory, tile=tile)

        problem = make()
        coarse = self._coarse(problem, scales, make)
        return TransferRun(problem, iterations, faithful, progress, on_evaluation,
                           self._jit_plan(problem, iterations * EVALUATIONS_PER_ITERATION),
                           coarse, on_scale)

    @staticmethod
    def _coarse(problem: Problem, count: int, make: Callable) -> list:
        """(size, problem maker) for the coarse sizes of a `count`-scale run. `make(size,
        starts)` builds the problem at a size; only the coarsest `starts` as a single-size run
        would (from the content, the initial image or noise)."""
        from .network import min_image_side

        sizes = _scales.sizes(problem.size, int(count))[:-1]
        if not sizes:
            return []
        need = min_image_side(problem.network.content_layers + problem.network.style_layers)
        if min(sizes[0]) < need:
            raise StyleflowError(
                f"--scales {count}: the coarsest size, {sizes[0][1]}x{sizes[0][0]} px, is too "
                f"small for the chosen layers (each side at least {need} px); use fewer scales")
        return [(size, lambda size=size, k=k: make(size, k == 0))
                for k, size in enumerate(sizes)]

    def transfer(self, content, style, **options) -> Result:
        """Run `iter_transfer(content, style, **options)` to the end; return the Result (the
        image after the last iteration, as the CLI's last file)."""
        return _finish(self.iter_transfer(content, style, **options))

    # -- neural-style's Adam -------------------------------------------------------------

    def iter_stylize(self, content, styles, *, iterations: int = S["iterations"],
                     width: int | None = None, style_scales: Sequence[float] | None = None,
                     style_blend_weights: Sequence[float] | None = None,
                     content_weight: float = S["content_weight"],
                     content_weight_blend: float = S["content_weight_blend"],
                     style_weight: float = S["style_weight"],
                     style_layer_weight_exp: float = S["style_layer_weight_exp"],
                     tv_weight: float = S["tv_weight"], learning_rate: float = S["learning_rate"],
                     beta1: float = S["beta1"], beta2: float = S["beta2"],
                     epsilon: float = S["epsilon"], content_layers: Sequence[str] | None = None,
                     style_layers: Sequence[str] | None = None, initial=None,
                     initial_noiseblend: float | None = None, preserve_colors: bool = False,
                     seed: int | None = None, max_memory: float | None = None,
                     tile: int | None = None, scales: int = 1, progress: bool = False,
                     on_evaluation: Callable[[int, float], None] | None = None,
                     on_scale: Callable[[_scales.Scale], None] | None = None) -> StylizeRun:
        """Prepare neural_style.py's problem and return a Run yielding every Adam step.

        `styles` is one image or a list; options are the CLI's, with the same defaults. The
        start is seeded noise (`seed`, default the Stylizer's) unless `initial` is given.
        Each step's `image` is the best so far; `preserve_colors` keeps the content's colours
        in every picture produced. `max_memory`, `tile`, `scales` and `on_scale` as in
        `iter_transfer` (style images keep their size relative to the content at every size).
        """
        if isinstance(styles, (str, bytes)) or not isinstance(styles, Sequence):
            styles = [styles]
        _check_numbers(iterations=iterations, content_weight=content_weight,
                       style_weight=style_weight, tv_weight=tv_weight,
                       learning_rate=learning_rate, style_layer_weight_exp=style_layer_weight_exp,
                       scales=scales)
        content = images.as_rgb(content, "content image")  # read once for every size
        styles = [images.as_rgb(style, f"style image {i + 1}") for i, style in enumerate(styles)]

        def make(size=None, starts=True):
            return stylize_problem(
                self.networks, content, styles, width=width if size is None else size[1],
                style_scales=style_scales, style_blend_weights=style_blend_weights,
                content_weight=content_weight, content_weight_blend=content_weight_blend,
                style_weight=style_weight, style_layer_weight_exp=style_layer_weight_exp,
                tv_weight=tv_weight, content_layers=content_layers, style_layers=style_layers,
                initial=initial if starts else None,
                initial_noiseblend=initial_noiseblend if starts else None,
                seed=self.seed if seed is None else int(seed), max_memory=max_memory, tile=tile)

        problem = make()
        return StylizeRun(problem, iterations,
                          AdamSettings(learning_rate, beta1, beta2, epsilon), preserve_colors,
                          progress, on_evaluation, self._jit_plan(problem, iterations),
                          self._coarse(problem, scales, make), on_scale)

    def _jit_plan(self, problem: Problem, evaluations: int):
        from . import jit

        return jit.plan(problem.objective, self.jit, self.seeded, evaluations)

    def stylize(self, content, styles, **options) -> Result:
        """Run `iter_stylize(content, styles, **options)` to the end; return the Result (the
        lowest-loss image, as the CLI's --output)."""
        return _finish(self.iter_stylize(content, styles, **options))


def _finish(run: Run) -> Result:
    try:
        for _ in run:
            pass
    except KeyboardInterrupt as exc:
        exc.result = run.result()
        raise
    return run.result()


def _check_numbers(**values: float) -> None:
    """StyleflowError for what the CLIs' argument types refuse: counts below 1, negative or
    non-finite weights, and all loss weights zero."""
    for name, value in values.items():
        if name in ("iterations", "scales"):
            if int(value) != value or value < 1:
                raise StyleflowError(f"{name}: must be a whole number greater than zero, "
                                     f"not {value!r}")
        elif name in ("learning_rate", "style_layer_weight_exp"):
            if not math.isfinite(value) or value <= 0:
                raise StyleflowError(f"{name}: must be a finite number above zero, not {value!r}")
        elif not math.isfinite(value) or value < 0:
            raise StyleflowError(f"{name}: must be a finite number, zero or more, not {value!r}")
    weights = [values[k] for k in ("content_weight", "style_weight", "tv_weight")]
    if all(w == 0 for w in weights):
        raise StyleflowError("content_weight, style_weight, tv_weight: all are zero, so there "
                             "is nothing to optimise")


def transfer(content, style, *, weights: str = "auto", precision: str = "float32",
             pooling: str = "max", seed: int | None = None, **options) -> Result:
    """One-off `Stylizer(weights, ...).transfer(content, style, **options)`. For several
    images, make one Stylizer and reuse it: the network is then loaded once."""
    return Stylizer(weights, precision=precision, pooling=pooling, seed=seed).transfer(
        content, style, **options)


def stylize(content, styles, *, weights: str = "auto", precision: str = "float32",
            pooling: str = "max", seed: int | None = None, **options) -> Result:
    """One-off `Stylizer(weights, ...).stylize(content, styles, **options)`."""
    return Stylizer(weights, precision=precision, pooling=pooling, seed=seed).stylize(
        content, styles, **options)
