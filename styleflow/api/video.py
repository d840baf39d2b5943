"""Video style transfer with temporal consistency (Ruder et al., "Artistic style transfer for
videos", GCPR 2016): the first frame (and the first after a scene cut) is stylised fully; each
later frame starts from the previous output warped onto it by the optical flow of the input
frames, and its loss adds the temporal term Σ c·(x − ω)² (ω that warped output, c = 0 where
the flow cannot be trusted: disocclusions and motion boundaries). `VideoRun` yields a
`VideoFrame` as each finishes; what to do with it (files, progress) is the caller's.

The style targets are computed once per video: each frame's objective is the first one's
with new content (and temporal) targets (Objective.with_frame).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Callable, Iterator, Sequence

import numpy as np

from ..defaults import EVALUATIONS_PER_ITERATION
from ..errors import StyleflowError
from ..io import images
from ..io.video import Clip, FOLDER_FPS, read_clip
from ..objective import flow as _flow
from ..objective.terms import Parts
from ..optim.adam import AdamSettings
from .problem import Problem
from .runs import StylizeRun, TransferRun

# Long-term consistency (Ruder et al.'s J): besides frame t-1, frames t-2 and t-4.
LONG_TERM = (1, 2, 4)
SHORT_TERM = (1,)


@dataclass
class VideoFrame:
    """One finished output frame. `resumed`: read back from a previous run (`finished`), not
    computed; `restarted`: stylised from the content (the first frame of the run, a scene
    cut, or every frame when independent); `trusted`: the share of its pixels the flow from
    the previous frame carries (1.0 when restarted); `parts`: its final loss parts (None when
    resumed); `seconds`: optimisation time, `flow_seconds`: time spent on optical flow."""

    index: int
    count: int
    array: np.ndarray
    parts: Parts | None = None
    seconds: float = 0.0
    flow_seconds: float = 0.0
    evaluations: int = 0
    resumed: bool = False
    restarted: bool = False
    trusted: float = 1.0


@dataclass
class VideoResult:
    """A whole stylised video: its frames (uint8 RGB), frame rate, and the file whose audio
    the output should carry (None without)."""

    frames: list[np.ndarray]
    fps: Fraction
    audio_from: str | None = None
    records: list[VideoFrame] = field(default_factory=list)


def load_frames(video, what: str = "video") -> Clip:
    """A Clip from a path (video file or folder of frames; io.video.read_clip), a Clip, or a
    sequence of images (any kind images.as_rgb takes; all one size)."""
    if isinstance(video, Clip):
        return video
    if isinstance(video, (str, bytes)) or hasattr(video, "__fspath__"):
        return read_clip(video, what)
    try:
        frames = [images.as_rgb(f, f"{what} frame {i + 1}") for i, f in enumerate(video)]
    except TypeError:
        raise StyleflowError(f"{what}: expected a video file, a folder of frames or a list of "
                             f"images, not {type(video).__name__}") from None
    if not frames:
        raise StyleflowError(f"{what}: has no frames")
    for i, f in enumerate(frames):
        if f.shape != frames[0].shape:
            raise StyleflowError(f"{what}: frame {i + 1} is {f.shape[1]}x{f.shape[0]}, frame 1 "
                                 f"{frames[0].shape[1]}x{frames[0].shape[0]}; frames must all "
                                 "be one size")
    return Clip(frames, FOLDER_FPS, "frames", None)


class VideoRun:
    """A prepared video run over frames `start`..`stop`-1: the first frame's problem built
    (sizes checked, style targets computed). Iterating it yields a VideoFrame per frame in
    order; `current` is the frame being computed and `current_units` its evaluations (L-BFGS)
    or steps (Adam), for progress displays.

    `make_problem(frame_rgb)` builds the first frame's problem (Stylizer.iter_video does);
    `optimise(problem, units, on_evaluation)` runs the method on a problem and returns
    (uint8 RGB, Parts, units spent). `finished(index)` returns a frame's output from an
    earlier run (uint8 RGB at the output size) or None: those frames are not computed again,
    and later frames warp them as they would their own.
    """

    def __init__(self, clip: Clip, problem: Problem, optimise: Callable, *, iterations: int,
                 frame_iterations: int, units_per_iteration: int, independent: bool,
                 long_term: bool, start: int = 0, stop: int | None = None,
                 finished: Callable[[int], np.ndarray | None] | None = None,
                 on_evaluation: Callable[[int, float], None] | None = None):
        self.clip = clip
        self.problem = problem
        self.size = problem.size
        count = len(clip.frames)
        self.start, self.stop = int(start), count if stop is None else min(int(stop), count)
        if not 0 <= self.start < self.stop:
            raise StyleflowError(f"start/stop: {start}..{stop} selects no frame of the "
                                 f"{count}", params=("start/stop",))
        # The input frames at the output size: the content targets and the flow use these.
        self.frames = [images.resize(f, self.size) if f.shape[:2] != self.size else f
                       for f in clip.frames]
        self.count = count
        self._optimise = optimise
        self.iterations, self.frame_iterations = iterations, frame_iterations
        self.units_per_iteration = units_per_iteration
        self.independent = independent
        self.backs = SHORT_TERM if independent or not long_term else LONG_TERM
        self.finished = finished or (lambda index: None)
        self.on_evaluation = on_evaluation
        self.estimator = _flow.FlowEstimator()
        self.current: int | None = None
        self.current_units = 0
        self._outputs: dict[int, np.ndarray] = {}
        self._started = False

    @property
    def fps(self) -> Fraction:
        return self.clip.fps

    @property
    def audio_from(self) -> str | None:
        return self.clip.audio_from

    @property
    def network(self):
        return self.problem.network

    def __iter__(self) -> Iterator[VideoFrame]:
        if self._started:
            raise RuntimeError("a VideoRun can be iterated once; start another for a new run")
        self._started = True
        for index in range(self.start, self.stop):
            done = self.finished(index)
            if done is not None:
                try:
                    done = np.asarray(done, np.uint8)
                except (TypeError, ValueError):
                    done = None
                if done is None or done.ndim != 3 or done.shape[2] != 3:
                    raise StyleflowError(f"finished: frame {index + 1} is not an RGB image "
                                         "(an (h, w, 3) array of uint8)", params=("finished",))
                if done.shape[:2] != self.size:
                    raise StyleflowError(
                        f"finished frame {index + 1} is {done.shape[1]}x{done.shape[0]}, not "
                        f"the run's {self.size[1]}x{self.size[0]}")
                self._keep(index, done)
                yield VideoFrame(index, self.count, done, resumed=True)
                continue
            yield self._frame(index)
        self.current = None

    def _keep(self, index: int, output: np.ndarray) -> None:
        self._outputs[index] = output
        for old in [k for k in self._outputs if k < index - max(self.backs)]:
            del self._outputs[old]

    def _output(self, index: int) -> np.ndarray | None:
        if index not in self._outputs:
            done = self.finished(index)
            if done is None:
                return None
            self._outputs[index] = np.asarray(done, np.uint8)
        return self._outputs[index]

    def _frame(self, index: int) -> VideoFrame:
        """Stylise frame `index`: from the content when it starts the run, follows a scene
        cut or the run is independent; else from the warped previous output, with the
        temporal term."""
        spec = self.problem.network.input_spec
        frame = self.frames[index]
        content = spec.preprocess(frame)
        flow_before = self.estimator.seconds
        links = []
        if not self.independent and index > self.start:
            for back in self.backs:
                if index - back < self.start or self._output(index - back) is None:
                    break
                links.append(_flow.link(self.estimator, frame, self.frames[index - back], back))
        restarted = not links or links[0].trusted < _flow.CUT_SHARE
        objective = self.problem.objective
        temporal = objective.graph.temporal
        if restarted:
            start = content
            target = (np.zeros_like(content), np.zeros(self.size, np.float32))
            trusted = 1.0 if not links else links[0].trusted
        else:
            # Each earlier frame counts only where no nearer one does (disjoint 0/1 weights),
            # so one term against their weighted warps is the sum of Ruder et al.'s terms.
            weights = _flow.long_term_weights(links)
            warps = [_flow.warp(self._output(index - ln.back), ln.flow) for ln in links]
            total = np.sum(weights, axis=0)
            blended = sum(w[..., None] * x for w, x in zip(weights, warps))
            warped = np.where(total[..., None] > 0, blended / np.maximum(total, 1e-6)[..., None],
                              warps[0])
            start = spec.preprocess(np.clip(np.rint(warps[0]), 0, 255).astype(np.uint8))
            target = (spec.preprocess(warped), total.astype(np.float32))
            trusted = links[0].trusted
        flow_seconds = self.estimator.seconds - flow_before
        frame_objective = objective.with_frame(content, target if temporal else None)
        problem = replace(self.problem, objective=frame_objective, start=start.astype(np.float32),
                          content_rgb=frame)
        iterations = self.iterations if restarted else self.frame_iterations
        self.current = index
        self.current_units = iterations * self.units_per_iteration
        began = time.perf_counter()
        output, parts, spent = self._optimise(problem, iterations, self.on_evaluation)
        seconds = time.perf_counter() - began
        self._keep(index, output)
        return VideoFrame(index, self.count, output, parts, seconds, flow_seconds, spent,
                          restarted=restarted, trusted=trusted)

    def result(self) -> VideoResult:
        """Run to the end and return every frame of the range (a KeyboardInterrupt keeps
        nothing here: the caller writes frames as they come, see `finished`)."""
        records = list(self)
        return VideoResult([r.array for r in records], self.fps, self.audio_from, records)


def lbfgs_optimiser(problem: Problem, iterations: int, on_evaluation) -> tuple:
    """Run L-BFGS (TransferRun's continuous schedule, pixels bounded) on a frame's problem;
    (uint8 RGB, Parts, evaluations)."""
    run = TransferRun(problem, iterations, False, False, on_evaluation)
    for _ in run:
        pass
    result = run.result()
    return result.array, result.parts, result.evaluations


def adam_optimiser(settings: AdamSettings) -> Callable:
    """Adam with `settings` on a frame's problem (StylizeRun: the lowest-loss image)."""
    def optimise(problem: Problem, iterations: int, on_evaluation) -> tuple:
        run = StylizeRun(problem, iterations, settings, False, False, on_evaluation)
        for _ in run:
            pass
        result = run.result()
        return result.array, result.parts, result.evaluations
    return optimise


UNITS = {"lbfgs": EVALUATIONS_PER_ITERATION, "adam": 1}


# -- past one machine: segments ----------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """Frames `start`..`stop`-1 stylised as one run; the first `overlap` of them are also the
    end of the segment before, and are cross-faded with it."""

    index: int
    start: int
    stop: int
    overlap: int = 0


def scene_cuts(frames: Sequence[np.ndarray], size: tuple[int, int] | None = None,
               estimator: _flow.FlowEstimator | None = None) -> list[int]:
    """Indices t of the frames that begin a new scene: the flow from frame t to t-1 carries
    fewer than flow.CUT_SHARE of t's pixels (the frames are unrelated). Frames are compared
    at `size` (h, w) when given."""
    estimator = estimator or _flow.FlowEstimator()
    sized = [images.resize(f, size) if size and f.shape[:2] != tuple(size) else f
             for f in frames]
    return [t for t in range(1, len(sized))
            if _flow.link(estimator, sized[t], sized[t - 1], 1).trusted < _flow.CUT_SHARE]


def plan_segments(count: int, length: int, overlap: int, cuts: Sequence[int] = ()
                  ) -> list[Segment]:
    """Split `count` frames into segments: at each scene cut (no overlap: the frames are
    unrelated), and scenes longer than `length` into pieces of about `length` frames that
    begin `overlap` frames before the previous piece ends (those frames are cross-faded)."""
    if length < 1 or overlap < 0:
        raise StyleflowError("segment_length must be 1 or more and overlap 0 or more",
                             params=("segment_length", "overlap"))
    overlap = min(overlap, max(0, length - 1))
    bounds = [0, *sorted(c for c in set(cuts) if 0 < c < count), count]
    segments: list[Segment] = []
    for begin, end in zip(bounds, bounds[1:]):
        first = begin
        while True:
            stop = min(end, first + length)
            if end - stop < max(1, length // 4):  # no sliver of a last piece
                stop = end
            lead = 0 if first == begin else overlap
            segments.append(Segment(len(segments), first - lead, stop, lead))
            if stop == end:
                break
            first = stop
    return segments


def crossfade(segments: Sequence[Segment], outputs: Callable[[int, int], np.ndarray],
              index: int) -> np.ndarray:
    """Output frame `index` of a segmented run: the frame of the one segment that covers it,
    or in an overlap a linear blend from the earlier segment's frame to the later one's.
    `outputs(segment_index, frame_index)` returns a segment's uint8 frame."""
    covering = [s for s in segments if s.start <= index < s.stop]
    if len(covering) == 1:
        return outputs(covering[0].index, index)
    early, late = covering[0], covering[-1]
    # The later segment's own start (frame late.start) counts least: it is stylised from the
    # content, while the earlier segment's is already settled there.
    share = (index - late.start + 1) / (late.overlap + 1)
    mixed = ((1.0 - share) * outputs(early.index, index).astype(np.float32)
             + share * outputs(late.index, index).astype(np.float32))
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
