"""The model's small XLA loops (Winograd's transforms, pooling, the direct layers' element-wise
passes), each one tf.function for good.

XLA needs static sizes, so a loop is compiled for each map size it meets. Written as one
tf.function per Python function and signature, its map size left open, it is traced once, so
TensorFlow registers it once, however many loss graphs call it. A function per map size was
registered anew (with its XLA compilation) by every loss graph that called it, and TensorFlow
never unregisters a function nested in a graph it drops: a process seeing many image sizes
gathered hundreds (docs/performance.md). The number held is bounded by the loops the model
has, times the dtypes it runs.
"""

from __future__ import annotations

import functools

import tensorflow as tf

_FUNCTIONS: dict[tuple, object] = {}


def xla_function(function, *signature: tf.TensorSpec):
    """`function` as one XLA-compiled tf.function taking `signature` (sizes left open as
    None), the same object on every call with the same function and signature."""
    key = (function, signature)
    if key not in _FUNCTIONS:
        # A partial each: TensorFlow counts traces per Python function, and warns when one is
        # traced often.
        _FUNCTIONS[key] = tf.function(functools.partial(function), input_signature=signature,
                                      jit_compile=True)
    return _FUNCTIONS[key]
