"""How much memory a run needs, and refusing sizes that cannot fit before allocating anything
(a clear message instead of the kernel's OOM killer). The figures are fitted to
bench/memory.py's peak resident memory (docs/large-images.md)."""

from __future__ import annotations

from typing import Sequence

from ..defaults import LBFGS_HISTORY
from ..errors import StyleflowError
from ..model import machine, winograd
from ..model.layout import STAGES, conv_maps, deepest, stage
from . import host

# Bytes per activation value (kept for the backward pass, plus the backward pass's own
# buffers), with a margin over the worst case measured; TensorFlow's own kernels (oneDNN off)
# keep more.
BYTES_PER_ACTIVATION = {True: {"float32": 8.5, "bfloat16": 7.5},     # oneDNN on
                        False: {"float32": 14.5, "bfloat16": 12.7}}  # oneDNN off
BASE_BYTES = 900 * 2**20
# Copies of the image the optimiser keeps. L-BFGS-B (optim/lbfgsb.py): its workspace of
# 2m + 5 float64 vectors (m correction pairs) and 3 int32 ones, the iterate, its gradient and
# the point last evaluated (float64), both bounds (float64) and their kinds (int32). Adam keeps
# a few float32 ones (image, best, two moments), twice during a step (its compiled update
# returns a new state beside the old). "forward" is a style image's one forward pass for its
# Gram targets: no optimiser, and no activations kept for a backward pass.
def optimiser_bytes(optimiser: str, history: int = LBFGS_HISTORY) -> int:
    """Bytes per image value (3 per pixel) the optimiser keeps; L-BFGS's depend on its
    history m."""
    if optimiser == "lbfgs":
        return (2 * history + 5) * 8 + 3 * 4 + 3 * 8 + 2 * 8 + 4
    return {"adam": 10 * 4, "forward": 0}[optimiser]


IMAGE_BYTES = {name: optimiser_bytes(name) for name in ("lbfgs", "adam", "forward")}
FORWARD_SHARE = 0.5


# Winograd's layers (model.winograd) add two things to a run's peak: the kernel transforms each
# keeps (forward and backward, 4x the kernel each, and the kernel they were made from), and while
# one runs, its tiles and products (and its own output and gradient maps): bytes per value of
# the larger of the maps it reads and writes, with a little margin. That transient exists only
# while its layer runs, forward or back, beside the activations made before that layer (those
# past it are not made yet, or already freed): it raises a pass's peak only where those and
# the tiles together exceed what the whole pass holds, which for block2_conv2's large maps
# they do by a little, not by the tiles' whole size (bench/memory.py; docs/large-images.md).
WINOGRAD_TRANSIENT_BYTES = 36


def winograd_layers(size: tuple[int, int], layers: Sequence[str], precision: str = "float32",
                    whole: tuple[int, int] | None = None
                    ) -> list[tuple[str, int, int, int, int]]:
    """(name, h, w, in, out) of each layer up to the deepest of `layers` that convolves by
    Winograd for an (h, w) image, or a crop of it of that size when the image's own size is
    `whole` (none where Winograd is not used), as model.frozen_conv decides it: block1_conv2
    where it pays on the whole image's map (`winograd.narrow_at`)."""
    if not machine.transposed_convolutions(precision):
        return []
    narrow = precision == "float32" and winograd.narrow_at(whole or size, layers)
    return [(name, h, w, cin, cout) for name, h, w, cin, cout in conv_maps(size, deepest(layers))
            if winograd.convolves(h, w, cin, cout, narrow)]


def winograd_kept_bytes(size: tuple[int, int] | None, layers: Sequence[str],
                        precision: str = "float32", whole: tuple[int, int] | None = None) -> int:
    """The kernel transforms kept by the layers that convolve by Winograd at (h, w) (a crop
    of an image of size `whole`: `winograd_layers`); `size` None: as for an image large
    enough for every such layer from block2_conv1 (block1_conv2's tiles are then past Numba's
    limit)."""
    alpha = winograd.ALPHA
    return int(sum((1 + 2 * alpha * alpha / 9) * 9 * cin * cout * 4 for *_, cin, cout
                   in winograd_layers(size or (2**16, 2**16), layers, precision, whole)))


# Where Numba makes float32 Winograd's tile transforms (model.winograd_kernels): its runtime and
# compiled kernels (112 MB resident measured), and the pool its results come from. The pool is
# outside TensorFlow's allocator, so a run holds both at their own peaks: at the pool's, every
# Winograd layer's output (kept for the backward pass) and the largest layer's tiles forward and
# masked, in size classes up to an eighth larger (stop 45, full layers: +0.21 GB at 400x300,
# +0.55 GB at 800x600 against XLA's transforms; docs/performance.md). Layers whose tiles are
# larger keep XLA's transforms (`winograd.numba_suits`), block1_conv2 the direct convolution.
# A layer that pools in its transforms (max pooling after it, not a loss layer:
# `network.build_extractor`) keeps a quarter map and a byte per window instead of its map;
# counting the map, as average pooling keeps it, leaves the estimate an upper bound for both.
NUMBA_BYTES = 128 * 2**20


def transform_pool_bytes(size: tuple[int, int], layers: Sequence[str],
                         precision: str = "float32") -> int:
    """What Numba's tile transforms add to an untiled pass over an (h, w) image: nothing where
    no layer convolves by Winograd with them (the tiled loss takes XLA's)."""
    if precision != "float32":
        return 0
    fast = [(name, h, w, cin, cout) for name, h, w, cin, cout
            in winograd_layers(size, layers, precision)
            if winograd.numba_suits(h, w, cin, cout)]
    if not fast:
        return 0
    alpha, tile = winograd.ALPHA, winograd.TILE
    outputs = sum(h * w * cout for _, h, w, _, cout in fast)
    tiles = max(-(-h // tile) * -(-w // tile) * max(cin, cout) for _, h, w, cin, cout in fast)
    return int(NUMBA_BYTES + 4 * 9 / 8 * (outputs + 2 * alpha * alpha * tiles))


def _held(size: tuple[int, int], layers: Sequence[str], precision: str,
          per_activation: float, after: str | None = None,
          whole: tuple[int, int] | None = None) -> int:
    """The most a pass over the layers up to the deepest of `layers` (those past the pooling
    layer `after` only, if given) holds at once: all its activations at `per_activation`
    bytes each, or, where more, those made before a Winograd layer with that layer's
    transient (its tiles and products, and its own output and gradient maps)."""
    first = STAGES.index(stage(after)) + 1 if after else 0
    fast = {name: h * w * max(cin, cout)
            for name, h, w, cin, cout in winograd_layers(size, layers, precision, whole)}
    elements, peak = 0, 0.0
    for s in STAGES[first:STAGES.index(stage(deepest(layers))) + 1]:
        if s.name in fast:
            peak = max(peak, per_activation * elements + WINOGRAD_TRANSIENT_BYTES * fast[s.name])
        h, w = s.map_size(size)
        elements += h * w * s.out_channels
    return int(max(peak, per_activation * elements))


def pass_bytes(size: tuple[int, int], layers: Sequence[str], precision: str = "float32",
               forward: bool = False, whole: tuple[int, int] | None = None) -> int:
    """What one pass through the network over an (h, w) image, or a crop of an image of size
    `whole`, holds at its peak: its activations (a forward-only pass keeps FORWARD_SHARE of
    them), or, where more, those made before a Winograd layer with that layer's transient
    tiles."""
    per_activation = BYTES_PER_ACTIVATION[machine.onednn_enabled()][precision] * (
        FORWARD_SHARE if forward else 1.0)
    return _held(size, layers, precision, per_activation, whole=whole)


def deep_pass_bytes(size: tuple[int, int], layers: Sequence[str], split: str,
                    precision: str = "float32") -> int:
    """What the layers past the pooling layer `split` hold while they run forward and back
    over the whole map there for an (h, w) image (objective.deep_pass), counted as a pass's
    is."""
    per_activation = BYTES_PER_ACTIVATION[machine.onednn_enabled()][precision]
    return _held(size, layers, precision, per_activation, after=split)


# The photorealism term (objective/matting.py). Its constants: 15 float32 per pixel held for
# the whole image. Building them (matting.build_constants, by row bands) peaks at about
# 170 B per pixel, NumPy's and TensorFlow's copies and one band's float64 work, before the
# optimiser's state exists: less than L-BFGS's own (IMAGE_BYTES, 3 values a pixel), so the
# build never sets the run's peak and is not counted. One evaluation of the term over the
# whole image (inside the network's compiled loss) holds PHOTO_PASS_BYTES per pixel (300 B
# measured at 1024x768, lite layers, L-BFGS), with slack; over row strips (tiled) each
# strip pixel holds PHOTO_STRIP_BYTES (2.3 KB measured at 2048x1536: XLA's window sums and
# what their gradient reads), and the compiled strips PHOTO_STRIP_FIXED_BYTES (0.14 GB).
PHOTO_CONSTANT_BYTES = 60
PHOTO_PASS_BYTES = 340
PHOTO_STRIP_BYTES = 2500
PHOTO_STRIP_FIXED_BYTES = 160 * 2**20


def photo_bytes(size: tuple[int, int], strip_pixels: int | None = None) -> int:
    """Bytes the photorealism term adds to a run on an (h, w) image whose term is evaluated
    whole, or over row strips of `strip_pixels` pixels (tiled): its constants and one
    evaluation."""
    pixels = size[0] * size[1]
    if strip_pixels is None:
        evaluation = PHOTO_PASS_BYTES * pixels
    else:
        evaluation = PHOTO_STRIP_BYTES * min(pixels, strip_pixels) + PHOTO_STRIP_FIXED_BYTES
    return PHOTO_CONSTANT_BYTES * pixels + evaluation


def estimate_bytes(size: tuple[int, int], layers: Sequence[str], precision: str = "float32",
                   optimiser: str = "lbfgs", photo: bool = False) -> int:
    """Estimated peak memory of a run on an (h, w) image using `layers` (with the
    photorealism term when `photo`)."""
    pixels = size[0] * size[1] * 3
    return int(BASE_BYTES + winograd_kept_bytes(size, layers, precision)
               + pass_bytes(size, layers, precision, forward=optimiser == "forward")
               + transform_pool_bytes(size, layers, precision)
               + IMAGE_BYTES[optimiser] * pixels + (photo_bytes(size) if photo else 0))


def largest_size(size: tuple[int, int], fits, least: int = 1) -> tuple[int, int]:
    """The largest (h, w) with the aspect of `size`, each side at least `least`, for which
    `fits((h, w))` holds as far as a bisection of the scale finds; the caller checks that the
    smallest does fit."""
    h, w = size
    lo, hi = 0.0, 1.0
    for _ in range(30):
        mid = (lo + hi) / 2
        trial = (max(least, int(h * mid)), max(least, int(w * mid)))
        if fits(trial):
            lo = mid
        else:
            hi = mid
    return max(least, int(h * lo)), max(least, int(w * lo))


def largest_fitting(size: tuple[int, int], layers: Sequence[str], precision: str,
                    budget: int, optimiser: str = "lbfgs") -> tuple[int, int]:
    """The largest (h, w) with the aspect of `size` whose estimate fits in `budget` bytes."""
    return largest_size(
        size, lambda trial: estimate_bytes(trial, layers, precision, optimiser) <= budget)


def check_fits(size: tuple[int, int], layers: Sequence[str], precision: str = "float32",
               optimiser: str = "lbfgs", available: int | None = None,
               resident: int | None = None, what: str = "", extra: int = 0,
               shown: tuple[int, int] | None = None, params: Sequence[str] = ()) -> None:
    """Raise StyleflowError when a run on an (h, w) image would need more memory than is
    available, naming the need, what is available and the largest size that fits.

    The estimate's BASE_BYTES (TensorFlow, the weights) is largely resident already when this
    runs: what this process holds (`resident`) counts toward it, so only the rest is asked for.
    Only the host's memory is checked: with a GPU, TensorFlow's own out-of-memory error is
    turned into a one-line error instead (errors.exhaustion). `extra` bytes are needed besides
    (e.g. a tiled image held whole); the message then names the image as `shown` (h, w) and
    suggests no size, as the tile is not the image. `params` names the parameters `what`
    mentions.
    """
    lever = "style_scales" if optimiser == "forward" else "width/height"
    available = host.available_bytes() if available is None else available
    if available is None:
        return
    resident = host.resident_bytes() if resident is None else resident
    base_left = max(0, BASE_BYTES - resident)
    need = estimate_bytes(size, layers, precision, optimiser) - BASE_BYTES + base_left + extra
    if need <= available:
        return
    if extra:
        h, w = shown or size
        raise StyleflowError(
            f"{what + ': ' if what else ''}a {w}x{h} image needs about {need / 2**30:.1f} GB "
            f"of memory but {available / 2**30:.1f} GB is available; use a smaller {lever}",
            params=(lever, *params))
    smallest = estimate_bytes((16, 16), layers, precision, optimiser) - BASE_BYTES + base_left
    if smallest > available:
        raise StyleflowError(
            f"only {available / 2**30:.2f} GB of memory is available, not enough for "
            f"TensorFlow and the network (about {smallest / 2**30:.2f} GB); close other "
            "programs or use a machine with more memory")
    h, w = largest_fitting(size, layers, precision, available - base_left + BASE_BYTES,
                           optimiser)
    hint = "" if precision == "bfloat16" else ", or precision=bfloat16"
    raise StyleflowError(
        f"{what + ': ' if what else ''}a {size[1]}x{size[0]} image needs about "
        f"{need / 2**30:.1f} GB of memory with these "
        f"layers but {available / 2**30:.1f} GB is available; use at most about {w}x{h} "
        f"({lever}){hint}", params=(lever, "precision=bfloat16", *params))
