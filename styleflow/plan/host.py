"""What memory this process holds and may still use: on the host (its resident memory, what the
kernel and a cgroup leave it) and on the GPU TensorFlow uses first."""

from __future__ import annotations

import os
from pathlib import Path


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
