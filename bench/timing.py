"""Timing shared by the benchmarks, free of TensorFlow so that child processes running
another framework (bench/backends.py) can use it too, and the fresh child processes that
benchmarks needing a setting read once at start-up (oneDNN, the Keras backend) measure in."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def run_child(code: str, **env: str) -> dict | str:
    """Run Python `code` in a fresh process that imports styleflow and the benchmarks'
    modules, with `env` added to this one's environment (and TensorFlow's logging quiet): the
    JSON object its last output line prints, or the last line of its error output when it
    failed."""
    paths = [str(BENCH.parent), str(BENCH), os.environ.get("PYTHONPATH", "")]
    full = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
                PYTHONPATH=os.pathsep.join(p for p in paths if p), **env)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=full)
    if proc.returncode != 0:
        return (proc.stderr.strip().splitlines() or ["failed"])[-1]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median_seconds(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall time of `fn()` over `repeats` runs after `warmup` untimed runs."""
    return interleaved_medians({"fn": fn}, repeats, warmup)["fn"]


def interleaved_medians(fns: dict, repeats: int, warmup: int = 1) -> dict:
    """{name: median wall time} of each `fns[name]()`, timed in turns (`interleaved_times`):
    on a shared machine whose speed drifts, each side meets the same drift, so their ratio
    holds where back-to-back medians would not."""
    return {name: statistics.median(t)
            for name, t in interleaved_times(fns, repeats, warmup).items()}


def interleaved_times(fns: dict, repeats: int, warmup: int = 1, settle: float = 0.0,
                      timed_by_callee: bool = False) -> dict:
    """{name: [seconds of each round]} of each `fns[name]()`, one call of each per round,
    `repeats` rounds after `warmup` untimed ones. Each call waits `settle` seconds first (for
    the threads of the call before it to stop spinning). With `timed_by_callee`, each call
    returns its own seconds (a worker process timing itself) instead of being timed here."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            time.sleep(settle)
            began = time.perf_counter()
            seconds = fn()
            times[name].append(seconds if timed_by_callee else time.perf_counter() - began)
    return times


def ratio_spread(numerators: list, denominators: list) -> tuple[float, float]:
    """The lower and upper quartiles of the round-by-round ratios numerators[i] /
    denominators[i] (both timed in the same rounds): how far the ratio of the medians could
    move on this machine. NaN for no rounds."""
    ratios = sorted(n / d for n, d in zip(numerators, denominators))
    if len(ratios) < 2:
        return (ratios[0], ratios[0]) if ratios else (float("nan"), float("nan"))
    quartiles = statistics.quantiles(ratios, n=4, method="inclusive")
    return quartiles[0], quartiles[2]


def parse_size(text: str) -> tuple[int, int]:
    """(h, w) of a 'WxH' size such as 400x300 (the benchmarks' --sizes and --size)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"a size is WxH, e.g. 400x300, not {text!r}") from None
    return h, w
