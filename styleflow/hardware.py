"""What the machine runs natively: bfloat16 arithmetic on this CPU or GPU, and so which
precision `auto` means. bfloat16 emulated in software is many times slower than float32 (21 s
against 2 s per evaluation measured on an AVX2-only CPU), so it is only chosen where native.
Also which convolution kernels TensorFlow uses on a CPU (oneDNN, see `prefer_onednn`)."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
# oneDNN reads these to run as if the CPU had no instructions beyond the one named.
ISA_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
# oneDNN's "avx512_core", from which its float32 forward convolutions are brgemm kernels.
AVX512_CORE_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512dq")
# Below AVX512_CORE, oneDNN 3.7 (TensorFlow 2.21) runs TensorFlow's float32 forward
# convolutions as im2col + GEMM, whose scratch buffer it caps: once one convolution's input
# values times the threads reach 2**28 it falls back to its reference loop without a word,
# about 500x slower. Measured with ONEDNN_MAX_CPU_ISA=AVX2 (bench/conv_limit.py), one 64 -> 64
# channel convolution: 2 threads 1000x2090 1.3 s, 1024x2048 unfinished after 5 minutes;
# 1 thread 2000x2090 5.2 s, 2100x2100 unfinished; 8 threads 720x720 0.4 s, 730x730 191 s.
GEMM_SCRATCH_VALUES = 2**28
GEMM_SAFETY = 0.9
# VGG19's widest input at full resolution: block1_conv2 reads 64 channels per pixel.
FULL_RESOLUTION_CHANNELS = 64

PRECISIONS = ("auto", "float32", "bfloat16")
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


def resolve_precision(requested: str) -> tuple[str, str | None]:
    """The precision to run and, when worth saying, a one-line note: `auto` is bfloat16 where
    native, else float32; an explicit bfloat16 where it is emulated runs, with a warning."""
    if requested not in PRECISIONS:
        from .errors import StyleflowError

        raise StyleflowError(f"--precision: must be one of {', '.join(PRECISIONS)}, not "
                             f"'{requested}'")
    if requested == "float32":
        return "float32", None
    native, why = native_bfloat16()
    if requested == "auto":
        return ("bfloat16" if native else "float32"), None
    if native:
        return "bfloat16", None
    return "bfloat16", (f"note: --precision bfloat16 will be slow here ({why}; measured about "
                        "ten times slower than float32 on such a CPU); float32 is faster")


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
    GPU doing the convolutions, or float32, whose convolutions go through oneDNN's brgemm
    kernels (`frozen_conv`)."""
    from .frozen_conv import use_transposed
    from .memory import onednn_enabled

    if (not onednn_enabled() or not onednn_convolves_by_gemm()
            or use_transposed(precision) or gpu_visible()):
        return None
    return gemm_pass_pixels(intra_op_threads())


def prefer_onednn() -> bool:
    """Ask TensorFlow for its oneDNN CPU kernels unless the user chose (TF_ENABLE_ONEDNN_OPTS
    set) or TensorFlow is already imported (too late: it reads the variable once). Returns
    whether this call set it.

    TensorFlow turns oneDNN on by itself only on CPUs with AVX-512 VNNI/BF16 or AMX. With
    `frozen_conv`'s convolutions it is the fastest choice on AVX2 CPUs too (bench/levers.py;
    TensorFlow's own kernels run the input-gradient ops 2.5x slower), and the GEMM limit above
    no longer applies to float32; passes in other precisions keep within it
    (`onednn_pass_pixels`)."""
    if ONEDNN_VARIABLE in os.environ or "tensorflow" in sys.modules:
        return False
    os.environ[ONEDNN_VARIABLE] = "1"
    return True
