"""Caches stay bounded: compiled functions are kept for the SIZES_KEPT most recent image
sizes, so a long-lived process holds what those take however many sizes it sees."""

from __future__ import annotations

import numpy as np
import pytest

from styleflow.objective import graph as graph_module
from styleflow.objective.graph import LossGraph


def test_the_graph_keeps_the_most_recently_used_sizes(monkeypatch):
    monkeypatch.setattr(graph_module, "SIZES_KEPT", 3)
    graph = LossGraph(extractor=None, normalisation="neural-style", content_layers=["a"],
                      style_layers=["b"])
    made = []

    def make(key):
        return lambda: made.append(key) or object()

    for size in range(6):
        for kind in ("loss", "adam"):
            graph.compiled((kind, (1, size, size, 3)), make((kind, size)))
        if size == 3:
            # size 1, used again, becomes recent: it outlives sizes 2 and 3.
            graph.compiled(("loss", (1, 1, 1, 3)), make(("loss", 1)))
    assert len(made) == 12  # nothing was made twice while it was kept
    assert graph.kept == 6  # 3 sizes x 2 kinds
    # Most recent first: 5, 4, then 1 (used after 3 was made), so 2 and 3 were dropped.
    assert {key[1][1] for key in graph._kept} == {1, 4, 5}
    # A dropped size is made again when it comes back.
    graph.compiled(("loss", (1, 0, 0, 3)), make(("loss", 0)))
    assert made[-1] == ("loss", 0)


@pytest.mark.slow
def test_a_stylizer_that_sees_many_sizes_holds_what_a_few_take(monkeypatch):
    """10 sizes through one Stylizer: it holds as many compiled functions after 10 sizes as
    after 5, and TensorFlow holds no more registered functions or gradients."""
    from styleflow import Stylizer

    monkeypatch.setattr(graph_module, "SIZES_KEPT", 3)
    stylizer = Stylizer("random", seed=0, jit="off")
    rng = np.random.default_rng(0)
    counts = []
    for k in range(10):
        w, h = 40 + 2 * k, 32 + k
        content = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        stylizer.stylize(content, content[::-1], iterations=1, width=w,
                         style_layers=["block1_conv1", "block2_conv1"],
                         content_layers=["block2_conv2"])
        if k + 1 in (5, 10):
            graphs = stylizer.networks._graphs.values()
            counts.append((sum(g.kept for g in graphs), *_tensorflow_holds()))
    (kept5, *held5), (kept10, *held10) = counts
    assert kept10 == kept5 == 3 * 2  # 3 sizes x (Adam's step, the loss)
    assert held10 <= held5


def _tensorflow_holds() -> tuple[int, int, int]:
    """(functions in the eager context's library, names in the gradient registry, Python
    functions registered for py_func ops), once the dropped functions are collected: none has
    a public count."""
    import gc

    from tensorflow.python.eager import context
    from tensorflow.python.framework import ops
    from tensorflow.python.ops import script_ops

    gc.collect()
    return (len(context.context().list_function_names()),
            len(ops._gradient_registry.list()),  # pylint: disable=protected-access
            script_ops._py_funcs.size())  # pylint: disable=protected-access


def test_winograd_layers_leave_nothing_registered_per_size():
    """A function traced through a Winograd layer and dropped leaves TensorFlow's function
    library, gradient registry and py_func registry as they were: the transforms (compiled by
    XLA for each map size, or Numba's, called by py_func) and the kernel check are registered
    once, and the custom gradient does not keep the dropped graph (model.gradients)."""
    import tensorflow as tf

    from styleflow.model.frozen_conv import make_layer

    rng = np.random.default_rng(0)
    kernel = (rng.normal(size=(3, 3, 128, 256)) / 34).astype(np.float32)
    layer = make_layer(kernel, np.zeros(256, np.float32), "w", winograd=True)
    held = []
    for h, w in ((16, 19), (20, 24), (23, 30), (28, 17), (17, 33)):
        x = tf.constant(rng.normal(size=(1, h, w, 128)).astype(np.float32))

        @tf.function
        def value_and_gradient(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x)
                total = tf.reduce_sum(y)
            return y, tape.gradient(total, x)

        y, g = value_and_gradient(x)
        assert y.shape == (1, h, w, 256) and g.shape == x.shape
        del value_and_gradient
        held.append(_tensorflow_holds())
    assert layer._winograd is not None
    # The first two sizes register what is registered once (the transforms' gradient
    # functions among them); after that, nothing more.
    assert held[-1] == held[1], held
