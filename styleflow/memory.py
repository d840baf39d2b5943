"""How much memory a run needs, and refusing sizes that cannot fit before allocating anything
(a clear message instead of the kernel's OOM killer)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from .errors import StyleflowError
from .network import VGG19_LAYOUT, conv_maps, deepest

# Fitted to bench/memory.py's peak RSS (12 L-BFGS evaluations, float32, 1024 and 2048 px wide,
# full and lite layers; see the README): bytes per activation value (kept for the backward
# pass, plus the backward pass's own buffers), with about 6% margin over the worst case. It
# depends on TensorFlow's kernels: lite 2048x1536 peaked at 8.5 GB with oneDNN and 12.6 GB
# without it (the full layers, whose activations are deeper and smaller, at 8.6 GB with it).
BYTES_PER_ACTIVATION = {True: {"float32": 8.5, "bfloat16": 7.5},     # oneDNN on
                        False: {"float32": 14.5, "bfloat16": 12.7}}  # oneDNN off
BASE_BYTES = 900 * 2**20
# Float64 copies of the image the optimiser keeps: scipy's L-BFGS-B works in 2m + 5 vectors
# (m = 10 correction pairs); Adam keeps a few float32 ones (image, best, two moments), twice
# during a step (its compiled update returns a new state beside the old): measured 14.8 GB at
# 3000x2250 with lite weights, 10 bytes per value above the single-copy estimate.
# "forward" is a style image's one forward pass for its Gram targets: no optimiser, and no
# activations kept for a backward pass.
LBFGS_HISTORY = 10


def optimiser_bytes(optimiser: str, history: int = LBFGS_HISTORY) -> int:
    """Bytes per image value (3 per pixel) the optimiser keeps; L-BFGS's depend on its
    history m."""
    if optimiser == "lbfgs":
        return (2 * history + 5) * 8
    return {"adam": 10 * 4, "forward": 0}[optimiser]


IMAGE_BYTES = {name: optimiser_bytes(name) for name in ("lbfgs", "adam", "forward")}
FORWARD_SHARE = 0.5


def onednn_enabled() -> bool:
    """Whether TensorFlow runs its oneDNN kernels here (its own choice per CPU, unless
    TF_ENABLE_ONEDNN_OPTS says); without TensorFlow loaded yet, the environment decides."""
    import sys

    setting = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    if setting is not None:
        return setting.strip().lower() in ("1", "true")
    if "tensorflow" in sys.modules:
        try:
            from tensorflow.python.util import _pywrap_util_port

            return bool(_pywrap_util_port.IsMklEnabled())
        except (ImportError, AttributeError):
            pass
    return False  # the larger figure: never under-estimate


def activation_elements(size: tuple[int, int], layers: Sequence[str]) -> int:
    """Number of activation values VGG19 computes for an (h, w) image up to the deepest of
    `layers` (each conv output, and each pooling output)."""
    h, w = size
    last = deepest(layers)
    total = 0
    channels = 3  # of the map a pooling halves: the conv output before it
    for entry in VGG19_LAYOUT:
        if entry is None:
            h, w = h // 2, w // 2
            total += h * w * channels
            continue
        name, channels = entry
        total += h * w * channels
        if name == last:
            break
    return total


# Winograd's layers (winograd.py) add two things to a run's peak: the kernel transforms each
# keeps (forward and backward, 4x the kernel each, and the kernel they were made from), and while
# one runs, its tiles and products, fitted to bench/memory.py (lite layers, AVX-512 Xeon: 27-33
# bytes per value of the largest map such a layer reads or writes, here with a little margin).
WINOGRAD_TRANSIENT_BYTES = 36


def winograd_bytes(size: tuple[int, int] | None, layers: Sequence[str],
                   precision: str = "float32") -> int:
    """Bytes Winograd's layers add to a run on an (h, w) image (or tiles of that size): kept
    kernel transforms and the largest layer's transient tiles; 0 where Winograd is not used.
    `size` None: as for an image large enough for every such layer, transients aside."""
    from .frozen_conv import use_transposed
    from .winograd import ALPHA, suits, suits_channels

    if not use_transposed(precision):
        return 0
    kept, largest = 0.0, 0
    for _, h, w, cin, cout in conv_maps(size or (2**16, 2**16), deepest(layers)):
        if suits_channels(cin, cout) and suits((1, h, w, cin)):
            kept += (1 + 2 * ALPHA * ALPHA / 9) * 9 * cin * cout * 4
            largest = max(largest, h * w * max(cin, cout))
    return int(kept + (WINOGRAD_TRANSIENT_BYTES * largest if size else 0))


def base_bytes(size: tuple[int, int] | None, layers: Sequence[str],
               precision: str = "float32") -> int:
    """What a run on an (h, w) image (or tiles of that size) holds beside its activations and
    optimiser: TensorFlow, the weights, and what Winograd's layers add."""
    return BASE_BYTES + winograd_bytes(size, layers, precision)


def estimate_bytes(size: tuple[int, int], layers: Sequence[str], precision: str = "float32",
                   optimiser: str = "lbfgs") -> int:
    """Estimated peak memory of a run on an (h, w) image using `layers`."""
    pixels = size[0] * size[1] * 3
    per_activation = BYTES_PER_ACTIVATION[onednn_enabled()][precision] * (
        FORWARD_SHARE if optimiser == "forward" else 1.0)
    return int(base_bytes(size, layers, precision)
               + per_activation * activation_elements(size, layers)
               + IMAGE_BYTES[optimiser] * pixels)


def resident_bytes() -> int:
    """This process's resident memory now (TensorFlow and the weights, once loaded)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _cgroup_free(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """A cgroup's limit less what it uses, not counting reclaimable page cache (v2, then v1)."""
    for limit_file, usage_file, stat_file, cache_key in (
            ("memory.max", "memory.current", "memory.stat", "inactive_file"),
            ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes",
             "memory/memory.stat", "total_inactive_file")):
        try:
            text = (root / limit_file).read_text().strip()
            used = int((root / usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if not text.isdigit() or int(text) >= 2**60:
            continue
        cache = 0
        try:
            for line in (root / stat_file).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == cache_key:
                    cache = int(value)
        except (OSError, ValueError):
            pass
        return int(text) - max(0, used - cache)
    return None


def available_bytes() -> int | None:
    """Memory this process may still use: the smaller of MemAvailable and a cgroup's room."""
    candidates = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                candidates.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    room = _cgroup_free()
    if room is not None:
        candidates.append(room)
    if not candidates and hasattr(os, "sysconf"):
        try:
            candidates.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError):
            pass
    return min(candidates) if candidates else None


def gpu_available_bytes(run=None) -> int | None:
    """Memory the GPU TensorFlow uses first may still give this process: the device's free
    memory (nvidia-smi, which names GPUs as CUDA_VISIBLE_DEVICES does) plus what TensorFlow
    already holds there. None when it cannot be told (no nvidia-smi, another vendor)."""
    import subprocess

    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip() or "0"
    command = ["nvidia-smi", "--query-gpu=memory.free", "--format=csv,noheader,nounits",
               "-i", visible]
    try:
        out = (run or subprocess.run)(command, capture_output=True, text=True, timeout=20)
        if out.returncode != 0:
            return None
        free = int(float(out.stdout.strip().splitlines()[0])) * 2**20  # MiB
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
    held = 0
    try:
        import tensorflow as tf

        held = int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
    except Exception:  # noqa: BLE001 - TensorFlow without this GPU's allocator: none held
        pass
    return free + held


def largest_fitting(size: tuple[int, int], layers: Sequence[str], precision: str,
                    budget: int, optimiser: str = "lbfgs") -> tuple[int, int]:
    """The largest (h, w) with the aspect of `size` whose estimate fits in `budget` bytes."""
    h, w = size
    lo, hi = 0.0, 1.0
    for _ in range(30):
        mid = (lo + hi) / 2
        trial = (max(1, int(h * mid)), max(1, int(w * mid)))
        if estimate_bytes(trial, layers, precision, optimiser) <= budget:
            lo = mid
        else:
            hi = mid
    return max(1, int(h * lo)), max(1, int(w * lo))


def check_fits(size: tuple[int, int], layers: Sequence[str], precision: str = "float32",
               optimiser: str = "lbfgs", available: int | None = None,
               resident: int | None = None, what: str = "", extra: int = 0,
               shown: tuple[int, int] | None = None) -> None:
    """Raise StyleflowError when a run on an (h, w) image would need more memory than is
    available, naming the need, what is available and the largest size that fits.

    The estimate's BASE_BYTES (TensorFlow, the weights) is largely resident already when this
    runs: what this process holds (`resident`) counts toward it, so only the rest is asked for.
    Only the host's memory is checked: with a GPU, TensorFlow's own out-of-memory error is
    turned into a message by the CLIs instead. `extra` bytes are needed besides (e.g. a tiled
    image held whole); the message then names the image as `shown` (h, w) and suggests no
    size, as the tile is not the image.
    """
    available = available_bytes() if available is None else available
    if available is None:
        return
    resident = resident_bytes() if resident is None else resident
    base_left = max(0, BASE_BYTES - resident)
    need = estimate_bytes(size, layers, precision, optimiser) - BASE_BYTES + base_left + extra
    if need <= available:
        return
    if extra:
        h, w = shown or size
        raise StyleflowError(
            f"{what + ': ' if what else ''}a {w}x{h} image needs about {need / 2**30:.1f} GB "
            f"of memory but {available / 2**30:.1f} GB is available; use a smaller "
            f"{'--style-scales' if optimiser == 'forward' else '--width/--height'}")
    smallest = estimate_bytes((16, 16), layers, precision, optimiser) - BASE_BYTES + base_left
    if smallest > available:
        raise StyleflowError(
            f"only {available / 2**30:.2f} GB of memory is available, not enough for "
            f"TensorFlow and the network (about {smallest / 2**30:.2f} GB); close other "
            "programs or use a machine with more memory")
    h, w = largest_fitting(size, layers, precision, available - base_left + BASE_BYTES,
                           optimiser)
    hint = "" if precision == "bfloat16" else ", or --precision bfloat16"
    raise StyleflowError(
        f"{what + ': ' if what else ''}a {size[1]}x{size[0]} image needs about "
        f"{need / 2**30:.1f} GB of memory with these "
        f"layers but {available / 2**30:.1f} GB is available; use at most about {w}x{h} "
        f"({'--style-scales' if optimiser == 'forward' else '--width/--height'}){hint}")
