"""The compiled objective: its gradient, its blend of several styles, its one-time targets."""

import numpy as np
import pytest

from styleflow.model.network import KERAS_INPUT, build_extractor
from styleflow.objective.objective import Objective
from styleflow.objective.terms import KERAS_EXAMPLE, NEURAL_STYLE
from styleflow.model.weights import random_weights

STYLE = ["block1_conv1", "block2_conv1"]
CONTENT = ["block2_conv2"]


def images(shape, n, seed):
    rng = np.random.default_rng(seed)
    return [KERAS_INPUT.preprocess(rng.integers(0, 256, shape + (3,)).astype(np.uint8))
            for _ in range(n)]


@pytest.fixture(scope="module")
def extractor():
    return build_extractor(random_weights(3).layers, CONTENT + STYLE)


@pytest.mark.parametrize("normalisation", [KERAS_EXAMPLE, NEURAL_STYLE])
def test_gradient_matches_finite_differences(extractor, normalisation):
    content, style, start = images((12, 10), 3, 0)
    obj = Objective(extractor, content, [style], {CONTENT[0]: 1.0},
                    {name: 0.5 for name in STYLE}, content_weight=0.3, style_weight=2.0,
                    tv_weight=0.5, normalisation=normalisation)
    _, grad = obj.loss_and_grads(start)
    norm = float(np.linalg.norm(grad))
    assert norm > 0
    # Along the gradient the directional derivative is ‖g‖; along random unit directions it
    # is g·d. Tolerances are relative to ‖g‖, so a zero or wrong gradient fails.
    rng = np.random.default_rng(1)
    directions = [grad / norm] + [rng.standard_normal(start.shape) for _ in range(2)]
    for direction in directions:
        direction = (direction / np.linalg.norm(direction)).astype(np.float32)
        step = 0.5
        plus, _ = obj.loss_and_grads(start + step * direction)
        minus, _ = obj.loss_and_grads(start - step * direction)
        numeric = (plus.total - minus.total) / (2 * step)
        analytic = float(np.sum(grad.astype(np.float64) * direction))
        assert abs(analytic - numeric) < 0.02 * norm, (analytic, numeric, norm)
    assert float(np.sum(grad * (grad / norm))) == pytest.approx(norm, rel=1e-4)


def np_gram_mean(f):
    flat = f.reshape(-1, f.shape[-1]).astype(np.float64)
    return flat.T @ flat / f.size


def test_two_styles_blend_3_to_1(extractor):
    content, s1, s2, x = images((16, 16), 4, 5)
    obj = Objective(extractor, content, [s1, s2], {CONTENT[0]: 1.0}, {n: 1.0 for n in STYLE},
                    content_weight=0.0, style_weight=10.0, tv_weight=0.0,
                    normalisation=NEURAL_STYLE, style_blends=[3, 1])
    f1, f2, fx = (extractor(im) for im in (s1, s2, x))
    want = 0.0
    for name in STYLE:
        a1, a2 = np_gram_mean(f1[name].numpy()), np_gram_mean(f2[name].numpy())
        # The blended target is 0.75·A1 + 0.25·A2 ...
        np.testing.assert_allclose(obj.gram_targets[name].numpy(), 0.75 * a1 + 0.25 * a2,
                                   rtol=1e-4, atol=1e-3)
        # ... and the loss is the blend of the two per-style losses (neural-style's definition).
        g = np_gram_mean(fx[name].numpy())
        want += 0.75 * np.mean((g - a1) ** 2) + 0.25 * np.mean((g - a2) ** 2)
    parts, _ = obj.loss_and_grads(x)
    assert parts.style == pytest.approx(10.0 * want, rel=1e-4)
    assert parts.total == pytest.approx(parts.style, rel=1e-6)


def test_keras_example_total_matches_numpy(extractor):
    content, style, x = images((16, 20), 3, 9)
    obj = Objective(extractor, content, [style], {CONTENT[0]: 1.0},
                    {n: 1.0 / len(STYLE) for n in STYLE}, content_weight=0.025,
                    style_weight=1.0, tv_weight=1.0, normalisation=KERAS_EXAMPLE)
    fc, fs, fx = (extractor(im) for im in (content, style, x))
    c = 0.025 * np.sum((fx[CONTENT[0]].numpy().astype(np.float64) - fc[CONTENT[0]].numpy()) ** 2)
    s = 0.0
    for name in STYLE:
        gs = np_gram_mean(fs[name].numpy()) * fs[name].numpy().size
        gx = np_gram_mean(fx[name].numpy()) * fx[name].numpy().size
        s += np.sum((gs - gx) ** 2) / (4 * 9 * (16 * 20) ** 2) / len(STYLE)
    img = x[0].astype(np.float64)
    a = (img[:-1, :-1] - img[1:, :-1]) ** 2
    b = (img[:-1, :-1] - img[:-1, 1:]) ** 2
    tv = np.sum((a + b) ** 1.25)
    parts, _ = obj.loss_and_grads(x)
    assert parts.content == pytest.approx(c, rel=1e-4)
    assert parts.style == pytest.approx(s, rel=1e-3)
    assert parts.tv == pytest.approx(tv, rel=1e-4)
    assert parts.total == pytest.approx(c + s + tv, rel=1e-4)


def test_targets_are_computed_once(extractor):
    """Each evaluation runs only the candidate image through the network."""
    calls = []

    class Counting:
        def __call__(self, image, training=False):
            calls.append(tuple(image.shape))
            return extractor(image, training=training)

    content, style, x = images((16, 16), 3, 2)
    obj = Objective(Counting(), content, [style, style], {CONTENT[0]: 1.0}, {STYLE[0]: 1.0},
                    1.0, 1.0, 1.0)
    assert len(calls) == 3  # content once, each style once
    for _ in range(3):
        obj.loss_and_grads(x)
    # tf.function traces once (one more Python call); later evaluations run the graph.
    assert len(calls) == 4
    assert all(shape[0] == 1 for shape in calls)


def test_bfloat16_network_computes_in_bfloat16_and_stays_close(extractor):
    half = build_extractor(random_weights(3).layers, CONTENT + STYLE, dtype="bfloat16")
    assert half.get_layer("block1_conv1").compute_dtype == "bfloat16"
    assert half.get_layer("block1_conv1").kernel.dtype == "float32"  # weights stay float32
    content, style, x = images((24, 32), 3, 5)
    args = ({CONTENT[0]: 1.0}, {n: 0.5 for n in STYLE}, 0.025, 1.0, 1.0)
    full_parts, full_grad = Objective(extractor, content, [style], *args).loss_and_grads(x)
    half_parts, half_grad = Objective(half, content, [style], *args).loss_and_grads(x)
    assert half_grad.dtype == np.float32
    assert half_parts.total == pytest.approx(full_parts.total, rel=0.02)
    assert half_parts.total != full_parts.total  # really computed differently
    cosine = np.sum(full_grad * half_grad) / np.linalg.norm(full_grad) / np.linalg.norm(half_grad)
    assert cosine > 0.99


@pytest.mark.parametrize("convolution", ["keras", "transposed"])
def test_no_weight_gradient_convolution_runs(convolution, tmp_path):
    """With Keras' Conv2D the traced gradient holds a Conv2DBackpropFilter per convolution
    (TensorFlow's Conv2D gradient makes both), but only the image's gradient is asked for:
    TensorFlow must prune them, so the profiler sees input-gradient convolutions run and no
    filter-gradient ones (frozen_conv's gradient has none to begin with)."""
    import tensorflow as tf

    extractor = build_extractor(random_weights(3).layers, CONTENT + STYLE,
                                convolution=convolution)
    content, style = images((40, 32), 2, 7)
    objective = Objective(extractor, content, [style], {CONTENT[0]: 1.0},
                          {name: 0.5 for name in STYLE}, 1.0, 1.0, 1.0)
    objective.loss_and_grads(content)  # traced outside the profile
    tf.profiler.experimental.start(str(tmp_path))
    try:
        objective.loss_and_grads(content)
    finally:
        tf.profiler.experimental.stop()
    traces = list(tmp_path.rglob("*.xplane.pb"))
    assert traces
    recorded = b"".join(path.read_bytes() for path in traces)
    assert recorded.count(b"Conv2DBackpropInput") > 0  # the profile does name kernels
    assert recorded.count(b"Conv2DBackpropFilter") == 0
