"""Optical flow between video frames and what the temporal loss takes from it (Ruder et al.,
"Artistic style transfer for videos", GCPR 2016): the previous output warped onto the current
frame, and per-pixel weights that are zero where the flow cannot be trusted (disocclusions,
found by the forward-backward consistency check, and motion boundaries).

Flow is OpenCV's DIS (Kroeger et al. 2016, dense inverse search), computed on the input frames
at the output's size: a few milliseconds a frame at 256 px on a CPU, dense, and robust enough
for the consistency check to find the pixels it gets wrong. Everything here is NumPy/OpenCV.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..errors import StyleflowError

# The forward-backward check of Sundaram et al. (2010) as Ruder et al. use it: a pixel is
# disoccluded when |w + ŵ|² > 0.01 (|w|² + |ŵ|²) + 0.5, a motion boundary when
# |∇u|² + |∇v|² > 0.01 |w|² + 0.002.
CONSISTENCY = (0.01, 0.5)
BOUNDARY = (0.01, 0.002)
# Below this share of trusted pixels the frames are taken as unrelated: a scene cut.
CUT_SHARE = 0.4


def _cv2():
    try:
        import cv2
    except ImportError:
        raise StyleflowError("video needs OpenCV, which is not installed: pip install "
                             "'styleflow[video]' (or pip install -r requirements-video.txt)"
                             ) from None
    return cv2


class FlowEstimator:
    """Dense optical flow with OpenCV's DIS at its 'medium' preset (one instance reused: it
    keeps its buffers). `seconds` sums the time spent, `calls` counts the flows computed."""

    def __init__(self):
        cv2 = _cv2()
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, source: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Flow (h, w, 2) float32 from `source` to `target` (uint8 RGB, same size): pixel x of
        `source` shows what `target` shows at x + flow(x)."""
        cv2 = _cv2()
        began = time.perf_counter()
        a = cv2.cvtColor(np.ascontiguousarray(source), cv2.COLOR_RGB2GRAY)
        b = cv2.cvtColor(np.ascontiguousarray(target), cv2.COLOR_RGB2GRAY)
        flow = self._dis.calc(a, b, None)
        self.seconds += time.perf_counter() - began
        self.calls += 1
        return flow


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """`image` (h, w, c) sampled at x + flow(x), bilinearly, edges replicated: with the flow
    from frame t to frame t-1, frame t-1's picture moved onto frame t."""
    cv2 = _cv2()
    h, w = flow.shape[:2]
    grid = np.mgrid[0:h, 0:w].astype(np.float32)
    map_x = grid[1] + flow[..., 0]
    map_y = grid[0] + flow[..., 1]
    src = np.asarray(image, np.float32)
    out = cv2.remap(src, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(src.shape)


def consistency(backward: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """Weights (h, w) float32 for frame t: 1 where the flow back to frame t-1 (`backward`) can
    be trusted, 0 at disocclusions (the flow there and back, `forward` from t-1 to t, does not
    return to its start) and at motion boundaries (the flow changes sharply)."""
    returned = warp(forward, backward)
    total = backward + returned
    a, b = CONSISTENCY
    occluded = (np.sum(total ** 2, -1)
                > a * (np.sum(backward ** 2, -1) + np.sum(returned ** 2, -1)) + b)
    gy_u, gx_u = np.gradient(backward[..., 0])
    gy_v, gx_v = np.gradient(backward[..., 1])
    a, b = BOUNDARY
    boundary = gx_u ** 2 + gy_u ** 2 + gx_v ** 2 + gy_v ** 2 > a * np.sum(backward ** 2, -1) + b
    return (~(occluded | boundary)).astype(np.float32)


@dataclass
class Link:
    """Frame t's tie to an earlier frame t-j: the flow from t to t-j and the weights of the
    pixels it carries (`consistency`)."""

    back: int  # j
    flow: np.ndarray  # (h, w, 2)
    weights: np.ndarray  # (h, w) in 0..1

    @property
    def trusted(self) -> float:
        """Share of frame t's pixels the flow carries (1 - disocclusions and boundaries)."""
        return float(self.weights.mean())


def link(estimator: FlowEstimator, frame: np.ndarray, earlier: np.ndarray, back: int) -> Link:
    """The Link from `frame` back to `earlier` (uint8 RGB, `back` frames before it)."""
    backward = estimator(frame, earlier)
    forward = estimator(earlier, frame)
    return Link(back, backward, consistency(backward, forward))


def long_term_weights(links: list[Link]) -> list[np.ndarray]:
    """Ruder et al.'s long-term weights: with links ordered nearest first, each earlier frame
    counts only where no nearer one does, c_j = max(c_j − Σ_{k<j} c_k, 0)."""
    taken = np.zeros_like(links[0].weights)
    out = []
    for ln in links:
        out.append(np.maximum(ln.weights - taken, 0.0))
        taken = taken + ln.weights
    return out


def warping_error(outputs, inputs, estimator: FlowEstimator | None = None) -> float:
    """The warping error of a stylised video (Lai et al., "Learning Blind Video Temporal
    Consistency", ECCV 2018): the mean over t ≥ 1 of the mean squared difference, on the 0..1
    scale, between output t and output t-1 warped by the input's flow, over the pixels the
    consistency check trusts. 0 for fewer than two frames."""
    estimator = estimator or FlowEstimator()
    errors = []
    for t in range(1, len(outputs)):
        ln = link(estimator, inputs[t], inputs[t - 1], 1)
        errors.append(pair_error(outputs[t], outputs[t - 1], ln))
    return float(np.mean(errors)) if errors else 0.0


def pair_error(output: np.ndarray, previous: np.ndarray, ln: Link) -> float:
    """One frame's term of warping_error: output against `previous` warped by `ln`."""
    warped = warp(previous, ln.flow) / 255.0
    diff = np.mean((np.asarray(output, np.float32) / 255.0 - warped) ** 2, axis=-1)
    mask = ln.weights
    return float(np.sum(mask * diff) / max(np.sum(mask), 1.0))
