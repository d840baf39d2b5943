"""Segmentation masks: colour-coded regions (Deep Photo Style Transfer), style guides (guided
Gram matrices), and both carried down VGG19's stages to each style layer's resolution."""

import io

import numpy as np
import pytest
from PIL import Image, ImageFilter

from styleflow.errors import StyleflowError
from styleflow.model import layout
from styleflow.objective import masks

ORANGE = (255, 128, 0)
DARK_BLUE = (16, 32, 96)
GREEN = (0, 180, 60)


def split(h, w, first, second, *, vertical):
    """An (h, w, 3) mask: `first` on the left (vertical) or top half, `second` elsewhere."""
    mask = np.empty((h, w, 3), np.uint8)
    mask[...] = second
    if vertical:
        mask[:, : w // 2] = first
    else:
        mask[: h // 2] = first
    return mask


def where(mask, colour):
    return (mask == np.array(colour, np.uint8)).all(axis=2)


def assert_partition(regions):
    assert set(np.unique(regions)) <= {0.0, 1.0}
    np.testing.assert_array_equal(regions.sum(axis=2), 1.0)


def test_two_regions_in_the_same_colour_order_for_both_masks():
    content = split(40, 60, DARK_BLUE, ORANGE, vertical=True)  # left blue, right orange
    style = split(50, 30, ORANGE, DARK_BLUE, vertical=False)  # top orange, bottom blue
    content_regions, style_regions, colours = masks.colour_regions(content, style)
    assert content_regions.shape == (40, 60, 2) and style_regions.shape == (50, 30, 2)
    assert content_regions.dtype == style_regions.dtype == np.float32
    assert sorted(colours) == sorted([ORANGE, DARK_BLUE])
    assert_partition(content_regions)
    assert_partition(style_regions)
    for r, colour in enumerate(colours):
        np.testing.assert_array_equal(content_regions[:, :, r] == 1, where(content, colour))
        np.testing.assert_array_equal(style_regions[:, :, r] == 1, where(style, colour))


def test_one_colour_in_both_masks_is_one_region():
    content = np.full((16, 24, 3), GREEN, np.uint8)
    style = np.full((20, 20, 3), GREEN, np.uint8)
    content_regions, style_regions, colours = masks.colour_regions(content, style)
    assert colours == [GREEN]
    np.testing.assert_array_equal(content_regions, 1.0)
    np.testing.assert_array_equal(style_regions, 1.0)


def blurred(mask, radius):
    return np.asarray(Image.fromarray(mask).filter(ImageFilter.GaussianBlur(radius)))


def test_anti_aliased_edges_join_the_nearest_region():
    # Straight edges: a blurred one fills whole rows (columns) with in-between colours, each
    # more than MIN_REGION_SHARE of a small mask; a disc gives blends along a curve.
    sharp_content = split(64, 96, DARK_BLUE, ORANGE, vertical=True)
    yy, xx = np.mgrid[:80, :80]
    sharp_style = np.empty((80, 80, 3), np.uint8)
    sharp_style[...] = DARK_BLUE
    sharp_style[(yy - 40) ** 2 + (xx - 40) ** 2 < 25 ** 2] = ORANGE
    content, style = blurred(sharp_content, 3), blurred(sharp_style, 3)
    assert len({tuple(p) for p in content.reshape(-1, 3)}) > 10  # the blur made blends
    content_regions, style_regions, colours = masks.colour_regions(content, style)
    assert sorted(colours) == sorted([ORANGE, DARK_BLUE])
    assert_partition(content_regions)
    assert_partition(style_regions)
    for regions, sharp in ((content_regions, sharp_content), (style_regions, sharp_style)):
        for r, colour in enumerate(colours):
            # Pixels agree with the sharp mask but for the blurred edge.
            wrong = (regions[:, :, r] == 1) != where(sharp, colour)
            assert wrong.mean() < 0.02, (colour, wrong.mean())


def test_a_jpeg_saved_mask_keeps_its_regions():
    sharp = split(64, 64, ORANGE, DARK_BLUE, vertical=False)
    buffer = io.BytesIO()
    Image.fromarray(sharp).save(buffer, format="JPEG", quality=70)
    noisy = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    assert not (noisy == sharp).all()
    content_regions, _, colours = masks.colour_regions(noisy, sharp)
    assert len(colours) == 2
    assert_partition(content_regions)
    top = colours.index(min(colours, key=lambda c: np.linalg.norm(np.subtract(c, ORANGE))))
    assert content_regions[:32, :, top].mean() > 0.98 and content_regions[32:, :, top].mean() < 0.02


def test_a_content_colour_missing_from_the_style_is_an_error():
    content = split(40, 40, GREEN, ORANGE, vertical=True)
    style = split(40, 40, ORANGE, DARK_BLUE, vertical=False)
    with pytest.raises(StyleflowError) as caught:
        masks.colour_regions(content, style)
    message = str(caught.value)
    assert "#00b43c" in message  # GREEN
    assert "#ff8000" not in message.split("(")[0]  # orange has its counterpart
    assert "content_mask" in message and "style_mask" in message
    assert set(caught.value.params) == {"content_mask", "style_mask"}
    assert len(message.splitlines()) == 1
    # Named as the caller names the masks.
    with pytest.raises(StyleflowError) as caught:
        masks.colour_regions(content, style, content_what="segmentation",
                             style_what="style_segmentation")
    assert "segmentation" in str(caught.value) and "content_mask" not in str(caught.value)


def test_two_content_colours_matching_one_style_colour_is_an_error():
    # 40 apart: two regions in the content, both within SAME_COLOUR_DISTANCE of the style's.
    content = split(40, 40, (0, 0, 0), (40, 0, 0), vertical=True)
    style = np.full((40, 40, 3), (20, 0, 0), np.uint8)
    with pytest.raises(StyleflowError) as caught:
        masks.colour_regions(content, style)
    message = str(caught.value)
    assert "#000000" in message and "#280000" in message and "#140000" in message
    assert set(caught.value.params) == {"content_mask", "style_mask"}


def test_a_style_colour_missing_from_the_content_is_unused():
    content = split(40, 40, ORANGE, DARK_BLUE, vertical=True)
    style = split(40, 40, ORANGE, DARK_BLUE, vertical=False)
    style[30:] = GREEN
    content_regions, style_regions, colours = masks.colour_regions(content, style)
    assert sorted(colours) == sorted([ORANGE, DARK_BLUE])
    assert_partition(content_regions)
    np.testing.assert_array_equal(style_regions[30:], 0.0)  # green belongs to no region
    np.testing.assert_array_equal(style_regions[:30].sum(axis=2), 1.0)


def test_a_mask_without_flat_colours_is_an_error():
    noise = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    with pytest.raises(StyleflowError) as caught:
        masks.colour_regions(split(40, 40, ORANGE, DARK_BLUE, vertical=True), noise)
    assert "style_mask" in str(caught.value) and caught.value.params == ("style_mask",)


def test_check_aspect_accepts_proportional_sizes_only():
    masks.check_aspect((200, 300), (400, 600), "content_mask", "content")
    masks.check_aspect((200, 301, 3), (400, 600, 3), "content_mask", "content")  # rounding
    masks.check_aspect((67, 100), (1000, 1500), "content_mask", "content")  # 66.67 rounded up
    masks.check_aspect((800, 1200), (400, 600), "content_mask", "content")  # larger is fine
    for bad in ((300, 300), (200, 303), (190, 300)):
        with pytest.raises(StyleflowError) as caught:
            masks.check_aspect(bad, (400, 600), "content_mask", "content")
        assert "content_mask" in str(caught.value) and "600x400" in str(caught.value)
        assert set(caught.value.params) == {"content_mask", "content"}


LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv2", "block5_conv1")


@pytest.mark.parametrize("size", [(37, 53), (64, 48), (129, 95)])
def test_carry_down_gives_each_layer_its_map_size(size):
    carried = masks.carry_down(np.ones((*size, 2), np.float32), LAYERS)
    assert list(carried) == list(LAYERS)
    for name in LAYERS:
        assert carried[name].shape == (*layout.stage(name).map_size(size), 2), name
        assert carried[name].dtype == np.float32


def test_carry_down_stops_at_the_deepest_layer_asked():
    carried = masks.carry_down(np.ones((40, 40, 1)), ["block2_conv1", "block1_conv2"])
    assert list(carried) == ["block2_conv1", "block1_conv2"]
    assert carried["block2_conv1"].shape == (20, 20, 1)
    assert masks.carry_down(np.ones((40, 40, 1)), []) == {}


def test_a_constant_mask_stays_constant_borders_included():
    carried = masks.carry_down(np.ones((37, 53, 1), np.float32), LAYERS)
    for name in LAYERS:
        np.testing.assert_array_equal(carried[name], 1.0)  # not darkened at the border
    half = masks.carry_down(np.full((37, 53), 0.5, np.float32), ["block3_conv1"])
    np.testing.assert_allclose(half["block3_conv1"], 0.5, rtol=1e-6)


def test_a_partition_stays_a_partition_in_range():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, (37, 53))
    labels[:, 30:] = 2  # a large region besides noise
    regions = (labels[:, :, None] == np.arange(3)).astype(np.float32)
    carried = masks.carry_down(regions, LAYERS)
    for name in LAYERS:
        values = carried[name]
        np.testing.assert_allclose(values.sum(axis=2), 1.0, atol=1e-5)
        assert values.min() >= 0.0 and values.max() <= 1.0
    # Averaging blurs the noisy part (strictly between 0 and 1) but not the solid one.
    blurry = carried["block2_conv1"]
    assert 0 < blurry[:, :10, 0].min() and blurry[:, :10, 0].max() < 1
    np.testing.assert_array_equal(blurry[:, -3:, 2], 1.0)


def test_a_half_mask_keeps_its_mean_approximately():
    # Left half ones (26 of 53 columns is odd-sized on purpose), carried to every layer.
    mask = np.zeros((37, 53), np.float32)
    mask[:, :26] = 1.0
    carried = masks.carry_down(mask, LAYERS)
    for name in LAYERS:
        h, w = carried[name].shape
        # Compared with the same half of the region the layer sees (poolings drop odd edges).
        seen = mask[: h * layout.stage(name).stride, : w * layout.stage(name).stride].mean()
        assert abs(carried[name].mean() - seen) < 0.08, name
    # Still ones on the far left and zeros on the far right: carried, not mixed.
    assert carried["block1_conv1"][:, 0].min() == 1.0
    assert carried["block1_conv1"][:, -1].max() == 0.0


def test_carry_down_matches_a_direct_3x3_mean():
    # block1_conv1: one 3x3 mean over the pixels inside the image.
    rng = np.random.default_rng(2)
    mask = rng.random((9, 7, 2)).astype(np.float32)
    got = masks.carry_down(mask, ["block1_conv1"])["block1_conv1"]
    for y in (0, 4, 8):
        for x in (0, 3, 6):
            window = mask[max(y - 1, 0): y + 2, max(x - 1, 0): x + 2]
            np.testing.assert_allclose(got[y, x], window.mean(axis=(0, 1)), rtol=1e-6)


# At 4096x3072 with 3 regions, carry_down to LAYERS took about 1.2 s and colour_regions on two
# such masks about 1.3-1.9 s on a shared 2-core machine (not asserted: timings vary).


def test_style_guides_shapes_range_and_blend():
    full = np.full((20, 30), 255, np.uint8)
    ramp = np.tile(np.linspace(0.0, 1.0, 30, dtype=np.float32), (20, 1))
    half = np.zeros((20, 30, 1), bool)
    half[:10] = True
    guides = masks.style_guides([full, ramp, half])
    assert guides.shape == (20, 30, 3) and guides.dtype == np.float32
    assert guides.min() >= 0.0 and guides.max() <= 1.0
    np.testing.assert_array_equal(guides[:, :, 0], 1.0)
    np.testing.assert_allclose(guides[:, :, 1], ramp)
    np.testing.assert_array_equal(guides[:, :, 2], half[:, :, 0])
    np.testing.assert_allclose(masks.style_guides([np.full((4, 4), 51, np.uint8)]), 0.2)


def test_a_style_guide_zero_everywhere_is_an_error():
    with pytest.raises(StyleflowError) as caught:
        masks.style_guides([np.ones((8, 8)), np.zeros((8, 8), np.uint8)])
    assert "style_masks[1]" in str(caught.value) and caught.value.params == ("style_masks",)
    with pytest.raises(StyleflowError) as caught:
        masks.style_guides([np.zeros((8, 8))], what="masks")
    assert "masks[0]" in str(caught.value) and caught.value.params == ("masks",)
    # Pixels no style paints are fine.
    some = np.zeros((8, 8))
    some[2:4] = 1
    assert masks.style_guides([some]).sum() == 16


def test_style_guides_refuse_other_shapes_and_scales():
    for bad in ([np.ones((8, 8)), np.ones((8, 9))], [np.ones((8, 8, 3))],
                [np.full((8, 8), 200.0)], []):
        with pytest.raises(StyleflowError) as caught:
            masks.style_guides(bad)
        assert "style_masks" in str(caught.value)


def test_shares_are_the_pixel_fractions():
    content = split(40, 60, DARK_BLUE, ORANGE, vertical=True)
    content[:10, 30:] = DARK_BLUE
    regions, _, colours = masks.colour_regions(content, split(8, 8, ORANGE, DARK_BLUE,
                                                             vertical=True))
    got = masks.shares(regions)
    assert got.shape == (2,) and got.dtype == np.float64
    assert got.sum() == pytest.approx(1.0)
    for r, colour in enumerate(colours):
        assert got[r] == pytest.approx(where(content, colour).mean())
    assert got[colours.index(DARK_BLUE)] == pytest.approx((40 * 30 + 10 * 30) / 2400)
    # Soft guides: each guide's mean.
    guides = masks.style_guides([np.full((4, 4), 0.25), np.ones((4, 4))])
    np.testing.assert_allclose(masks.shares(guides), [0.25, 1.0])
