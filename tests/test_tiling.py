"""Large style images: Gram targets computed over tiles equal the whole image's."""

import numpy as np
import pytest

from styleflow.model import machine
from styleflow.objective import tiling
from styleflow.defaults import (FULL_CONTENT_LAYER, FULL_STYLE_LAYERS, LITE_CONTENT_LAYER,
                                LITE_STYLE_LAYERS)
from styleflow.model.network import KERAS_INPUT, build_extractor
from styleflow.objective.objective import Objective
from styleflow.objective.terms import KERAS_EXAMPLE, NEURAL_STYLE
from styleflow.model.weights import random_weights


def test_geometry_of_vgg_layers():
    assert tiling.geometry("block1_conv1") == (1, 1)
    assert tiling.geometry("block1_conv2") == (1, 2)
    assert tiling.geometry("block2_conv1") == (2, 4)  # + conv at stride 2 (pooling: none)
    stride, radius = tiling.geometry("block5_conv1")
    assert (stride, radius) == (16, 70)  # 2 + 2·2 + 4·4 + 4·8 + 16
    assert tiling.halo(["block1_conv1", "block5_conv1"]) == 80  # rounded up to the grid


def test_tiles_cover_every_feature_once():
    layers = ["block1_conv1", "block3_conv1", "block4_conv2"]
    height, width = 203, 157
    for core in (64, (40, 157), 8):
        cover = {name: np.zeros((height // s, width // s), int) for name, s in
                 ((n, tiling.geometry(n)[0]) for n in layers)}
        for tile in tiling.plan(height, width, layers, core):
            y0, y1, x0, x1 = tile.crop
            assert y0 % 8 == 0 and x0 % 8 == 0  # crops start on the deepest grid
            for i, name in enumerate(layers):
                p0, p1, q0, q1 = tile.places[i]
                r0, r1, c0, c1 = tile.boxes[i]
                assert (p1 - p0, q1 - q0) == (r1 - r0, c1 - c0)
                cover[name][p0:p1, q0:q1] += 1
        for name in layers:
            assert (cover[name] == 1).all(), (core, name)


def test_gram_passes_stop_at_the_deepest_style_layer():
    """The forward-only Gram passes run the extractor's own layers up to the deepest style
    layer: the lite layers' content layer (block3_conv2, below every style layer) is not
    computed there, and the style features are the extractor's."""
    from styleflow.objective.graph import LossGraph

    extractor = build_extractor(random_weights(1).layers,
                                [LITE_CONTENT_LAYER, *LITE_STYLE_LAYERS])
    graph = LossGraph(extractor, KERAS_EXAMPLE, [LITE_CONTENT_LAYER], LITE_STYLE_LAYERS)
    part = graph.style_extractor
    names = {layer.name for layer in part.layers}
    assert LITE_CONTENT_LAYER not in names and set(part.output) == set(LITE_STYLE_LAYERS)
    assert part.get_layer("block1_conv1") is extractor.get_layer("block1_conv1")
    image = np.random.default_rng(4).normal(0, 50, (1, 40, 56, 3)).astype(np.float32)
    whole, style = extractor(image), part(image)
    for name in LITE_STYLE_LAYERS:
        assert np.array_equal(style[name].numpy(), whole[name].numpy()), name
    assert graph.style_extractor is part  # built once per graph


def test_best_core_fits_and_sends_fewest_pixels():
    layers = ["block1_conv1", "block5_conv1"]
    core = tiling.best_core(1536, 2048, layers, 1_000_000)
    assert core is not None
    assert all(t.pixels <= 1_000_000 for t in tiling.plan(1536, 2048, layers, core))
    cost = tiling.computed_pixels(1536, 2048, layers, core)
    for other in [(320, 2048), (832, 832), (512, 512), (160, 2048)]:  # strips and squares
        if all(t.pixels <= 1_000_000 for t in tiling.plan(1536, 2048, layers, other)):
            assert cost <= tiling.computed_pixels(1536, 2048, layers, other), other
    assert tiling.best_core(200, 3000, layers, 400 * 3000)[1] == 3000  # a wide, short image
    assert tiling.best_core(1536, 2048, layers, 100 * 100) is None  # not even one grid step


@pytest.mark.slow
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
    monkeypatch.setattr(machine, "MAX_PASS_PIXELS", 1000)
    monkeypatch.setattr(tiling, "TILE_SIDE", 64 if layers == "lite" else 48)
    tiled = Objective(*args)
    for name in style_layers:
        want = whole.gram_targets[name].numpy().astype(np.float64)
        got = tiled.gram_targets[name].numpy().astype(np.float64)
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max(), name
    x = content + rng.normal(0, 10, content.shape).astype(np.float32)
    assert tiled.loss_and_grads(x)[0].total == pytest.approx(whole.loss_and_grads(x)[0].total,
                                                            rel=1e-5)


def _problem(layers, normalisation, size=(200, 296), balance=False, content_layer=None):
    default_content, style_layers = ((FULL_CONTENT_LAYER, FULL_STYLE_LAYERS) if layers == "full"
                                     else (LITE_CONTENT_LAYER, LITE_STYLE_LAYERS))
    content_layer = content_layer or default_content
    # The default extractor: Winograd from block1_conv2 on wherever it pays, in the
    # untiled pass, the targets and every tile alike.
    extractor = build_extractor(random_weights(1).layers,
                                list(dict.fromkeys([content_layer, *style_layers])))
    rng = np.random.default_rng(0)
    from PIL import Image

    small = rng.integers(0, 256, (25, 37, 3)).astype(np.uint8)
    content = KERAS_INPUT.preprocess(np.asarray(Image.fromarray(small).resize(size)))
    style = KERAS_INPUT.preprocess(np.asarray(Image.fromarray(small[::-1]).resize((150, 180))))
    # Two blended styles, both content layers' normalisations; a small TV weight so the
    # network's terms dominate the gradient being compared.
    args = (extractor, content, [style, style[:, :100]], {content_layer: 1.0},
            {n: 1.0 / len(style_layers) for n in style_layers},
            0.025 if normalisation == KERAS_EXAMPLE else 5.0, 1.0, 1e-3, normalisation)
    x = content + rng.normal(0, 10, content.shape).astype(np.float32)
    if balance:  # content weight set so content and style weigh alike in the gradient
        parts = Objective(*args).loss_and_grads(x)[0]
        args = (*args[:5], args[5] * parts.style / parts.content, *args[6:])
    return args, x


def _assert_like_one_pass(whole, tiled, x, exact=True):
    """Loss parts within 1e-5 and gradient within 1e-4 (of its largest value) of the one
    pass's, on a problem where content and style both weigh (`_problem(balance=True)`).
    `exact=False` (split tiles): the gradient as near as rounding lets it be (`_near`)."""
    want, grad_want = whole.loss_and_grads(x)
    got, grad = tiled.loss_and_grads(x)
    for part in ("total", "content", "style", "tv"):
        assert getattr(got, part) == pytest.approx(getattr(want, part), rel=1e-5), part
    assert want.content > 0.2 * want.total and want.style > 0.2 * want.total
    if exact:
        assert np.abs(grad - grad_want).max() <= 1e-4 * np.abs(grad_want).max()
    else:
        _near(grad, grad_want)


def _near(grad, want):
    """A gradient that agrees with `want` up to rounding in a ReLU network. Split tiles hand
    the deep layers a map that differs from the one pass's by rounding (Winograd's outputs
    depend, at rounding level, on their whole 6x6 input tile, which reaches past the halo's
    margin; large-images.md), and a ReLU or max-pooling choice within rounding of a tie then
    falls the other way: so does the one pass's own gradient when the image changes by a
    millionth, on this random network by 1.7e-3 to 7.7e-3 of its norm and up to 0.1 of its
    largest value (stop 38). Split tiles measured up to 8e-4 of the norm (AVX2), a halo one
    grid step short 0.25: the bound lies between."""
    assert np.linalg.norm(grad - want) <= 2e-2 * np.linalg.norm(want)
    assert np.abs(grad - want).max() <= 0.2 * np.abs(want).max()


@pytest.mark.slow
@pytest.mark.parametrize("layers", ["full", "lite"])
@pytest.mark.parametrize("normalisation", [KERAS_EXAMPLE, NEURAL_STYLE])
def test_tiled_loss_and_gradient_equal_untiled(layers, normalisation):
    # The full layers' 80 px halo makes each tile dearer: a smaller image there.
    size = (200, 296) if layers == "lite" else (136, 168)
    args, x = _problem(layers, normalisation, size, balance=True)
    whole, tiled = Objective(*args), Objective(*args, tile=64)
    assert tiled.tiled and len(tiled._tiled.tiles) >= 9  # 64 px cores: several each way
    _assert_like_one_pass(whole, tiled, x)


@pytest.mark.slow
def test_tiled_layer_both_content_and_style():
    """A layer that is both a content and a style layer: each tile carries the sum of both
    terms' gradients back from it."""
    args, x = _problem("lite", KERAS_EXAMPLE, balance=True, content_layer="block2_conv1")
    whole, tiled = Objective(*args), Objective(*args, tile=64)
    assert {"block2_conv1"} <= set(tiled._tiled.tile_content) & set(tiled._tiled.tile_styles)
    _assert_like_one_pass(whole, tiled, x)


@pytest.mark.slow
@pytest.mark.parametrize("split,normalisation", [("block2_pool", KERAS_EXAMPLE),
                                                 ("block3_pool", NEURAL_STYLE),
                                                 ("block4_pool", KERAS_EXAMPLE)])
def test_split_tiled_loss_and_gradient_equal_untiled(split, normalisation):
    """The network split at a pooling layer: the shallow layers over tiles, the deep ones over
    the whole map there (tiled_loss with a split); loss parts and gradient as one pass's."""
    args, x = _problem("full", normalisation, (136, 168), balance=True)
    whole, tiled = Objective(*args), Objective(*args, split=(split, 48))
    assert tiled.tiled and len(tiled._tiled.tiles) >= 9
    assert FULL_CONTENT_LAYER not in tiled._tiled.tile_content  # the deep layers run whole
    _assert_like_one_pass(whole, tiled, x, exact=False)


@pytest.mark.slow
def test_split_with_a_content_layer_above_it():
    """A content layer above the split goes over the tiles, the style layers past it whole."""
    args, x = _problem("full", NEURAL_STYLE, (136, 168))
    layers = ["block2_conv2", *FULL_STYLE_LAYERS]
    args = (build_extractor(random_weights(1).layers, layers), args[1], args[2],
            {"block2_conv2": 1.0}, *args[4:])
    whole, tiled = Objective(*args), Objective(*args, split=("block3_pool", 48))
    assert tiled._tiled.tile_content == ("block2_conv2",)
    want, grad_want = whole.loss_and_grads(x)
    got, grad = tiled.loss_and_grads(x)
    assert want.content > 0
    for part in ("total", "content", "style"):
        assert getattr(got, part) == pytest.approx(getattr(want, part), rel=1e-5), part
    _near(grad, grad_want)


def test_a_split_evaluation_looks_for_a_stop_inside_the_deep_pass():
    """The deep layers' whole pass is looked at for a stop before each layer's step, forward
    and back: set during it, the evaluation stops before the shallow gradient pass."""
    from styleflow.objective.deep_pass import segments
    from styleflow.objective.tiled_loss import EvaluationStopped

    args, x = _problem("full", KERAS_EXAMPLE, (96, 128))
    objective = Objective(*args, split=("block3_pool", 32))
    loss = objective._tiled

    class Counting:
        def __init__(self, at=None):
            self.calls, self.at = 0, at

        def is_set(self):
            self.calls += 1
            return self.calls == self.at

    quiet = Counting()
    objective.loss_and_grads(x, stop=quiet)
    steps = len(segments("block3_pool", [FULL_CONTENT_LAYER, "block4_conv1", "block5_conv1"]))
    strips = len(range(0, 96, max(1, tiling.STRIP_PIXELS // 128)))
    assert quiet.calls == len(loss.style_tiles) + 2 * steps + len(loss.tiles) + strips
    objective = Objective(*args, split=("block3_pool", 32))
    loss = objective._tiled
    during = Counting(at=len(loss.style_tiles) + steps + 1)  # the first backward step
    with pytest.raises(EvaluationStopped):
        objective.loss_and_grads(x, stop=during)
    assert not any(kind == "gradient" for kind, *_ in loss._passes)


@pytest.mark.slow
def test_adam_split_follows_the_untiled_steps():
    from styleflow.optim.adam import AdamLoop

    # The lite layers split past block 2 (block 3 whole).
    args, x = _problem("lite", NEURAL_STYLE, size=(96, 120))
    runs = []
    for split in (None, ("block2_pool", 32)):
        loop = AdamLoop(Objective(*args, split=split), x, _smooth_adam(args, x))
        runs.append([float(loop.step()[0]) for _ in range(4)] + [loop.best()])
    _assert_same_steps(runs, x)


@pytest.mark.slow
def test_a_halo_one_grid_step_short_is_not_exact(monkeypatch):
    # The halo is what makes tiles exact: one grid step less and the gradient differs.
    args, x = _problem("lite", KERAS_EXAMPLE)
    want = Objective(*args).loss_and_grads(x)[1]
    short = tiling.halo
    monkeypatch.setattr(tiling, "halo", lambda layers, align=1: short(layers, align)
                        - tiling.grid(layers, align))
    got = Objective(*args, tile=64).loss_and_grads(x)[1]
    assert np.abs(got - want).max() > 1e-3 * np.abs(want).max()
    with pytest.raises(AssertionError):  # the split tests' looser bound sees it too
        _near(got, want)


@pytest.mark.slow
def test_lbfgs_tiled_ends_at_the_untiled_loss():
    from styleflow.optim.lbfgs import Evaluator, iterate_lbfgs

    args, _ = _problem("lite", KERAS_EXAMPLE, size=(96, 120))
    ends = []
    for tile in (None, 48):
        objective = Objective(*args, tile=tile)
        steps = list(iterate_lbfgs(Evaluator(objective), args[1], 3, evaluations_per_iteration=5))
        ends.append(steps[-1])
    untiled, tiled = ends
    assert untiled.evaluations == tiled.evaluations >= 15
    # Each evaluation agrees to 1e-5 (above); 15 evaluations of L-BFGS amplify that rounding
    # (1.0e-4 measured at stop 37, with block2_conv2 by Winograd).
    assert tiled.parts.total == pytest.approx(untiled.parts.total, rel=5e-4)
    assert tiled.parts.total < 0.9 * Objective(*args).loss_and_grads(args[1])[0].total


@pytest.mark.slow
def test_adam_tiled_follows_the_untiled_steps():
    from styleflow.optim.adam import AdamLoop

    args, x = _problem("lite", NEURAL_STYLE, size=(96, 120))
    runs = []
    for tile in (None, 48):
        loop = AdamLoop(Objective(*args, tile=tile), x, _smooth_adam(args, x))
        runs.append([float(loop.step()[0]) for _ in range(4)] + [loop.best()])
    _assert_same_steps(runs, x)


def _smooth_adam(args, x):
    """Adam whose steps follow the gradient's size, not only its sign: ε as large as the
    gradient's largest value. With the default ε a pixel whose gradient lies within rounding
    of 0 steps a whole step either way, so tiled and untiled runs, which agree to rounding,
    parted by up to a step at a few pixels (0.37 after four steps of 1.0, stop 38); this way
    a rounding-sized difference in the gradient stays as small in the steps."""
    from styleflow.optim.adam import AdamSettings

    scale = float(np.abs(Objective(*args).loss_and_grads(x)[1]).max())
    return AdamSettings(learning_rate=10.0, epsilon=scale)


def _assert_same_steps(runs, x):
    """Four steps' losses within 1e-4 of each other, falling, and the best images apart by
    rounding only, far less than the steps moved them (`x`, where they began)."""
    for a, b in zip(runs[0][:4], runs[1][:4]):
        assert b == pytest.approx(a, rel=1e-4)
    assert runs[0][3] < runs[0][0]
    apart = np.abs(runs[0][4] - runs[1][4])
    # Measured (stop 38): split 0.999-quantile 9e-4, largest 1.5e-3; tiles 1.5e-5, 2.3e-5;
    # the steps moved pixels by up to 1.2.
    assert np.quantile(apart, 0.999) < 5e-3 and apart.max() < 5e-2
    assert np.abs(runs[0][4] - x).max() > 0.5


@pytest.mark.slow
def test_larger_forward_tiles_stay_exact():
    # The forward-only Gram pass may use larger tiles than the backward pass.
    args, x = _problem("lite", KERAS_EXAMPLE, balance=True)
    want, grad_want = Objective(*args).loss_and_grads(x)
    tiled = Objective(*args, tile=48, forward_tile=(96, 144))
    assert len(tiled._tiled.style_tiles) < len(tiled._tiled.tiles)
    got, grad = tiled.loss_and_grads(x)
    assert got.total == pytest.approx(want.total, rel=1e-5)
    assert np.abs(grad - grad_want).max() <= 1e-4 * np.abs(grad_want).max()


def test_style_gram_tiles_follow_the_pass_limit(monkeypatch):
    """A style image above the pass limit (oneDNN's GEMM convolutions) has its Gram sums
    computed in tiles within it, and they equal the untiled ones."""
    from styleflow.model import machine

    layers = list(LITE_STYLE_LAYERS)
    extractor = build_extractor(random_weights(1).layers, layers)
    image = np.random.default_rng(3).normal(0, 50, (1, 240, 320, 3)).astype(np.float32)
    whole = tiling.tiled_gram_sums(extractor, image, layers, tile=(240, 320))
    limit = 40_000
    monkeypatch.setattr(machine, "onednn_pass_pixels", lambda precision="float32": limit)
    seen = []

    def recording(x, **kw):
        seen.append(int(x.shape[1]) * int(x.shape[2]))
        return extractor(x, **kw)

    tiled = tiling.tiled_gram_sums(recording, image, layers)
    assert len(seen) > 1 and max(seen) <= limit
    for name in layers:
        want, got = whole[name][0], tiled[name][0]
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max(), name


def test_tiles_convolve_by_winograd_as_the_untiled_pass(monkeypatch):
    """Each crop shape is traced with static sizes, so the deeper layers of the tile passes
    take Winograd's convolution wherever it suits, as the untiled pass and the targets do."""
    from styleflow.model import winograd

    convolved = []
    real = winograd.WinogradConv.__call__

    def recording(self, x, kernel, bias):
        convolved.append(tuple(x.shape))
        return real(self, x, kernel, bias)

    monkeypatch.setattr(winograd.WinogradConv, "__call__", recording)
    args, x = _problem("lite", NEURAL_STYLE, size=(96, 120))
    tiled = Objective(*args, tile=32)
    convolved.clear()  # the targets' eager passes
    tiled.loss_and_grads(x)
    crops = {(t.crop[1] - t.crop[0], t.crop[3] - t.crop[2]) for t in tiled._tiled.tiles}
    assert len(crops) > 1 and convolved  # several crop shapes, all traced with their sizes
    assert all(None not in shape for shape in convolved)
    passes = len(tiled._tiled._passes)
    tiled.loss_and_grads(x)
    assert len(tiled._tiled._passes) == passes  # one trace per crop shape and pass, kept


def test_tiles_take_xlas_transforms_and_the_untiled_pass_numbas(monkeypatch):
    """The tiled loss runs where memory is short: its passes and its targets keep Winograd's
    results in TensorFlow's allocator (XLA's transforms), not in Numba's pool beside it, and
    what the pool kept from an untiled pass is let go."""
    from styleflow.model import winograd

    chosen = []
    real = winograd.transform

    def recording(kind, dtype, transforms="auto"):
        chosen.append(transforms)
        return real(kind, dtype, transforms)

    monkeypatch.setattr(winograd, "transform", recording)
    args, x = _problem("lite", NEURAL_STYLE, size=(96, 120))
    Objective(*args).loss_and_grads(x)  # untiled: Numba's, whose pool keeps its results
    assert chosen and set(chosen) == {"auto"}
    from styleflow.model import winograd_kernels

    assert winograd_kernels.BUFFERS.held_bytes()[1] > 0
    chosen.clear()
    tiled = Objective(*args, tile=32)  # the targets too
    tiled.loss_and_grads(x)
    assert chosen and set(chosen) == {"xla"}
    assert winograd_kernels.BUFFERS.held_bytes()[1] == 0  # nothing kept beside the tiles


def test_forward_tiles_hold_no_more_than_the_gradient_tiles():
    """The budget's forward-only crops (larger: they keep half the activations) are sized so
    that their pass, Winograd's transient tiles included, holds no more than the gradient
    pass it reserved memory for."""
    from styleflow.plan import budget, memory

    for layers in ([FULL_CONTENT_LAYER, *FULL_STYLE_LAYERS],
                   [LITE_CONTENT_LAYER, *LITE_STYLE_LAYERS]):
        layout = budget.choose((1536, 2048), layers, layers[:1], "float32", "adam",
                               max_memory=4, resident=0)
        assert layout.tile is not None and layout.forward_tile is not None
        grad = max(tiling.plan(1536, 2048, layers, layout.tile), key=lambda t: t.pixels)
        fwd = max(tiling.plan(1536, 2048, layers, layout.forward_tile), key=lambda t: t.pixels)
        assert fwd.pixels > grad.pixels  # larger tiles for the forward pass

        def holds(tile, forward):
            y0, y1, x0, x1 = tile.crop
            return memory.pass_bytes((y1 - y0, x1 - x0), layers, forward=forward,
                                     whole=(1536, 2048))

        assert holds(fwd, True) <= 1.02 * holds(grad, False)


def test_a_graph_is_reused_only_with_its_own_extractor():
    """Style targets go through the graph's extractor and content targets through the
    objective's: a graph built for another extractor (same layers) is refused, not mixed."""
    from styleflow.objective.graph import LossGraph

    layers = [LITE_CONTENT_LAYER, *LITE_STYLE_LAYERS]
    ours, other = (build_extractor(random_weights(seed).layers, layers) for seed in (1, 2))
    graph = LossGraph(ours, KERAS_EXAMPLE, [LITE_CONTENT_LAYER], LITE_STYLE_LAYERS)
    image = np.random.default_rng(5).normal(0, 50, (1, 32, 32, 3)).astype(np.float32)
    args = (image, [image], {LITE_CONTENT_LAYER: 1.0},
            {n: 1 / len(LITE_STYLE_LAYERS) for n in LITE_STYLE_LAYERS}, 0.025, 1.0, 1.0)
    with pytest.raises(ValueError, match="another extractor"):
        Objective(other, *args, graph=graph)
    assert Objective(ours, *args, graph=graph).graph is graph


def test_split_crops_start_on_the_tiled_winograd_layers_grid(monkeypatch):
    """Split tiles' crops start where the Winograd layers among the tiled ones place their
    4x4 tiles as the whole image's pass does: output tile x stride (block2: 8 px, block3: 16
    px, block4: 32 px); no alignment where the machine does not convolve by Winograd."""
    monkeypatch.setattr(machine, "transposed_convolutions", lambda precision="float32": True)
    assert tiling.winograd_align("block3_pool") == 16
    assert tiling.winograd_align("block4_pool") == 32
    # Block 2 by Winograd (4 x stride 2); block1_conv2 on images where it pays (4 x stride 1).
    assert tiling.winograd_align("block2_pool") == tiling.winograd_align("block2_conv1") == 8
    assert tiling.winograd_align("block1_pool") == tiling.winograd_align("block1_conv2") == 4
    assert tiling.winograd_align("block1_conv1") == 1
    # Without a split the crops go through every loss layer: the grid up to the deepest.
    assert tiling.crop_align(["block1_conv1", "block3_conv2", "block2_conv1"]) == 16
    assert tiling.crop_align(["block5_conv2", "block1_conv1"]) == 64
    layers = ["block1_conv1", "block2_conv1", "block3_conv1", "block3_pool"]
    assert tiling.grid(layers) == 8 and tiling.halo(layers) == 24
    assert tiling.grid(layers, 16) == 16 and tiling.halo(layers, 16) == 32
    for t in tiling.plan(200, 296, layers, 48, align=16):
        assert t.crop[0] % 16 == 0 and t.crop[2] % 16 == 0
    monkeypatch.setattr(machine, "transposed_convolutions", lambda precision="float32": False)
    assert tiling.winograd_align("block3_pool") == 1


def test_a_split_needs_a_pooling_layer_above_a_loss_layer():
    from styleflow.objective.tiled_loss import TiledLoss

    args, _ = _problem("lite", KERAS_EXAMPLE, (64, 64))
    graph = Objective(*args).graph
    for split in ("block3_pool", "block4_pool", "block2_conv1"):
        with pytest.raises(ValueError, match="split"):
            TiledLoss(graph, (1, 64, 64, 3), 32, split=split)
