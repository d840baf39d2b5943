"""What the machine runs natively: bfloat16 arithmetic on this CPU or GPU, and so which
precision `auto` means. bfloat16 emulated in software is many times slower than float32 (21 s
against 2 s per evaluation measured on an AVX2-only CPU), so it is only chosen where native.
Also which convolution kernels TensorFlow uses on a CPU (oneDNN, see `prefer_onednn`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"

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


def prefer_onednn() -> bool:
    """Ask TensorFlow for its oneDNN CPU kernels unless the user chose (TF_ENABLE_ONEDNN_OPTS
    set) or TensorFlow is already imported (too late: it reads the variable once). Returns
    whether this call set it.

    TensorFlow turns oneDNN on by itself only on CPUs with AVX-512 VNNI/BF16 or AMX; on an
    AVX2-only CPU it was 1.2x faster per evaluation at 400x300 (issue 11's measurement) and its
    convolutions survive larger tensors (`bench/conv_limit.py`: without it one 3340x3340x64
    convolution crashes). A slowdown reported for one 2700x2700 eager convolution on AVX2 stays
    out of reach: images above `budget.UNTILED_MAX_PIXELS` (4 MP) go through in tiles."""
    if ONEDNN_VARIABLE in os.environ or "tensorflow" in sys.modules:
        return False
    os.environ[ONEDNN_VARIABLE] = "1"
    return True
