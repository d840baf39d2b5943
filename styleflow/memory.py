"""How much memory a run needs, and refusing sizes that cannot fit before allocating anything
(a clear message instead of the kernel's OOM killer)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from .errors import StyleflowError
from .network import VGG19_LAYOUT, deepest

# Fitted to bench/memory.py's peak RSS (one L-BFGS run, full layers, CPU): the forward
# activations are kept for the backward pass and the backward pass holds about as much again,
# plus TensorFlow's own footprint.
ACTIVATION_COPIES = {"float32": 3.0, "bfloat16": 3.0}
BASE_BYTES = 900 * 2**20


def activation_elements(size: tuple[int, int], layers: Sequence[str]) -> int:
    """Number of activation values VGG19 computes for an (h, w) image up to the deepest of
    `layers` (each conv output, and each pooling output)."""
    h, w = size
    last = deepest(layers)
    total = 0
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


def estimate_bytes(size: tuple[int, int], layers: Sequence[str],
                   precision: str = "float32") -> int:
    """Estimated peak memory of a run on an (h, w) image using `layers`."""
    element = 2 if precision == "bfloat16" else 4
    # Losses, Gram matrices and the gradient stay float32 whatever the network computes in.
    per_value = ACTIVATION_COPIES.get(precision, 3.0) * element
    image_vectors = 12 * size[0] * size[1] * 3 * 8  # scipy's float64 image copies and L-BFGS memory
    return int(BASE_BYTES + per_value * activation_elements(size, layers) + image_vectors)


def available_bytes() -> int | None:
    """Memory this process may still use: the smaller of MemAvailable and a cgroup limit."""
    candidates = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                candidates.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:
            used = 0
            for usage in ("/sys/fs/cgroup/memory.current",
                          "/sys/fs/cgroup/memory/memory.usage_in_bytes"):
                try:
                    used = int(Path(usage).read_text().strip())
                    break
                except (OSError, ValueError):
                    continue
            candidates.append(int(text) - used)
    if not candidates and hasattr(os, "sysconf"):
        try:
            candidates.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError):
            pass
    return min(candidates) if candidates else None


def largest_fitting(size: tuple[int, int], layers: Sequence[str], precision: str,
                    budget: int) -> tuple[int, int]:
    """The largest (h, w) with the aspect of `size` whose estimate fits in `budget` bytes."""
    h, w = size
    lo, hi = 0.0, 1.0
    for _ in range(30):
        mid = (lo + hi) / 2
        trial = (max(1, int(h * mid)), max(1, int(w * mid)))
        if estimate_bytes(trial, layers, precision) <= budget:
            lo = mid
        else:
            hi = mid
    return max(1, int(h * lo)), max(1, int(w * lo))


def check_fits(size: tuple[int, int], layers: Sequence[str], precision: str = "float32",
               available: int | None = None) -> None:
    """Raise StyleflowError when a run on an (h, w) image would need more memory than is
    available, naming the estimate, what is available and the largest size that fits.

    Only the host's memory is checked: with a GPU, TensorFlow's own out-of-memory error is
    turned into a message by the CLIs instead.
    """
    available = available_bytes() if available is None else available
    if available is None:
        return
    need = estimate_bytes(size, layers, precision)
    if need <= available:
        return
    h, w = largest_fitting(size, layers, precision, available)
    hint = "" if precision == "bfloat16" else ", or --precision bfloat16"
    raise StyleflowError(
        f"a {size[1]}x{size[0]} image needs about {need / 2**30:.1f} GB of memory with these "
        f"layers but {available / 2**30:.1f} GB is available; use at most about {w}x{h} "
        f"(--width/--height){hint}")
