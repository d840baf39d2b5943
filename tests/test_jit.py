"""XLA or not: the same loss and gradient either way; `auto` times both only when it may pay
and never when a seed promises repeatable files; its trial evaluations are counted."""

import numpy as np
import pytest

from conftest import make_image
from styleflow import StyleflowError, Stylizer
from styleflow.optim import jit
from styleflow.model.network import KERAS_INPUT, build_extractor
from styleflow.objective.objective import Objective
from styleflow.objective.terms import KERAS_EXAMPLE, NEURAL_STYLE
from styleflow.model.weights import random_weights

STYLE = ["block1_conv1", "block2_conv1"]


@pytest.fixture(autouse=True)
def nondeterministic_kernels():
    """An earlier in-process run with --seed leaves TensorFlow's determinism on, under which
    XLA cannot compile max pooling's gradient: these tests run without it, then restore it."""
    from tensorflow.python.framework import config

    was = config.is_op_determinism_enabled()
    config.disable_op_determinism()
    yield
    if was:
        config.enable_op_determinism()
CONTENT = ["block2_conv2"]


@pytest.mark.parametrize("normalisation", [KERAS_EXAMPLE, NEURAL_STYLE])
def test_xla_and_plain_give_the_same_loss_and_gradient(normalisation):
    extractor = build_extractor(random_weights(2).layers, CONTENT + STYLE)
    rng = np.random.default_rng(0)
    content, style, x = (KERAS_INPUT.preprocess(rng.integers(0, 256, (24, 32, 3)).astype(np.uint8))
                         for _ in range(3))
    obj = Objective(extractor, content, [style], {CONTENT[0]: 1.0}, {n: 0.5 for n in STYLE},
                    0.3, 2.0, 0.5, normalisation=normalisation)
    plain, g_plain = obj.loss_and_grads(x, xla=False)
    xla, g_xla = obj.loss_and_grads(x, xla=True)
    assert xla.total == pytest.approx(plain.total, rel=1e-5)
    assert np.abs(g_xla - g_plain).max() <= 1e-4 * np.abs(g_plain).max()


@pytest.mark.slow
def test_modes_and_the_seed_rule(tiny):
    base, style = tiny
    forced = Stylizer("random", jit="on").iter_transfer(base, style, iterations=1, height=16)
    assert not forced.jit_plan.measure and forced.jit_plan.xla
    seeded = Stylizer("random", seed=3).iter_transfer(base, style, iterations=50, height=16)
    assert not seeded.jit_plan.measure and not seeded.jit_plan.xla  # no timing with a seed
    short = Stylizer("random").iter_transfer(base, style, iterations=1, height=16)
    assert not short.jit_plan.measure  # 20 evaluations: trials would not pay
    long = Stylizer("random").iter_transfer(base, style, iterations=5, height=16)
    assert long.jit_plan.measure and long.total == 5 * 20 + jit.TRIALS
    with pytest.raises(StyleflowError, match="^jit must be 'auto', 'on' or 'off', not 'maybe'$"):
        Stylizer("random", jit="maybe")


def test_jit_on_with_a_seed_is_refused_in_one_line(tiny, tmp_path):
    from tensorflow.python.framework import config

    from conftest import assert_clean_error, call_cli

    base, style = tiny
    try:
        proc = call_cli("neural_style_transfer.py", base, style, tmp_path / "r", "--weights",
                        "random", "--iter", "1", "--height", "16", "--seed", "1", "--jit", "on")
    finally:
        config.disable_op_determinism()
    assert_clean_error(proc, "--jit on", "--seed")


def test_auto_times_both_counts_its_trials_and_remembers_the_size(tiny, tmp_path):
    base, style = tiny
    other = make_image(tmp_path / "other.png", (48, 32), 5)  # the base's size
    stylizer = Stylizer("random")
    seen = []
    run = stylizer.iter_transfer(base, style, iterations=5, height=16,
                                 content_layer=CONTENT[0], style_layers=STYLE,
                                 on_evaluation=lambda n, loss: seen.append(n))
    iterations = list(run)
    assert "plain" in run.jit_report and "XLA" in run.jit_report and "per evaluation" in \
        run.jit_report
    # The trials come first in the count, then L-BFGS's own 20 per iteration.
    assert seen[:jit.TRIALS] == list(range(1, jit.TRIALS + 1))
    assert iterations[0].evaluations >= jit.TRIALS + 20
    assert run.result().evaluations >= 5 * 20 + jit.TRIALS
    # Another pair of the size uses the measured choice without timing again.
    again = stylizer.iter_transfer(other, style, iterations=5, height=16,
                                   content_layer=CONTENT[0], style_layers=STYLE)
    assert not again.jit_plan.measure and "measured earlier" in again.jit_plan.reason
