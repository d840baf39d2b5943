"""VGG19's layers in order, walked once: what each stage reads and writes, at which stride and
how far it reaches. The feature extractor, the memory estimate and the tile geometry all read
these stages rather than walking the layer list themselves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

# VGG19 without its top, in Keras' layer names: (name, filters), None marks a 2x2 pooling.
VGG19_LAYOUT: tuple = (
    ("block1_conv1", 64), ("block1_conv2", 64), None,
    ("block2_conv1", 128), ("block2_conv2", 128), None,
    ("block3_conv1", 256), ("block3_conv2", 256), ("block3_conv3", 256), ("block3_conv4", 256), None,
    ("block4_conv1", 512), ("block4_conv2", 512), ("block4_conv3", 512), ("block4_conv4", 512), None,
    ("block5_conv1", 512), ("block5_conv2", 512), ("block5_conv3", 512), ("block5_conv4", 512), None,
)


@dataclass(frozen=True)
class Stage:
    """One layer: a 3x3 convolution with ReLU (`conv`) or a 2x2 pooling.

    `block`: VGG19's block (1-5); `stride`: image pixels per pixel of this stage's output;
    `radius`: how many image pixels beyond its own the output depends on, on each side (its
    receptive field's reach)."""

    name: str
    block: int
    conv: bool
    in_channels: int
    out_channels: int
    stride: int
    radius: int

    def map_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """(h, w) of this stage's output for an (h, w) image (poolings floor, as Keras')."""
        return size[0] // self.stride, size[1] // self.stride


def _walk(layout: tuple) -> tuple[Stage, ...]:
    stages = []
    channels, stride, radius, block = 3, 1, 0, 1
    for entry in layout:
        if entry is None:
            # A 2x2 pooling on its grid merges two neighbouring outputs: it reaches no further
            # than they did, and its pixels stand for twice as many image pixels.
            stride *= 2
            stages.append(Stage(f"block{block}_pool", block, False, channels, channels, stride,
                                radius))
            block += 1
            continue
        name, filters = entry
        radius += stride  # a 3x3 convolution reaches one pixel further at the current stride
        stages.append(Stage(name, block, True, channels, filters, stride, radius))
        channels = filters
    return tuple(stages)


STAGES: tuple[Stage, ...] = _walk(VGG19_LAYOUT)
CONV_LAYERS: tuple[str, ...] = tuple(s.name for s in STAGES if s.conv)
CONV_FILTERS: dict[str, int] = {s.name: s.out_channels for s in STAGES if s.conv}
_BY_NAME = {s.name: s for s in STAGES}


def stage(name: str) -> Stage:
    """The stage called `name` (ValueError for a name VGG19 does not have)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown layer {name!r}") from None


def deepest(names: Sequence[str]) -> str:
    """The layer among `names` that comes last in VGG19."""
    return max(names, key=CONV_LAYERS.index)


def convs_to(last: str | None = None) -> tuple[Stage, ...]:
    """The conv layers up to and including `last` (all 16 without it)."""
    return tuple(s for s in stages_to(last) if s.conv)


def stages_to(last: str | None = None) -> tuple[Stage, ...]:
    """The stages up to and including the conv layer `last` (all of them without it)."""
    if last is None:
        return STAGES
    return STAGES[: STAGES.index(stage(last)) + 1]


def conv_maps(size: tuple[int, int], last: str | None = None
              ) -> Iterator[tuple[str, int, int, int, int]]:
    """(name, h, w, in channels, out channels) of each conv layer for an (h, w) image, up to
    `last` (all 16 without it): the map each one reads and writes."""
    for s in stages_to(last):
        if s.conv:
            yield (s.name, *s.map_size(size), s.in_channels, s.out_channels)


def activation_elements(size: tuple[int, int], layers: Sequence[str]) -> int:
    """Number of activation values VGG19 computes for an (h, w) image up to the deepest of
    `layers` (each conv output, and each pooling output)."""
    total = 0
    for s in stages_to(deepest(layers)):
        h, w = s.map_size(size)
        total += h * w * s.out_channels
    return total


def min_image_side(layer_names: Sequence[str]) -> int:
    """Smallest image side for which every named layer still has at least one pixel."""
    return stage(deepest(layer_names)).stride
