"""`styleflow serve --engine local`: each worker is a child process of the server holding one
Stylizer, which runs the worker's jobs one after another (run.Runner, the body the Ray engine's
actors run too) and sends their progress events back through a pipe.

Why a process and not a thread of the server: TensorFlow keeps state for every image size it
meets that nothing can free — XLA's compiled programs (its compilation cache never evicts;
Winograd's transforms are compiled per map size) and oneDNN's primitives in TensorFlow's
per-thread caches — about 2-4 MB per new size with the lite layers. A server seeing many sizes
would grow without end however bounded the library's own caches are. So, as gunicorn's
`max_requests` and Celery's `max_tasks_per_child` do for the same reason, a worker process
that has grown by more than `RECYCLE_GROWTH` over what it held after its first job is replaced
by a fresh one between two jobs (its network loaded again: a few seconds). docs/web.md gives
the measurements.

The child ignores Ctrl-C (a terminal sends it to the whole process group; the server stops its
workers itself) and exits at once if the server dies, so no worker outlives its server.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from pathlib import Path

from .job import Job

# A worker process is replaced once its resident memory exceeds what it held after its first
# job by this fraction (about what a few tens of new image sizes add).
RECYCLE_GROWTH = 0.2
# How often a worker thread looks at its job's pipe and cancel flag (seconds).
POLL_SECONDS = 0.1
# Seconds a worker process is given to leave when asked, before it is killed.
LEAVE_SECONDS = 10


class LocalEngine:
    """`workers` worker processes, each with a Stylizer made with `stylizer_options`, on
    TensorFlow threads sharing the machine's cores (queue.py says what an engine is). A worker
    process is replaced between jobs once it has grown by more than `recycle_growth` (a
    fraction; None never replaces it)."""

    def __init__(self, stylizer_options: dict, workers: int = 1,
                 recycle_growth: float | None = RECYCLE_GROWTH):
        self.stylizer_options = dict(stylizer_options)
        self.workers = int(workers)
        self.recycle_growth = recycle_growth
        self._made: list[ProcessWorker] = []
        self._lock = threading.Lock()

    def open(self, log):
        threads = None if self.workers == 1 else max(1, (os.cpu_count() or 1) // self.workers)
        return [lambda number=number: self._make(number, threads, log)
                for number in range(1, self.workers + 1)]

    def _make(self, number: int, threads: int | None, log) -> "ProcessWorker":
        worker = ProcessWorker(number, self.stylizer_options, threads, log, self.recycle_growth)
        with self._lock:
            self._made.append(worker)
        return worker

    def close(self) -> None:
        with self._lock:
            made = list(self._made)
        for worker in made:
            worker.close()


class ProcessWorker:
    """A worker thread's side of one worker process: starts it, hands it jobs, replaces it when
    it has grown or died."""

    def __init__(self, number: int, stylizer_options: dict, threads: int | None, log,
                 recycle_growth: float | None):
        self.number, self.options, self.threads = number, stylizer_options, threads
        self.log, self.recycle_growth = log, recycle_growth
        self.process = self.conn = None
        self.first_memory = None  # bytes held after the process's first job
        self._context = multiprocessing.get_context("spawn")  # no TensorFlow state forked
        self._stop = self._context.Event()
        self._closed = self._retiring = False
        self._said = ""
        # Starting, replacing and ending the process happen in the worker's thread and, for
        # the end, in the server's: one at a time.
        self._lock = threading.RLock()
        with self._lock:
            self._start(first=True)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def _start(self, first: bool = False) -> None:
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=worker_main, args=(child, self._stop, self.options, self.threads),
            name=f"styleflow-serve-worker-{self.number}", daemon=True)
        # Started with Ctrl-C blocked (the mask is inherited), so a Ctrl-C at the terminal
        # cannot interrupt the child before it ignores it.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        child.close()
        self.process, self.conn, self.first_memory = process, parent, None
        try:
            _, broken, notes = self.conn.recv()  # ("ready", ...) once the network is loaded
        except (EOFError, OSError):
            broken, notes = (f"the worker process ended while loading the network (exit code "
                             f"{_exit_code(process)})"), []
        if first:  # a replacement's notes (the weights fallback) were said the first time
            for note in notes:
                self.log(f"styleflow serve: {note}")
        if broken:
            self.log(f"styleflow serve: error: {broken}")

    def run(self, job: Job):
        """Hand `job` to the worker process; yield its events (run.py) until its end."""
        with self._lock:
            if self._closed:
                yield ("end", "failed", "the server is stopping", False)
                return
            if self.process is None or not self.process.is_alive():
                self._discard()
                self._start()
        self._stop.clear()
        ended = False
        try:
            self.conn.send((job.task, str(job.folder)))
            while True:
                if job.cancel_requested.is_set():
                    self._stop.set()
                if not self.conn.poll(POLL_SECONDS):
                    if not self.process.is_alive() and not self.conn.poll():
                        raise EOFError
                    continue
                event = self.conn.recv()
                if event[0] == "memory":
                    self._grown(event[1])
                    continue
                ended = event[0] == "end"
                yield event
                if ended:
                    return
        except (EOFError, OSError):
            with self._lock:
                self.process.join(LEAVE_SECONDS)
                code = _exit_code(self.process)
                self._discard()
            yield ("end", "failed", f"the worker process ended during this job (exit code "
                                    f"{code}); a new one runs the next job", False)
        finally:
            if ended and self._retiring:
                self._replace()

    def _grown(self, memory: int | None) -> None:
        """Note the process's memory after a job; mark it for replacement if it has grown."""
        if memory is None or self.recycle_growth is None:
            return
        if self.first_memory is None:
            self.first_memory = memory
        elif memory > self.first_memory * (1 + self.recycle_growth):
            self._retiring = True
            self._said = (f"styleflow serve: worker {self.number} replaced after it grew to "
                          f"{memory / 2 ** 20:.0f} MB ({memory / self.first_memory - 1:.0%} "
                          f"more than after its first job)")

    def _replace(self) -> None:
        with self._lock:
            self._retiring = False
            if self._closed:
                return
            self.log(self._said)
            self._leave()
            self._start()

    def _leave(self) -> None:
        """Ask the worker process to leave; kill it if it does not within LEAVE_SECONDS."""
        if self.process is None:
            return
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.process.join(LEAVE_SECONDS)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self._discard()

    def _discard(self) -> None:
        if self.conn is not None:
            self.conn.close()
        if self.process is not None:
            if self.process.is_alive():
                self.process.kill()
                self.process.join()
            self.process.close()
        self.process = self.conn = None

    def close(self) -> None:
        """End the worker process (the server is stopping; no job is running)."""
        with self._lock:
            self._closed = True
            self._leave()


def _exit_code(process) -> str:
    code = process.exitcode
    if code is None:
        return "unknown"
    return f"{code} (signal {signal.Signals(-code).name})" if code < 0 else str(code)


def _resident_bytes() -> int | None:
    """This process's resident memory (Linux), else its peak (other systems), else None."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024
    except (ImportError, OSError):
        return None


def _exit_with_parent() -> None:
    """Leave at once when the server's process is gone (killed, say): no orphan keeps
    computing."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch():
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="styleflow-serve-parent").start()


def worker_main(conn, stop, stylizer_options: dict, threads: int | None) -> None:
    """The worker process: load the network, then run each (task, folder) the server sends
    until it sends None, sending back each job's events and, before its end, the memory held."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    _exit_with_parent()
    from ..batch.ray_engine import prepare_tensorflow
    from .run import Runner

    prepare_tensorflow(threads)
    notes: list[str] = []
    runner = Runner(stylizer_options, notes.append)
    conn.send(("ready", runner.broken, notes))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        task, folder = message
        for event in runner.run(task, Path(folder), stop):
            if event[0] == "end":
                conn.send(("memory", _resident_bytes()))
            conn.send(event)

