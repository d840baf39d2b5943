"""The machine's facts: the CPU's instruction sets, GPUs, whether bfloat16 runs natively (and so
what precision `auto` means), whether TensorFlow runs oneDNN here, which convolution kernels
that implies, and the largest pass through the network they can run.

Everything here reads the machine and the environment; nothing asks the network code what it
chose. docs/performance.md gives the measurements behind the thresholds."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

from ..defaults import PRECISIONS
from ..errors import Note, check_choice

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
# oneDNN reads these to run as if the CPU had no instructions beyond the one named.
ISA_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
# oneDNN's "avx512_core", from which its float32 forward convolutions are brgemm kernels.
AVX512_CORE_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512dq")
# Below AVX512_CORE, oneDNN runs float32 forward convolutions as im2col + GEMM and caps that
# GEMM's scratch buffer: once one convolution's input values times the threads reach this, it
# falls back to a reference loop hundreds of times slower, without a word.
GEMM_SCRATCH_VALUES = 2**28
GEMM_SAFETY = 0.9
# VGG19's widest input at full resolution: block1_conv2 reads 64 channels per pixel.
FULL_RESOLUTION_CHANNELS = 64
# The most pixels one pass through the network may have anywhere: larger images go through in
# tiles, well below where TensorFlow's CPU convolutions crash (docs/large-images.md).
MAX_PASS_PIXELS = 2048 * 2048

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def gpu_visible() -> bool:
    """Whether TensorFlow runs on a GPU here (it then does the convolutions, not oneDNN)."""
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


def gpu_compute_capabilities() -> list[tuple[int, int]]:
    """Compute capability of each GPU TensorFlow sees."""
    import tensorflow as tf

    found = []
    for gpu in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        if capability:
            found.append(tuple(capability))
    return found


def native_bfloat16() -> tuple[bool, str]:
    """(whether bfloat16 runs natively here, a few words on why)."""
    gpus = gpu_compute_capabilities()
    if gpus:
        major, minor = min(gpus)
        if (major, minor) >= (8, 0):
            return True, f"a GPU of compute capability {major}.{minor}"
        return False, f"the GPU's compute capability {major}.{minor} is below 8.0"
    flags = cpu_flags()
    have = [flag for flag in BF16_CPU_FLAGS if flag in flags]
    if have:
        return True, f"the CPU has {' and '.join(f.upper() for f in have)}"
    return False, "the CPU has neither AVX512_BF16 nor AMX, so bfloat16 is emulated"


def resolve_precision(requested: str) -> tuple[str, Note | None]:
    """The precision to run and, when worth saying, a one-line note: `auto` is bfloat16 where
    native, else float32; an explicit bfloat16 where it is emulated runs, with a warning
    (emulated, it is many times slower than float32)."""
    check_choice("precision", requested, PRECISIONS)
    if requested == "float32":
        return "float32", None
    native, why = native_bfloat16()
    if requested == "auto":
        return ("bfloat16" if native else "float32"), None
    if native:
        return "bfloat16", None
    return "bfloat16", Note(f"note: precision=bfloat16 will be slow here ({why}; measured about "
                            "ten times slower than float32 on such a CPU); float32 is faster",
                            params=("precision=bfloat16",))


def onednn_enabled() -> bool:
    """Whether TensorFlow runs its oneDNN kernels here (its own choice per CPU, unless
    TF_ENABLE_ONEDNN_OPTS says); without TensorFlow loaded yet, the environment decides."""
    setting = os.environ.get(ONEDNN_VARIABLE)
    if setting is not None:
        return setting.strip().lower() in ("1", "true")
    if "tensorflow" in sys.modules:
        try:
            from tensorflow.python.util import _pywrap_util_port

            return bool(_pywrap_util_port.IsMklEnabled())
        except (ImportError, AttributeError):
            pass
    return False  # the larger memory figure: never under-estimate


def onednn_isa_cap() -> str | None:
    """The instruction set oneDNN is capped at by ONEDNN_MAX_CPU_ISA (or DNNL_MAX_CPU_ISA),
    upper case; None when neither is set."""
    for name in ISA_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            return value.upper()
    return None


def x86() -> bool:
    """Whether this is an x86 CPU (the only kind oneDNN's choices here were measured on)."""
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")


def onednn_avx512() -> bool:
    """Whether oneDNN may use AVX-512 here: an x86 CPU with AVX-512's core flags and no
    ONEDNN_MAX_CPU_ISA cap below it (False where the flags cannot be read)."""
    if not x86():
        return False
    cap = onednn_isa_cap()
    if cap and cap not in ("ALL", "DEFAULT") and not cap.startswith(("AVX512", "AVX10")):
        return False
    flags = cpu_flags()
    return all(flag in flags for flag in AVX512_CORE_FLAGS)


def onednn_convolves_by_gemm() -> bool:
    """Whether oneDNN's float32 forward convolutions here are im2col + GEMM (see
    GEMM_SCRATCH_VALUES): on an x86 CPU without AVX-512 (or with oneDNN capped below it), or
    one whose flags cannot be read. Other architectures have other kernels."""
    return x86() and not onednn_avx512()


def transposed_convolutions(dtype: str) -> bool:
    """Whether VGG's frozen convolutions run on oneDNN's input-gradient kernels here
    (model.frozen_conv): float32 on an x86 CPU whose TensorFlow runs oneDNN. bfloat16, GPUs
    and other CPUs keep Keras' Conv2D (cuDNN, oneDNN's bfloat16 and ARM kernels were not
    measured this way)."""
    import keras

    return (dtype == "float32" and x86() and onednn_enabled()
            and keras.backend.backend() == "tensorflow" and not gpu_visible())


def intra_op_threads() -> int:
    """The threads TensorFlow (and so oneDNN) splits one operation over."""
    if "tensorflow" in sys.modules:
        import tensorflow as tf

        configured = tf.config.threading.get_intra_op_parallelism_threads()
        if configured > 0:
            return configured
    try:
        configured = int(os.environ.get("TF_NUM_INTRAOP_THREADS", "0"))
    except ValueError:
        configured = 0
    if configured > 0:
        return configured
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def gemm_pass_pixels(threads: int) -> int:
    """The most pixels one pass through VGG19 may have for oneDNN's GEMM convolutions to keep
    within their scratch limit when split over `threads`."""
    return int(GEMM_SAFETY * GEMM_SCRATCH_VALUES / (FULL_RESOLUTION_CHANNELS * max(1, threads)))


def onednn_pass_pixels(precision: str = "float32") -> int | None:
    """The most pixels one pass through the network may have on this machine because of
    oneDNN's GEMM convolutions, or None where they do not run: oneDNN off, AVX-512, not x86, a
    GPU doing the convolutions, or float32 on input-gradient kernels (which have no such
    limit)."""
    if (not onednn_enabled() or not onednn_convolves_by_gemm()
            or transposed_convolutions(precision) or gpu_visible()):
        return None
    return gemm_pass_pixels(intra_op_threads())


def pass_pixels(precision: str = "float32") -> int:
    """The most pixels one pass through the network may have here: MAX_PASS_PIXELS, or fewer
    where oneDNN's GEMM convolutions need it (`onednn_pass_pixels`)."""
    limit = onednn_pass_pixels(precision)
    return MAX_PASS_PIXELS if limit is None else min(MAX_PASS_PIXELS, limit)
