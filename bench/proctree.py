"""Resident memory of a process and the processes below it (its worker processes), from /proc
(Linux): what a command that runs its work in child processes holds in all."""

from __future__ import annotations

from pathlib import Path


def rss_mb(pid: int) -> float:
    """Resident set size of process `pid`, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc (Linux only)")


def descendants(pid: int) -> list[int]:
    """The processes below `pid`."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += [int(child), *descendants(int(child))]
    return found


def memory_mb(pid: int) -> tuple[float, float]:
    """(process `pid`'s RSS, the processes' below it together), in MB."""
    below = 0.0
    for child in descendants(pid):
        try:
            below += rss_mb(child)
        except (OSError, RuntimeError):  # a worker process being replaced
            pass
    return rss_mb(pid), below
