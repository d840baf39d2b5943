"""Large style images: Gram targets computed over tiles equal the whole image's."""

import numpy as np
import pytest

from styleflow import tiling
from styleflow.defaults import (FULL_CONTENT_LAYER, FULL_STYLE_LAYERS, LITE_CONTENT_LAYER,
                                LITE_STYLE_LAYERS)
from styleflow.network import KERAS_INPUT, build_extractor
from styleflow.objective import KERAS_EXAMPLE, NEURAL_STYLE, Objective
from styleflow.weights import random_weights


def test_geometry_of_vgg_layers():
    assert tiling.geometry("block1_conv1") == (1, 1)
    assert tiling.geometry("block1_conv2") == (1, 2)
    assert tiling.geometry("block2_conv1") == (2, 5)  # + pool (1) + conv at stride 2
    stride, radius = tiling.geometry("block5_conv1")
    assert (stride, radius) == (16, 85)  # 2 + 1 + 2·2 + 2 + 4·4 + 4 + 4·8 + 8 + 16


@pytest.mark.parametrize("layers", ["full", "lite"])
@pytest.mark.parametrize("normalisation", [KERAS_EXAMPLE, NEURAL_STYLE])
def test_tiled_style_targets_equal_untiled(layers, normalisation, monkeypatch):
    content_layer, style_layers = ((FULL_CONTENT_LAYER, FULL_STYLE_LAYERS) if layers == "full"
                                   else (LITE_CONTENT_LAYER, LITE_STYLE_LAYERS))
    extractor = build_extractor(random_weights(1).layers, [content_layer, *style_layers])
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (25, 37, 3)).astype(np.uint8)
    from PIL import Image

    # Several tiles each way; the full layers' 96 px halo makes each tile dearer, so a smaller
    # image there keeps the test quick.
    size = (296, 200) if layers == "lite" else (168, 136)
    style = KERAS_INPUT.preprocess(np.asarray(Image.fromarray(small).resize(size)))
    content = style[:, :64, :64, :]
    args = (extractor, content, [style], {content_layer: 1.0},
            {n: 1.0 / len(style_layers) for n in style_layers}, 0.025, 1.0, 1.0, normalisation)
    whole = Objective(*args)
    monkeypatch.setattr(tiling, "TILE_ABOVE_PIXELS", 1000)
    monkeypatch.setattr(tiling, "TILE_SIDE", 64 if layers == "lite" else 48)
    tiled = Objective(*args)
    for name in style_layers:
        want = whole.gram_targets[name].numpy().astype(np.float64)
        got = tiled.gram_targets[name].numpy().astype(np.float64)
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max(), name
    x = content + rng.normal(0, 10, content.shape).astype(np.float32)
    assert tiled.loss_and_grads(x)[0].total == pytest.approx(whole.loss_and_grads(x)[0].total,
                                                            rel=1e-5)
