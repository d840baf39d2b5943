"""tf.custom_gradient without pinning the graphs it is traced into.

Inside a traced function, tf.custom_gradient registers the gradient under a new name
("CustomGradient-N") in TensorFlow's process-wide gradient registry, which never forgets a name,
and the function registered holds the traced tensors, so the whole graph stays alive for the
life of the process, whatever drops the tf.function that traced it. A process tracing the loss
for many image sizes (a server, a batch) kept every one: about 2 MB a size, half the growth that
was left with Winograd's convolutions off (docs/performance.md, a long-running serve).

`custom_gradient` is tf.custom_gradient with the registered function moved onto the graph that
holds the operation: the registry keeps only a small stub that finds it there, and is cleared of
it when the graph goes. Gradients are the same (tapes never read the registry; symbolic
gradients, e.g. of a tf.function differentiated from outside, find the function through the
stub while the graph exists). Eagerly nothing is registered, and tf.custom_gradient runs as is.
"""

from __future__ import annotations

import functools
import weakref

import tensorflow as tf
# The registry has no public way to take a name out; its layout is TensorFlow's since 1.x.
from tensorflow.python.framework import ops

_HELD = "_styleflow_custom_gradients"  # graph attribute: {registered name: gradient function}


def custom_gradient(f):
    """Like @tf.custom_gradient (positional tensor arguments), for `f` returning
    (outputs, gradient function)."""
    decorated = tf.custom_gradient(f)

    @functools.wraps(f)
    def call(*args):
        result = decorated(*args)
        if not tf.executing_eagerly():
            _hold_on_graph(tf.nest.flatten(result)[0])
        return result

    return call


def _hold_on_graph(output: tf.Tensor) -> None:
    # The outputs come from the IdentityN op whose gradient TensorFlow registered, under the
    # name that op carries.
    name = output.op.get_attr("_gradient_op_type").decode()
    registry = ops._gradient_registry._registry  # pylint: disable=protected-access
    entry = registry.get(name)
    if entry is None:  # not the layout this was written for: leave TensorFlow's as it is
        return
    graph = output.graph
    if not hasattr(graph, _HELD):
        setattr(graph, _HELD, {})
    getattr(graph, _HELD)[name] = entry["type"]
    entry["type"] = _stub(weakref.ref(graph), name)
    weakref.finalize(graph, registry.pop, name, None)


def _stub(graph_ref, name: str):
    def gradient(op, *grads):
        return getattr(graph_ref(), _HELD)[name](op, *grads)

    return gradient
