"""Segmentation masks for the style loss, prepared in NumPy before any TensorFlow work.

Two kinds: colour-coded segmentations of the content and style images (Deep Photo Style
Transfer's augmented style loss, Luan et al. 2017: one Gram matrix per region, a region being a
colour both masks use), and grayscale guides saying where on the output each style image paints
(guided Gram matrices, Gatys et al. 2017, "Controlling Perceptual Factors").

Both are carried down VGG19 as Luan et al. do: averaged over 3x3 after each convolution, over
2x2 at each pooling, so each style layer gets masks at its own resolution (`carry_down`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import StyleflowError
from ..io.images import as_rgb
from ..model.layout import STAGES, stage, stages_to

# A colour is a region when its solid pixels (see _solid) cover at least this share of its
# mask. At VGG19's deepest style layers (stride 16) 0.2 % of a 512x512 image is a handful of
# pixels, too few for a Gram matrix of their own; noise specks and stray colours are smaller.
MIN_REGION_SHARE = 0.002
# Colours closer than this (RGB distance, 0..441) are one region colour: a JPEG-saved mask
# shifts flat colours by a few levels, and colour codes (DPST's palette, hand-picked colours)
# are much further apart.
SAME_COLOUR_DISTANCE = 32.0


def colour_regions(content_mask, style_mask, *, content_what: str = "content_mask",
                   style_what: str = "style_mask", content_size: tuple[int, int] | None = None,
                   style_size: tuple[int, int] | None = None,
                   size_what: str = "the size the run uses; make the output larger, or the "
                                    "region"
                   ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, int]]]:
    """The regions two colour-coded masks share: (content_regions, style_regions, colours).

    `content_mask` and `style_mask` are (h, w, 3) uint8 RGB arrays (or anything `as_rgb`
    takes). The regions are found at the masks' own sizes, so whether a mask is accepted does
    not depend on the output's size; `content_size` and `style_size` ((h, w), the images' sizes
    in the run) are the sizes of the regions returned (nearest neighbour), and a region that
    covers no pixel there is a StyleflowError (too small for that size, which `size_what`
    describes). A region colour
    is one whose solid pixels (pixels whose four neighbours share their colour) cover at least
    MIN_REGION_SHARE of its mask; colours within SAME_COLOUR_DISTANCE of a larger one count as
    that one. Every other pixel (anti-aliased edges, JPEG noise) joins the nearest region colour
    of its mask, so a mask saved with smooth edges still works.

    Each region colour of the content must have a counterpart in the style mask (the nearest,
    within SAME_COLOUR_DISTANCE); StyleflowError names the colours that do not (as #rrggbb).
    A style colour the content does not use is simply unused: its pixels belong to no region.
    One colour in both masks is one region covering both images. A mask where no colour is
    that large (a photograph, say) is a StyleflowError too.

    Returns content_regions (h, w, R) and style_regions (h', w', R), float32 in {0, 1}, and
    the R content colours as (r, g, b), in the same order for both (ascending colour code).
    Content regions partition the content image (they sum to 1 everywhere); no region is
    empty in either image (each colour has its solid pixels).
    """
    content = as_rgb(content_mask, content_what)
    style = as_rgb(style_mask, style_what)
    content_codes, style_codes = _codes(content), _codes(style)
    content_colours = _region_colours(content_codes, content_what)
    style_colours = _region_colours(style_codes, style_what)

    # Each content colour's counterpart: the nearest style colour, when near enough.
    gaps = np.linalg.norm(content_colours[:, None, :] - style_colours[None, :, :], axis=2)
    match = gaps.argmin(axis=1)
    missing = [hex_colour(c) for c, gap in zip(content_colours, gaps.min(axis=1))
               if gap > SAME_COLOUR_DISTANCE]
    if missing:
        raise StyleflowError(
            f"{content_what}: colour{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"{'have' if len(missing) > 1 else 'has'} no region in {style_what} (its colours: "
            f"{', '.join(hex_colour(c) for c in style_colours)}); colour the same regions alike in "
            "both masks", params=(content_what, style_what))
    taken, counts = np.unique(match, return_counts=True)
    if (counts > 1).any():
        shared = taken[counts > 1][0]
        both = [hex_colour(c) for c, m in zip(content_colours, match) if m == shared]
        raise StyleflowError(
            f"{content_what}: colours {' and '.join(both)} both match "
            f"{hex_colour(style_colours[shared])} of {style_what}; use clearly different colours "
            "for different regions", params=(content_what, style_what))

    # Each pixel is labelled on its own, so sampling the masks first gives the same labels as
    # labelling them whole and sampling those (a 12 MP JPEG mask labelled whole took GBs).
    content, content_codes = _resized(content, content_size), _resized(content_codes,
                                                                       content_size)
    style, style_codes = _resized(style, style_size), _resized(style_codes, style_size)
    content_labels = _nearest(content, content_codes, content_colours)
    style_labels = _nearest(style, style_codes, style_colours)
    for labels, wanted, colours, what in (
            (content_labels, range(len(content_colours)), content_colours, content_what),
            (style_labels, match, style_colours, style_what)):
        lost = [hex_colour(colours[index]) for index in wanted if not (labels == index).any()]
        if lost:
            h, w = labels.shape
            raise StyleflowError(
                f"{what}: the region{'s' if len(lost) > 1 else ''} {', '.join(lost)} "
                f"{'cover' if len(lost) > 1 else 'covers'} no pixel at {w}x{h}, {size_what}",
                params=(what,))
    regions = np.arange(len(content_colours))
    content_regions = (content_labels[:, :, None] == regions).astype(np.float32)
    # Style pixels of an unused colour match no content region: all zeros there.
    style_regions = (style_labels[:, :, None] == match).astype(np.float32)
    colours = [tuple(int(v) for v in c) for c in content_colours]
    return content_regions, style_regions, colours


def _region_colours(codes: np.ndarray, what: str) -> np.ndarray:
    """(R, 3) int64 region colours of a mask's colour codes (see _codes), in ascending colour
    code (see colour_regions)."""
    found, counts = np.unique(codes[_solid(codes)], return_counts=True)
    large = counts >= MIN_REGION_SHARE * codes.size
    if not large.any():
        raise StyleflowError(
            f"{what}: no colour fills {MIN_REGION_SHARE:.1%} of the mask; it should be a "
            "colour-coded segmentation (one flat colour per region)", params=(what,))
    # Near-duplicates (JPEG shifts) join the colour with the larger solid area.
    chosen: list[np.ndarray] = []
    for code in found[large][np.argsort(-counts[large], kind="stable")]:
        colour = _rgb(code)
        if all(np.linalg.norm(colour - c) > SAME_COLOUR_DISTANCE for c in chosen):
            chosen.append(colour)
    chosen.sort(key=lambda c: int(c[0]) << 16 | int(c[1]) << 8 | int(c[2]))
    return np.array(chosen, dtype=np.int64)


def _codes(rgb: np.ndarray) -> np.ndarray:
    """Each pixel's colour as one integer 0xRRGGBB (h, w) int32."""
    codes = rgb[:, :, 0].astype(np.int32)
    for k in (1, 2):
        codes <<= 8
        codes |= rgb[:, :, k]
    return codes


def _solid(codes: np.ndarray) -> np.ndarray:
    """Where a pixel's four neighbours inside the image have its colour (h, w) bool.

    An anti-aliased or blurred edge changes colour every pixel or so across the edge, so its
    in-between colours have no solid pixels however long the edge is (a straight edge's blend
    can fill whole rows, more than MIN_REGION_SHARE of a small mask)."""
    solid = np.ones(codes.shape, dtype=bool)
    same = codes[1:] == codes[:-1]
    solid[1:] &= same
    solid[:-1] &= same
    same = codes[:, 1:] == codes[:, :-1]
    solid[:, 1:] &= same
    solid[:, :-1] &= same
    return solid


def _nearest(rgb: np.ndarray, codes: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Index of the nearest of `colours` (RGB distance) for each pixel (h, w) int16; a
    pixel equally near two colours goes to the first."""
    labels = np.full(codes.shape, -1, dtype=np.int16)
    for index, colour in enumerate(colours):
        labels[codes == (int(colour[0]) << 16 | int(colour[1]) << 8 | int(colour[2]))] = index
    # Most pixels are a region colour exactly; only the others need distances.
    others = np.flatnonzero(labels.ravel() < 0)
    if others.size:
        values = rgb.reshape(-1, 3)[others].astype(np.int64)
        distance = ((values[:, None, :] - colours[None, :, :]) ** 2).sum(axis=2)
        labels.ravel()[others] = distance.argmin(axis=1)
    return labels


def _resized(array: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """`array` (h, w, ...) resized to `size` (h', w') by nearest neighbour (the pixel whose
    centre each new pixel's centre falls in), or as it is."""
    h, w = array.shape[:2]
    if size is None or tuple(size) == (h, w):
        return array
    rows = np.minimum(((np.arange(size[0]) + 0.5) * h / size[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * w / size[1]).astype(np.int64), w - 1)
    return array[rows[:, None], cols[None, :]]


def _rgb(code) -> np.ndarray:
    code = int(code)
    return np.array([code >> 16 & 255, code >> 8 & 255, code & 255], dtype=np.int64)


def hex_colour(colour) -> str:
    """(r, g, b) as #rrggbb, as the messages name colours."""
    return "#" + "".join(f"{int(v):02x}" for v in colour)


def check_aspect(mask_shape, image_shape, what: str, image_what: str) -> None:
    """StyleflowError when a mask's aspect ratio differs from its image's by more than a
    pixel's rounding at the mask's size: some scale must take the image's (h, w) to the mask's
    to within a pixel on each side (a 300x200 mask for a 600x400 image is fine, as is 301x200;
    300x300 is not). Shapes are (h, w, ...)."""
    mh, mw = (int(v) for v in mask_shape[:2])
    ih, iw = (int(v) for v in image_shape[:2])
    # The scales that put each side within a pixel of the mask's; they must overlap.
    low = max((mh - 1) / ih, (mw - 1) / iw)
    high = min((mh + 1) / ih, (mw + 1) / iw)
    if low > high:
        raise StyleflowError(
            f"{what} is {mw}x{mh} pixels, not in proportion to {image_what} ({iw}x{ih}); "
            f"make it {image_what}'s shape", params=(what, image_what))


def style_guides(masks: Sequence, *, what: str = "style_masks") -> np.ndarray:
    """The guides of S style images, (h, w, S) float32 in [0, 1]: 0 where a style does not
    paint, 1 where it does, in between where it blends.

    `masks` holds one grayscale (h, w) mask per style image (or (h, w, 1)), all already at the
    output's size (resize them bilinearly): uint8 (0..255), bool, or floats in 0..1. A mask
    that is zero everywhere (its style would paint nowhere) is a StyleflowError naming it as
    `what`[i]; pixels no style paints are fine."""
    masks = list(masks)
    if not masks:
        raise StyleflowError(f"{what}: no masks given", params=(what,))
    guides = [_guide(mask, f"{what}[{i}]", what) for i, mask in enumerate(masks)]
    shapes = {g.shape for g in guides}
    if len(shapes) > 1:
        sizes = ", ".join(f"{g.shape[1]}x{g.shape[0]}" for g in guides)
        raise StyleflowError(f"{what}: the masks differ in size ({sizes}); resize them to the "
                             "output's size", params=(what,))
    for i, guide in enumerate(guides):
        if not guide.any():
            raise StyleflowError(f"{what}[{i}] is zero everywhere: its style would paint "
                                 "nowhere", params=(what,))
    return np.stack(guides, axis=2)


def _guide(mask, label: str, what: str) -> np.ndarray:
    """One grayscale mask as (h, w) float32 in [0, 1] (see style_guides)."""
    array = np.asarray(mask)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim != 2:
        shape = "x".join(map(str, array.shape))
        raise StyleflowError(f"{label}: a mask must be grayscale, height x width, not {shape}",
                             params=(what,))
    if array.dtype == bool:
        return array.astype(np.float32)
    if array.dtype.kind in "ui":
        if array.size and (array.min() < 0 or array.max() > 255):
            raise StyleflowError(f"{label}: integer masks hold 0..255", params=(what,))
        return array.astype(np.float32) / np.float32(255)
    if array.dtype.kind == "f":
        values = array.astype(np.float32)
        if not np.isfinite(values).all():
            raise StyleflowError(f"{label}: the mask holds NaN or infinite values",
                                 params=(what,))
        # A little outside 0..1 is a resampling filter's overshoot; much more is another scale.
        if values.size and (values.min() < -0.01 or values.max() > 1.01):
            raise StyleflowError(f"{label}: float masks hold 0..1, not "
                                 f"{values.min():g}..{values.max():g}", params=(what,))
        return np.clip(values, 0.0, 1.0)
    raise StyleflowError(f"{label}: an array of {array.dtype} is not a mask", params=(what,))


def carry_down(masks: np.ndarray, layers: Sequence[str]) -> dict[str, np.ndarray]:
    """The (h, w, R) masks at each of `layers`' resolution, {layer: (h_l, w_l, R) float32},
    carried down VGG19's stages in order as Luan et al. do, and stopping at the deepest of
    `layers`.

    After each 3x3 convolution, a 3x3 mean: zero padding like the convolution's, but divided
    by the number of pixels inside the image rather than by 9. Dividing by 9 (DPST's average
    pooling) darkens the border at every layer, a little more each time, so masks there would
    no longer sum to 1 and a region's border features would weigh less than its middle; here a
    constant mask stays constant and a partition stays a partition. At each 2x2 pooling, the
    mean of each pooling window; odd sides floor like the pooling, so sizes equal
    `Stage.map_size` exactly. Values stay in [0, 1]. An (h, w) mask gives (h_l, w_l) ones.
    """
    array = np.asarray(masks, dtype=np.float32)
    flat = array.ndim == 2
    if flat:
        array = array[:, :, None]
    wanted = set(layers)
    if not wanted:
        return {}
    for name in wanted:
        stage(name)  # ValueError for a name VGG19 does not have
    last = max(wanted, key=lambda name: STAGES.index(stage(name)))
    carried: dict[str, np.ndarray] = {}
    for s in stages_to(last):
        array = _mean3x3(array) if s.conv else _pool2x2(array)
        if s.name in wanted:
            carried[s.name] = array[:, :, 0] if flat else array
    return {name: carried[name] for name in layers}


def _mean3x3(array: np.ndarray) -> np.ndarray:
    """Mean over each pixel's 3x3 neighbourhood inside the image (separable sums)."""
    h, w = array.shape[:2]
    rows = array.copy()
    rows[1:] += array[:-1]
    rows[:-1] += array[1:]
    out = rows.copy()
    out[:, 1:] += rows[:, :-1]
    out[:, :-1] += rows[:, 1:]
    # Pixels inside the image per neighbourhood: 3 along a side, 2 at its ends (1 if alone).
    out /= (_inside(h)[:, None] * _inside(w)[None, :])[:, :, None]
    return out


def _inside(n: int) -> np.ndarray:
    """Pixels inside a side of n per 3-pixel window: 3, but 2 at the ends (1 when n is 1)."""
    count = np.full(n, 3.0, dtype=np.float32)
    if n:
        count[0] -= 1.0
        count[-1] -= 1.0  # both for n = 1: 1
    return count


def _pool2x2(array: np.ndarray) -> np.ndarray:
    """Mean over 2x2 windows at stride 2, an odd last row or column dropped."""
    h, w = array.shape[0] // 2 * 2, array.shape[1] // 2 * 2
    out = array[0:h:2, 0:w:2] + array[1:h:2, 0:w:2]
    out += array[0:h:2, 1:w:2]
    out += array[1:h:2, 1:w:2]
    out *= np.float32(0.25)
    return out


def shares(content_regions: np.ndarray) -> np.ndarray:
    """Each region's share of the content, (R,) float64: the mean of each region's mask over
    the image (the pixel fractions, summing to 1 for a partition; for soft guides, each
    guide's mean)."""
    regions = np.asarray(content_regions)
    if regions.ndim == 2:
        regions = regions[:, :, None]
    return regions.mean(axis=(0, 1), dtype=np.float64)
