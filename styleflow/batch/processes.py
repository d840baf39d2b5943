"""Worker processes that do not grow without end, shared by `styleflow batch` (its local engine
and Ray actors) and `styleflow serve` (its worker processes and Ray actors).

TensorFlow keeps state for every image size it meets that nothing can free from Python — XLA's
compiled programs (its compilation cache never evicts) and oneDNN's primitives in TensorFlow's
per-thread caches (1024 entries each, a constant) — a few MB to tens of MB per new size. A
process that sees many sizes grows however bounded the library's own caches are. So, as
gunicorn's `max_requests` and Celery's `max_tasks_per_child` do for the same reason, a worker
process that has grown by more than `RECYCLE_GROWTH` over what it held after its first job is
replaced between two jobs (`Growth`). docs/performance.md gives the measurements.

A worker process started here (`spawn_worker`) ignores Ctrl-C, which a terminal sends to the
whole process group: the process that started it stops it itself. It exits at once when that
process dies (`worker_signals`), so no worker outlives what started it.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading

# A worker's process is replaced once its resident memory exceeds what it held after its first
# job by this fraction (about what ten new image sizes add at a few hundred pixels).
RECYCLE_GROWTH = 0.15
# Seconds a worker process is given to leave when asked, before it is killed.
LEAVE_SECONDS = 10


class Growth:
    """Whether a worker's process has grown enough to be replaced: more than `fraction` over
    what it held after its first job (None: never; negative: after every job but the first).
    `who` names the worker in the line saying so ('styleflow serve: worker 2'), `unit` what
    it runs ('job', 'pair')."""

    def __init__(self, fraction: float | None, who: str, unit: str = "job"):
        self.fraction, self.who, self.unit = fraction, who, unit
        self.first: int | None = None

    def reset(self) -> None:
        """A new process: its first job sets the reference again."""
        self.first = None

    def due(self, memory: int | None) -> str | None:
        """The line saying why the process is replaced, after a job that left it holding
        `memory` bytes (None: unknown), or None if it stays."""
        if memory is None or self.fraction is None:
            return None
        if self.first is None:
            self.first = memory
            return None
        if memory <= self.first * (1 + self.fraction):
            return None
        return (f"{self.who} replaced after it grew to {memory / 2 ** 20:.0f} MB "
                f"({memory / self.first - 1:.0%} more than after its first {self.unit})")


def resident_bytes() -> int | None:
    """This process's resident memory, measured as the memory planner measures it (None where
    the system does not say)."""
    from ..plan.host import resident_bytes as measured

    now = measured()
    if now:
        return now
    try:  # not Linux: the peak, which grows as the resident memory does
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024
    except (ImportError, OSError):
        return None


def spawn_worker(target, args: tuple, name: str):
    """A started worker process running `target(*args)`: spawned (no TensorFlow state forked),
    a daemon, and started with Ctrl-C blocked (the mask is inherited), so a Ctrl-C at the
    terminal cannot interrupt it before `target` calls `worker_signals`."""
    process = multiprocessing.get_context("spawn").Process(target=target, args=args, name=name,
                                                           daemon=True)
    if os.name == "posix":
        # Starting a spawned process starts multiprocessing's resource tracker the first time,
        # which unblocks Ctrl-C afterwards (SIG_UNBLOCK, not the mask it found): started now,
        # before the mask below, so the worker is not born with Ctrl-C open (a Ctrl-C in a
        # server's first second then printed the worker's traceback).
        from multiprocessing import resource_tracker

        resource_tracker.ensure_running()
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        process.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    return process


def pipe(duplex: bool = True):
    """A pipe between a worker process and the process that starts it (duplex: both ways;
    else (reading end, writing end))."""
    return multiprocessing.get_context("spawn").Pipe(duplex)


def worker_signals() -> None:
    """In a worker process, first thing: ignore Ctrl-C (then unblock it) and leave at once
    when the parent process is gone (killed, say): no orphan keeps computing."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch():
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="styleflow-parent-watch").start()


def leave(process, conn) -> None:
    """Ask a worker process to leave (None on its pipe `conn`: it ends between two jobs) and
    wait for it; kill it if it has not left within LEAVE_SECONDS."""
    try:
        conn.send(None)
    except (OSError, ValueError):  # its pipe already broken or closed
        pass
    process.join(LEAVE_SECONDS)
    if process.is_alive():
        process.kill()
        process.join()


def ended_code(process) -> str:
    """The exit code of a worker process whose pipe says it has ended (`exit_code`'s form):
    reaped first, waiting up to LEAVE_SECONDS, as the code is not known until then."""
    process.join(LEAVE_SECONDS)
    return exit_code(process)


def discard(process, *conns) -> None:
    """Close a worker's pipes (None ones skipped) and end its process (None: none): killed
    if still running, reaped, and its resources released."""
    for conn in conns:
        if conn is not None:
            conn.close()
    if process is not None:
        if process.is_alive():
            process.kill()
        process.join()
        process.close()


def exit_code(process) -> str:
    """A process's exit code as the one-line messages give it: '-9 (signal SIGKILL)'."""
    code = process.exitcode
    if code is None:
        return "unknown"
    return f"{code} (signal {signal.Signals(-code).name})" if code < 0 else str(code)


def prepare_tensorflow(threads: int | None) -> None:
    """TensorFlow set up in a worker's process (a child process or a Ray actor): on `threads`
    threads when given (a share of the machine: by default it would use every core, and
    workers sharing a node would fight over them), with memory growth on GPUs so several
    processes can share one."""
    from .. import api  # noqa: F401 - imports TensorFlow without its start-up log

    import tensorflow as tf

    if threads:  # before TensorFlow's runtime starts: it reads these once
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)  # as runtime.one_op_at_a_time
    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)
