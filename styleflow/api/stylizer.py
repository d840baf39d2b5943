"""The library's front door: `Stylizer` loads VGG19 once and stylises any number of images.

    from styleflow import Stylizer
    stylizer = Stylizer(weights="lite")
    result = stylizer.transfer("photo.jpg", "painting.jpg", iterations=5)
    result.image.save("out/photo.png")

`transfer` is neural_style_transfer.py's problem (the Keras example, L-BFGS); `stylize` is
neural_style.py's (anishathalye/neural-style, Adam, several styles, optionally masked); `photo`
is Deep Photo Style Transfer's (a photograph restyled by another, with segmentation masks when
given). `iter_transfer`, `iter_stylize` and `iter_photo` return a `Run` that yields every
iteration as it finishes. Nothing here prints
or names files: the front ends do that on top of this package.
"""

from __future__ import annotations

import logging
import numbers
from typing import Callable, Sequence

from ..defaults import (EVALUATIONS_PER_ITERATION, JIT_MODES, PHOTO_DEFAULTS, POOLINGS,
                        STYLIZE_DEFAULTS, TRANSFER_DEFAULTS, VIDEO_DEFAULTS, VIDEO_METHODS)
from ..errors import StyleflowError, check_choice
from ..io import images
from ..model import runtime
from ..model.layout import min_image_side
from ..model.machine import resolve_precision
from ..model.weights import resolve_weights
from ..optim import jit, scales as _scales
from ..optim.adam import AdamSettings
from .checks import (check_flags, check_numbers, check_one_side, check_options, check_sizes,
                     options_checked)
from .networks import Networks
from .problem import Problem, photo_problem, stylize_problem, transfer_problem
from .results import Result
from .runs import PhotoRun, Run, StylizeRun, TransferRun
from .video import UNITS, VideoResult, VideoRun, adam_optimiser, lbfgs_optimiser, load_frames

_logger = logging.getLogger("styleflow")
T = TRANSFER_DEFAULTS
S = STYLIZE_DEFAULTS
P = PHOTO_DEFAULTS
class Stylizer:
    """Neural style transfer with VGG19 loaded once, for any number of images.

    weights: "auto" (ImageNet when cached or downloadable, else the shipped block 1-3
    weights), "imagenet", "lite", "random" (seeded, untrained: tests and benchmarks), or a
    path to a Keras .h5 or MatConvNet .mat file; they are read when the Stylizer is made.
    precision: "float32", "bfloat16" for the VGG pass (losses stay float32), or "auto":
    bfloat16 where the CPU (AVX512_BF16, AMX) or GPU (compute capability 8.0+) runs it
    natively, else float32; `self.precision` is the choice. pooling: "max" or "avg".
    seed: for random weights and Adam's start noise (default None, which seeds with 0; given
    explicitly, results repeat byte for byte, so `jit="auto"` then does not time).
    deterministic: ask TensorFlow for deterministic kernels, process-wide (GPU convolutions
    otherwise may differ between runs; the command lines ask for them with --seed).
    jit: "auto" compiles the loss with and without XLA for a long run's size and keeps the
    faster; "on" or "off" force it. notes: called with one-line notes (e.g. the weights
    fallback); default: the "styleflow" logger.

    The network is built once per set of layers, on first use, and its loss is compiled once
    per image size, so a second pair of the same size starts optimising at once.

    Images are file paths, PIL images or NumPy arrays (io.images.as_rgb). Problems the caller
    can fix raise StyleflowError with a one-line message. A KeyboardInterrupt during `transfer`
    or `stylize` propagates with the outcome so far as its `result` attribute (a Result, or None
    when nothing was evaluated); with `iter_*`, call the Run's `result()`.
    """

    def __init__(self, weights: str = "auto", *, precision: str = "float32",
                 pooling: str = "max", seed: int | None = None, jit: str = "auto",
                 deterministic: bool = False, notes: Callable[[str], None] | None = None):
        check_choice("jit", jit, JIT_MODES)
        check_choice("pooling", pooling, POOLINGS)
        self.jit = jit
        # An explicit seed promises repeatable results: XLA is then not chosen by timing.
        check_sizes(seed=seed)
        self.seeded = seed is not None
        self.seed = int(seed or 0)
        notes = notes or _logger.warning
        self.notes = notes
        if deterministic:
            runtime.enable_determinism()
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

    @options_checked
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

        Options and defaults are neural_style_transfer.py's. Each iteration is 20 L-BFGS
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
        input_files = _input_files(content, style, init)
        check_numbers(iterations=iterations, content_weight=content_weight,
                       style_weight=style_weight, tv_weight=tv_weight, scales=scales)
        check_sizes(height=height, width=width, tile=tile)
        iterations, scales = int(iterations), int(scales)  # NumPy's integers too
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
        run = TransferRun(problem, iterations, faithful, progress, on_evaluation,
                           self._jit_plan(problem, iterations * EVALUATIONS_PER_ITERATION),
                           coarse, on_scale)
        run.inputs = input_files
        return run

    @staticmethod
    def _coarse(problem: Problem, count: int, make: Callable) -> list:
        """(size, problem maker) for the coarse sizes of a `count`-scale run. `make(size,
        starts)` builds the problem at a size; only the coarsest `starts` as a single-size run
        would (from the content, the initial image or noise)."""
        sizes = _scales.sizes(problem.size, int(count))[:-1]
        if not sizes:
            return []
        need = min_image_side(problem.network.content_layers + problem.network.style_layers)
        if min(sizes[0]) < need:
            raise StyleflowError(
                f"scales={count}: the coarsest size, {sizes[0][1]}x{sizes[0][0]} px, is too "
                f"small for the chosen layers (each side at least {need} px); use fewer scales",
                params=(f"scales={count}",))
        return [(size, lambda size=size, k=k: make(size, k == 0))
                for k, size in enumerate(sizes)]

    def transfer(self, content, style, **options) -> Result:
        """Run `iter_transfer(content, style, **options)` to the end; return the Result (the
        image after the last iteration)."""
        check_options("transfer", Stylizer.iter_transfer, options)
        return _finish(self.iter_transfer(content, style, **options))

    # -- neural-style's Adam -------------------------------------------------------------

    @options_checked
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
                     tile: int | None = None, scales: int = 1, style_masks=None,
                     progress: bool = False,
                     on_evaluation: Callable[[int, float], None] | None = None,
                     on_scale: Callable[[_scales.Scale], None] | None = None) -> StylizeRun:
        """Prepare neural_style.py's problem and return a Run yielding every Adam step.

        `styles` is one image or a list; options are the CLI's, with the same defaults. The
        start is seeded noise (`seed`, default the Stylizer's) unless `initial` is given.
        Each step's `image` is the best so far; `preserve_colors` keeps the content's colours
        in every picture produced. `max_memory`, `tile`, `scales` and `on_scale` as in
        `iter_transfer` (style images keep their size relative to the content at every size).
        `style_masks`: one grey image per style (any image kind, the content's aspect ratio)
        saying where on the output that style paints, white fully, black not at all; soft
        values blend (guided Gram matrices, Gatys et al. 2017).
        """
        if isinstance(styles, (str, bytes)) or not isinstance(styles, Sequence):
            styles = [styles]
        input_files = _input_files(content, styles, initial, style_masks)
        check_numbers(iterations=iterations, content_weight=content_weight,
                       style_weight=style_weight, tv_weight=tv_weight,
                       learning_rate=learning_rate, style_layer_weight_exp=style_layer_weight_exp,
                       scales=scales, beta1=beta1, beta2=beta2, epsilon=epsilon)
        check_sizes(width=width, tile=tile, seed=seed)
        iterations, scales = int(iterations), int(scales)  # NumPy's integers too
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
                seed=self.seed if seed is None else int(seed), max_memory=max_memory, tile=tile,
                style_masks=style_masks)

        problem = make()
        run = StylizeRun(problem, iterations,
                          AdamSettings(learning_rate, beta1, beta2, epsilon), preserve_colors,
                          progress, on_evaluation, self._jit_plan(problem, iterations),
                          self._coarse(problem, scales, make), on_scale)
        run.inputs = input_files
        return run

    def _jit_plan(self, problem: Problem, evaluations: int):
        return jit.plan(problem.objective, self.jit, self.seeded, evaluations)

    def stylize(self, content, styles, **options) -> Result:
        """Run `iter_stylize(content, styles, **options)` to the end; return the Result (the
        lowest-loss image)."""
        check_options("stylize", Stylizer.iter_stylize, options)
        return _finish(self.iter_stylize(content, styles, **options))


    # -- Deep Photo Style Transfer ----------------------------------------------------------

    @options_checked
    def iter_photo(self, content, style, *, content_mask=None, style_mask=None,
                   photorealism: float = P["photorealism"], iterations: int = P["iterations"],
                   stages: int = P["stages"],
                   content_weight: float = P["content_weight"],
                   style_weight: float = P["style_weight"], tv_weight: float = P["tv_weight"],
                   height: int | None = None, width: int | None = None,
                   content_layers: Sequence[str] | None = None,
                   style_layers: Sequence[str] | None = None, init=None,
                   max_memory: float | None = None, tile: int | None = None, scales: int = 1,
                   progress: bool = False,
                   on_evaluation: Callable[[int, float], None] | None = None,
                   on_scale: Callable[[_scales.Scale], None] | None = None) -> PhotoRun:
        """Prepare a photorealistic transfer (Luan et al. 2017, "Deep Photo Style Transfer")
        of `style`'s look onto the photograph `content`; return a Run yielding its iterations.

        `content_mask` and `style_mask`: colour-coded segmentations (one colour a region; the
        colours present in both are matched), so each region of the output takes the look of
        the same-coloured region of the style; without them the whole images are matched.
        `photorealism` weighs the term that keeps every 3x3 window of the output an affine
        colour transform of the content's (the matting Laplacian; 0 turns it off). The output
        starts from the content. Each iteration is EVALUATIONS_PER_ITERATION L-BFGS
        evaluations. `stages=2` (Luan et al.'s two stages, the default) spends the first
        `iterations // 2` iterations without the photorealism term, then starts L-BFGS afresh
        with it for the rest; `stages=1` puts it in from the first evaluation. (With `scales`,
        the stages split the requested size's iterations.) Without height and width the output is PHOTO_DEFAULTS["width"] px wide.
        `max_memory`, `tile`, `scales`, `on_scale`, `progress` and `on_evaluation` as in
        `iter_transfer`.
        """
        input_files = _input_files(content, style, content_mask, style_mask, init)
        check_numbers(iterations=iterations, content_weight=content_weight,
                       style_weight=style_weight, tv_weight=tv_weight, scales=scales,
                       photorealism=photorealism)
        check_sizes(height=height, width=width, tile=tile)
        check_one_side(width, height)
        iterations, scales = int(iterations), int(scales)  # NumPy's integers too
        if stages not in (1, 2) or not isinstance(stages, numbers.Integral) or isinstance(
                stages, bool):
            raise StyleflowError(f"stages: 1 or 2, not {stages!r}", params=("stages",))
        content = images.as_rgb(content, "content image")  # read once for every size
        style = images.as_rgb(style, "style image")

        def make(size=None, starts=True):
            h, w = (height, width) if size is None else size
            return photo_problem(
                self.networks, content, style, content_mask=content_mask,
                style_mask=style_mask, photorealism=photorealism,
                content_weight=content_weight, style_weight=style_weight, tv_weight=tv_weight,
                height=h, width=w, content_layers=content_layers, style_layers=style_layers,
                init=init if starts else None, max_memory=max_memory, tile=tile,
                notes=self.notes if size is None else None, coarse=size is not None)

        problem = make()
        coarse = self._coarse(problem, scales, make)
        run = PhotoRun(problem, iterations, progress, on_evaluation,
                        self._jit_plan(problem, iterations * EVALUATIONS_PER_ITERATION),
                        coarse, on_scale, stages=int(stages))
        run.inputs = input_files
        return run

    def photo(self, content, style, **options) -> Result:
        """Run `iter_photo(content, style, **options)` to the end; return the Result (the
        image after the last iteration)."""
        check_options("photo", Stylizer.iter_photo, options)
        return _finish(self.iter_photo(content, style, **options))


    # -- video (Ruder et al. 2016) -------------------------------------------------------

    @options_checked
    def iter_video(self, video, style, *, method: str = "lbfgs", iterations: int | None = None,
                   frame_iterations: int | None = None, temporal_weight: float | None = None,
                   long_term: bool = False, independent: bool = False,
                   content_weight: float | None = None, style_weight: float | None = None,
                   tv_weight: float | None = None, learning_rate: float | None = None,
                   height: int | None = None, width: int | None = None,
                   content_layers: Sequence[str] | None = None,
                   style_layers: Sequence[str] | None = None, max_memory: float | None = None,
                   tile: int | None = None, start: int = 0, stop: int | None = None,
                   finished: Callable | None = None,
                   on_evaluation: Callable[[int, float], None] | None = None) -> VideoRun:
        """Prepare a temporally consistent stylisation of `video` (Ruder et al. 2016) and
        return a VideoRun yielding each output frame in order.

        `video`: a video file (anything FFmpeg reads, GIFs included), a folder of frame images,
        an io.video.Clip or a list of images. `method`: "lbfgs" (the Keras example's problem
        and loss weights; `iterations` of EVALUATIONS_PER_ITERATION evaluations) or "adam"
        (neural-style's; `iterations` steps, `learning_rate`). Loss weights, layers and sizes
        default to the method's (`transfer` / `stylize`); every frame starts from its content,
        or from the previous output warped by the optical flow.

        The first frame, and the first after a scene cut, get `iterations`; the others
        `frame_iterations` (default: half as many) and the temporal term with
        `temporal_weight` (VIDEO_DEFAULTS per method); `long_term` adds frames t-2 and t-4
        where t-1 does not see a pixel. `independent=True` stylises every frame on its own
        with `iterations` (the baseline). `start`/`stop` select a range of frames (its first
        starts from the content); `finished(index)` gives the output of a frame finished
        earlier (uint8 RGB) or None, and those frames are not computed again.
        `on_evaluation(count, loss)` is called after every evaluation or step of a frame.
        """
        check_choice("method", method, VIDEO_METHODS)
        if method == "lbfgs" and learning_rate is not None:
            raise StyleflowError("learning_rate: only with method='adam' (L-BFGS has none)",
                                 params=("learning_rate",))
        if isinstance(content_layers, str):  # one name is one layer
            content_layers = [content_layers]
        base = T if method == "lbfgs" else S
        defaults = VIDEO_DEFAULTS[method]
        iterations = defaults["iterations"] if iterations is None else iterations
        check_numbers(iterations=iterations)  # before it is halved
        check_sizes(height=height, width=width, tile=tile, start=start, stop=stop)
        check_one_side(width, height)
        check_flags(long_term=long_term, independent=independent)
        frame_iterations = (max(1, (iterations + 1) // 2) if frame_iterations is None
                            else frame_iterations)
        temporal_weight = (defaults["temporal_weight"] if temporal_weight is None
                           else temporal_weight)
        weights = dict(content_weight=base["content_weight"] if content_weight is None
                       else content_weight,
                       style_weight=base["style_weight"] if style_weight is None
                       else style_weight,
                       tv_weight=base["tv_weight"] if tv_weight is None else tv_weight)
        rate = S["learning_rate"] if learning_rate is None else learning_rate
        check_numbers(iterations=iterations, frame_iterations=frame_iterations,
                       temporal_weight=temporal_weight, learning_rate=rate, **weights)
        style = images.as_rgb(style, "style image")
        clip = load_frames(video)
        temporal = None if independent else float(temporal_weight)
        if method == "lbfgs":
            if content_layers is not None and len(content_layers) != 1:
                raise StyleflowError("content_layers: the lbfgs method takes one content layer",
                                     params=("content_layers",))
            problem = transfer_problem(
                self.networks, clip.frames[0], style, height=height, width=width,
                content_layer=content_layers[0] if content_layers else None,
                style_layers=style_layers, max_memory=max_memory, tile=tile,
                temporal_weight=temporal, **weights)
            optimise = lbfgs_optimiser
        else:
            if height is not None and width is None:
                h, w = clip.size
                width = max(1, round(w * height / h))
            problem = stylize_problem(
                self.networks, clip.frames[0], [style], width=width, content_layers=content_layers,
                style_layers=style_layers, initial_noiseblend=0.0, seed=self.seed,
                max_memory=max_memory, tile=tile, temporal_weight=temporal, **weights)
            optimise = adam_optimiser(AdamSettings(rate, S["beta1"], S["beta2"], S["epsilon"]))
        return VideoRun(clip, problem, optimise, iterations=int(iterations),
                        frame_iterations=int(frame_iterations), units_per_iteration=UNITS[method],
                        independent=independent, long_term=long_term, start=start, stop=stop,
                        finished=finished, on_evaluation=on_evaluation)

    def video(self, video, style, **options) -> VideoResult:
        """Run `iter_video(video, style, **options)` to the end; return the VideoResult (every
        frame, the frame rate, the audio's source)."""
        check_options("video", Stylizer.iter_video, options)
        return self.iter_video(video, style, **options).result()


def _finish(run: Run) -> Result:
    try:
        for _ in run:
            pass
    except KeyboardInterrupt as exc:
        exc.result = run.result()
        raise
    return run.result()


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


def photo(content, style, *, weights: str = "auto", precision: str = "float32",
          pooling: str = "max", seed: int | None = None, **options) -> Result:
    """One-off `Stylizer(weights, ...).photo(content, style, **options)`."""
    return Stylizer(weights, precision=precision, pooling=pooling, seed=seed).photo(
        content, style, **options)


def _input_files(*values) -> tuple:
    """The file paths among a run's inputs (images given as arrays are not files), for its
    pictures' save() to refuse."""
    import os

    found = []
    for value in values:
        for item in (value if isinstance(value, (list, tuple)) else [value]):
            if isinstance(item, (str, os.PathLike)):
                found.append(item)
    return tuple(found)
