"""How styleflow sets up TensorFlow in its process: oneDNN and one operation at a time asked for
before TensorFlow loads, TensorFlow imported without its start-up chatter, and deterministic
kernels for a seed."""

from __future__ import annotations

import os
import sys

from ..errors import StyleflowError
from . import xla_cache
from .machine import ONEDNN_VARIABLE


def prefer_onednn() -> bool:
    """Ask TensorFlow for its oneDNN CPU kernels unless the user chose (TF_ENABLE_ONEDNN_OPTS
    set) or TensorFlow is already imported (too late: it reads the variable once). Returns
    whether this call set it.

    TensorFlow turns oneDNN on by itself only on CPUs with AVX-512 VNNI/BF16 or AMX; with the
    frozen convolutions (model.frozen_conv) it is the fastest choice on AVX2 CPUs too."""
    return _ask_before_tensorflow(ONEDNN_VARIABLE, "1")


# TensorFlow's own default runs as many operations at once as there are cores.
INTER_OP_VARIABLE = "TF_NUM_INTEROP_THREADS"


def one_op_at_a_time() -> bool:
    """Ask TensorFlow to run one operation at a time (each still split over every core) unless
    the user chose (TF_NUM_INTEROP_THREADS set) or TensorFlow is already imported. Returns
    whether this call set it.

    VGG19's passes are a chain of large operations, each of which already spreads over all
    cores: running two at once only splits the cores between them and evicts each other's
    data from the caches (bench/inter_op.py, 400x300 on 2 cores: 0.546 s per evaluation
    against 0.572 s)."""
    return _ask_before_tensorflow(INTER_OP_VARIABLE, "1")


def _ask_before_tensorflow(variable: str, value: str) -> bool:
    """Set TensorFlow's environment `variable` to `value` unless the user set it or TensorFlow
    is already imported (it reads these once, when it loads); whether this call set it."""
    if variable in os.environ or "tensorflow" in sys.modules:
        return False
    os.environ[variable] = value
    return True


def quiet_tensorflow() -> None:
    """Import TensorFlow with its C++ start-up chatter hidden.

    TensorFlow logs through absl before TF_CPP_MIN_LOG_LEVEL is honoured, so stderr (fd 2) is
    pointed at /dev/null for the import alone; a failed import is still reported, in one line.
    Once imported, TensorFlow is made to read its XLA flags, and TF_XLA_FLAGS is put back as
    the user set it (`xla_cache.settle`)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        import tensorflow as tf
        import keras  # noqa: F401

        tf.config.list_physical_devices()  # device probing logs too (e.g. cuInit without a GPU)
    except ImportError as exc:
        os.dup2(saved, 2)
        if isinstance(exc.__context__, KeyboardInterrupt):  # Ctrl-C during the import
            raise KeyboardInterrupt from None
        raise StyleflowError(f"cannot import TensorFlow/Keras ({exc}); "
                             "run: pip install -r requirements.txt") from None
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
    xla_cache.settle()  # TensorFlow has its XLA flags; children need not inherit ours


def enable_determinism() -> None:
    """Ask TensorFlow for deterministic kernels (an explicit seed promises repeatable files:
    CPU runs repeat anyway, GPU convolutions otherwise may not, at some speed cost)."""
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()


def deterministic_kernels() -> bool:
    """Whether TensorFlow was asked for deterministic kernels in this process, which XLA
    cannot give for max pooling's gradient."""
    # Public to enable, internal to read (TensorFlow 2.21 exports no getter).
    from tensorflow.python.framework import config

    return bool(config.is_op_determinism_enabled())
