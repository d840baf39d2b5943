"""Timing shared by the benchmarks, free of TensorFlow so that child processes running
another framework (bench/backends.py) can use it too."""

from __future__ import annotations

import statistics
import time


def median_seconds(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall time of `fn()` over `repeats` runs after `warmup` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)
