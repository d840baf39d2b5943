"""`styleflow serve --engine local`: each worker is a child process of the server holding one
Stylizer, which runs the worker's jobs one after another (run.Runner, the body the Ray engine's
actors run too) and sends their progress events back through a pipe.

Why a process and not a thread of the server: TensorFlow keeps state for every image size it
meets that nothing can free (batch/processes.py), so a worker process that has grown by more
than `RECYCLE_GROWTH` over what it held after its first job is replaced by a fresh one between
two jobs (its network loaded again: a few seconds). docs/web.md gives the measurements.

The child ignores Ctrl-C (a terminal sends it to the whole process group; the server stops its
workers itself) and exits at once if the server dies, so no worker outlives its server.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

from ..batch.processes import (RECYCLE_GROWTH, Growth, discard, ended_code, leave, pipe,
                               prepare_tensorflow, resident_bytes, spawn_worker,
                               worker_signals)
from .job import Job

# How often a worker thread looks at its job's pipe and cancel flag (seconds).
POLL_SECONDS = 0.1


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
        with self._lock:  # known to close() before its process loads, which takes seconds
            self._made.append(worker)
        worker.start()
        return worker

    def stop_loading(self) -> None:
        """The server is stopping: kill the worker processes still loading the network at
        once, rather than waiting seconds for them to load and then asking them to leave."""
        with self._lock:
            made = list(self._made)
        for worker in made:
            worker.stop_loading()

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
        self.log = log
        self.growth = Growth(recycle_growth, f"styleflow serve: worker {number}")
        self.process = self.conn = None
        self._cancels = None  # the pipe that carries cancels to the process (_start)
        self._closed = False
        self._loading = None  # the process while it loads the network (_start)
        self._retiring: str | None = None  # why the process is to be replaced after its job
        # Starting, replacing and ending the process happen in the worker's thread and, for
        # the end, in the server's: one at a time.
        self._lock = threading.RLock()

    def start(self) -> None:
        """Start the first worker process and wait until it has loaded the network (unless
        the server is already stopping)."""
        with self._lock:
            if not self._closed:
                self._start(first=True)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def _start(self, first: bool = False) -> None:
        parent, child = pipe()
        # Cancels travel on a pipe of their own, which the process polls at every evaluation
        # while its main pipe is busy with the job's events: plain file descriptors, no shared
        # lock that a process dying at the wrong moment could leave held.
        cancels_read, cancels_write = pipe(duplex=False)
        process = spawn_worker(worker_main, (child, cancels_read, self.options, self.threads),
                               f"styleflow-serve-worker-{self.number}")
        child.close()
        cancels_read.close()
        self.process, self.conn, self._cancels = process, parent, cancels_write
        self.growth.reset()
        self._loading = process
        try:
            _, broken, notes = self.conn.recv()  # ("ready", ...) once the network is loaded
        except (EOFError, OSError):
            if self._closed:  # killed by close(): the server is stopping, nothing failed
                return
            broken, notes = (f"the worker process ended while loading the network (exit code "
                             f"{ended_code(process)})"), []
        finally:
            self._loading = None
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
            # This job's process and pipes, whatever close() (the server stopping) does to
            # the attributes meanwhile: their use then fails as a closed pipe does.
            process, conn, cancels = self.process, self.conn, self._cancels
        ended = told = False
        try:
            conn.send((job.task, str(job.folder)))
            while True:
                if job.cancel_requested.is_set() and not told:
                    cancels.send(job.id)
                    told = True
                if not conn.poll(POLL_SECONDS):
                    if not process.is_alive() and not conn.poll():
                        raise EOFError
                    continue
                event = conn.recv()
                if event[0] == "memory":
                    self._retiring = self.growth.due(event[1])
                    continue
                ended = event[0] == "end"
                yield event
                if ended:
                    return
        except (EOFError, OSError, ValueError):  # ValueError: a pipe or process closed
            with self._lock:
                code = "unknown"
                if self.process is process:
                    code = ended_code(process)
                    self._discard()
            yield ("end", "failed", f"the worker process ended during this job (exit code "
                                    f"{code}); a new one runs the next job", False)
        finally:
            if ended and self._retiring:
                self._replace()

    def _replace(self) -> None:
        with self._lock:
            said, self._retiring = self._retiring, None
            if self._closed:
                return
            self.log(said)
            self._leave()
            self._start()

    def _leave(self) -> None:
        """Ask the worker process to leave; kill it if it does not within LEAVE_SECONDS."""
        if self.process is None:
            return
        leave(self.process, self.conn)
        self._discard()

    def _discard(self) -> None:
        discard(self.process, self.conn, self._cancels)
        self.process = self.conn = self._cancels = None

    def stop_loading(self) -> None:
        """The server is stopping: no new process, and one still loading the network is
        killed (it has nothing to keep; asking it to leave would wait for the load first)."""
        self._closed = True
        loading = self._loading
        if loading is not None:
            with contextlib.suppress(OSError, ValueError):
                loading.kill()

    def close(self) -> None:
        """End the worker process (the server is stopping; no job is running)."""
        self.stop_loading()
        with self._lock:
            self._leave()


class _Cancels:
    """The worker process's view of the cancels pipe, as run.Runner's `stop`: set once the
    server has sent the id of the job it runs (a cancel for a job that has already ended
    never stops the next one)."""

    def __init__(self, conn):
        self.conn, self.job, self.sent = conn, None, set()

    def is_set(self) -> bool:
        while self.conn.poll():
            self.sent.add(self.conn.recv())
        return self.job in self.sent


def worker_main(conn, cancels, stylizer_options: dict, threads: int | None) -> None:
    """The worker process: load the network, then run each (task, folder) the server sends
    until it sends None, sending back each job's events and, before its end, the memory held."""
    worker_signals()
    from .run import Runner

    prepare_tensorflow(threads)
    notes: list[str] = []
    runner = Runner(stylizer_options, notes.append)
    conn.send(("ready", runner.broken, notes))
    stop = _Cancels(cancels)
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        task, folder = message
        stop.job = task.id
        for event in runner.run(task, Path(folder), stop):
            if event[0] == "end":
                conn.send(("memory", resident_bytes()))
            conn.send(event)

