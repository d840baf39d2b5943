"""The queue of `styleflow serve`: every job kept in OUT/jobs, first come first served, and
the worker threads that take them one at a time and run them on an engine.

An engine is what runs a job: `local_engine.LocalEngine` (a worker process with a Stylizer per
worker thread) or `ray_engine.RayEngine` (a Ray actor per worker thread). It has two methods:

- `open(log)` -> a list of worker makers, one per worker thread (called in a thread of its
  own: starting Ray or loading networks may take a while, and the page answers meanwhile);
- `close()` -> ends what `open` started, once the worker threads are done;

and each maker, called in its worker's thread, gives a worker whose `run(job)` yields the
job's progress events (run.py), honouring `job.cancel_requested`. The queue applies the
events to the Job, whichever engine sent them, so the page sees the same thing either way.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import secrets
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

from ..errors import StyleflowError, os_reason
from . import form
from .form import Limits, Upload
from .job import ID, STOPPED, Job, StorageError, one_line, storage_error, stored_name


LOCK_NAME = ".serve.lock"


def claim(folder: Path):
    """Make `folder`/jobs if needed and hold `folder` for this server: a lock file (kept
    open; the lock goes with the process) that a second server on the same folder finds
    taken, and a write that shows the folder takes files. The open lock file, to be kept
    while the server runs; a one-line StyleflowError when the folder cannot be used."""
    folder = Path(folder)
    try:
        (folder / "jobs").mkdir(parents=True, exist_ok=True)
        handle = open(folder / LOCK_NAME, "a+b", buffering=0)  # nothing held back to close
    except OSError as exc:
        raise StyleflowError(f"--out '{folder}': cannot use the folder "
                             f"({os_reason(exc)})") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read(20).decode(errors="replace").strip()
            raise StyleflowError(
                f"--out '{folder}': another styleflow serve"
                f"{f' (process {holder})' if holder.isdigit() else ''} keeps its jobs there; "
                f"stop it or give another --out") from None
        except OSError as exc:  # a file system without locks
            raise StyleflowError(f"--out '{folder}': cannot lock the folder "
                                 f"({os_reason(exc)})") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n".encode())
        os.fsync(handle.fileno())  # a full disk shows here, not at the first upload
        # A byte in a new file: the lock file's page may be reused, a new one needs space.
        with tempfile.TemporaryFile(dir=folder / "jobs", buffering=0) as probe:
            probe.write(b"\0")
            os.fsync(probe.fileno())
    except OSError as exc:
        handle.close()
        raise StyleflowError(f"--out '{folder}': cannot write there ({os_reason(exc)})") from None
    except BaseException:
        handle.close()
        raise
    return handle


class Broken:
    """A worker that fails every job with one line (its engine could not start)."""

    def __init__(self, error: str):
        self.error = error

    def run(self, job: Job):
        yield ("end", "failed", self.error, False)


class JobQueue:
    """Jobs kept in `folder`/jobs, run one after another by each worker of `engine`. `log`
    receives a line for each job that ends and for notes such as the weights fallback."""

    def __init__(self, folder, engine, *, limits: Limits = Limits(),
                 log: Callable[[str], None] | None = None):
        self.folder = Path(folder)
        self.jobs_folder = self.folder / "jobs"
        self.engine = engine
        self.limits = limits
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._pending: queue.Queue = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._running: dict[int, Job] = {}
        self.stopping = threading.Event()
        # The server is shutting down: event streams end, so it need not wait for them.
        self.closing = threading.Event()
        self.ready = threading.Event()  # set once every worker is made (or failed)
        self._made, self._count = 0, None

    # -- the jobs --------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        if not ID.match(job_id or ""):
            return None
        with self._lock:
            return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        """Every job, newest first."""
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.created, reverse=True)

    def position(self, job: Job) -> int | None:
        """How many queued jobs are ahead of `job` (None unless it is queued)."""
        if job.status != "queued":
            return None
        with self._lock:
            return sum(1 for j in self._jobs.values()
                       if j.status == "queued" and j.created < job.created)

    def state(self, job: Job) -> dict:
        return job.state(self.position(job))

    def load(self) -> None:
        """Read the jobs a previous server left in the folder: finished ones are listed again,
        queued ones queued again (failed where past this server's limits), and one that was
        running when the server stopped is failed (it may have been what stopped it)."""
        if not self.jobs_folder.is_dir():
            return
        found = []
        for path in self.jobs_folder.glob("*/job.json"):
            if not ID.match(path.parent.name):
                continue
            try:
                job = Job.from_record(path.parent, json.loads(path.read_text()))
            except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
                self.log(f"styleflow serve: skipping {path}: {one_line(exc)[:200]}")
                continue
            if job.id != path.parent.name:
                self.log(f"styleflow serve: skipping {path}: its id '{str(job.id)[:40]}' is "
                         "not its folder's name")
                continue
            why = STOPPED if job.status == "running" else None
            past = self._past_limits(job.options) if job.status == "queued" else None
            if past:
                why = f"{past} since it restarted; start it again"
            if why:
                job.status, job.error, job.finished = "failed", why, time.time()
                try:
                    job.save()
                except StyleflowError as exc:  # listed as failed all the same
                    self.log(f"styleflow serve: job {job.id}: {one_line(exc)}")
            found.append(job)
        for job in sorted(found, key=lambda j: j.created):
            self._jobs[job.id] = job
            if job.status == "queued":
                self._pending.put(job)

    def _past_limits(self, options: dict) -> str | None:
        """Why a job's `options` are past this server's limits, else None: a job queued under
        an earlier server's limits, or continued from one, must not run what the form would
        now refuse."""
        for name, limit in (("width", self.limits.max_width),
                            ("iterations", self.limits.max_iterations)):
            value = options.get(name)
            if isinstance(value, int) and value > limit:
                return f"{name} {value} is past this server's limit ({limit})"
        return None

    def create(self, fields: dict, uploads: Sequence[Upload]) -> Job:
        """A new queued job from the page's form (form.read_form). Every upload is read as an
        image here, so a file that is not one is refused at once with the library's one line.
        Raises StyleflowError; leaves no folder behind when it does."""
        method, options, by_role = form.read_form(fields, uploads, self.limits)
        job_id = secrets.token_hex(6)
        folder = self.jobs_folder / job_id
        try:
            inputs, names = form.store(folder, by_role, self.limits)
            job = Job(job_id, folder, method, options, inputs, names)
            try:
                job.save()
            except StyleflowError as exc:
                raise storage_error(exc, folder) from None
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        with self._lock:
            self._jobs[job_id] = job
        self._pending.put(job)
        return job

    def continue_job(self, job: Job) -> Job:
        """A new queued job that goes on from where `job` (failed or cancelled) stopped: its
        kept picture as the start (the 16-bit TIFF where there is one), its remaining
        iterations, the same uploads and options (photo: the photorealistic stage alone, as
        `styleflow photo --stages 1 --init` resumes). Raises StyleflowError where there is
        nothing to go on from, StorageError where the server's disk refuses."""
        with job.lock:
            status, done, total = job.status, job.iteration, job.iterations
        if status not in ("failed", "cancelled"):
            raise StyleflowError(f"job {job.id} is {status}; only a failed or cancelled job "
                                 "can be continued")
        kept = job.picture()
        if (job.folder / "result.tif").is_file() and job.has_result:
            kept = "result.tif"
        if kept is None or done < 1:
            raise StyleflowError(f"job {job.id} kept no picture to continue from; start it "
                                 "again")
        if done >= total:
            raise StyleflowError(f"job {job.id} ran all its {total} iterations")
        options = dict(job.options, iterations=total - done)
        if job.method == "photo":
            options["stages"] = 1
        past = self._past_limits(options)
        if past:
            raise StyleflowError(f"job {job.id}: {past}")
        job_id = secrets.token_hex(6)
        folder = self.jobs_folder / job_id
        inputs = {role: value for role, value in job.inputs.items() if role != "start"}
        names = {role: value for role, value in job.names.items() if role != "start"}
        try:
            folder.mkdir(parents=True)
            for name in [n for value in inputs.values()
                         for n in (value if isinstance(value, list) else [value])]:
                shutil.copyfile(job.folder / name, folder / name)
            shutil.copyfile(job.folder / kept, folder / stored_name("start"))
            inputs["start"], names["start"] = stored_name("start"), f"job {job.id}'s picture"
            new = Job(job_id, folder, job.method, options, inputs, names)
            new.save()
        except OSError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise StorageError(f"the server cannot store this job ({os_reason(exc)})") from None
        except StyleflowError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise storage_error(exc, folder) from None
        with self._lock:
            self._jobs[job_id] = new
        self._pending.put(new)
        self.log(f"styleflow serve: job {job_id} continues job {job.id} from iteration {done}")
        return new

    def cancel(self, job: Job) -> None:
        """Cancel `job`: a queued job at once, a running one at its next evaluation (within
        about a second at the sizes a page asks for); a finished job stays as it is."""
        if job.cancel():
            try:
                job.save()
            except StyleflowError as exc:
                error = storage_error(exc, job.folder)
                self.log(f"styleflow serve: job {job.id} cancelled while queued; its record "
                         f"was not written: {one_line(exc)}")
                raise StorageError(f"{error}: cancelled, but a restarted server would run it "
                                   f"again") from None
            self.log(f"styleflow serve: job {job.id} cancelled while queued")

    # -- the workers -----------------------------------------------------------------------

    def start(self) -> None:
        """Open the engine and start its workers, in the background: the page answers at once
        and jobs wait in the queue until a worker is ready."""
        thread = threading.Thread(target=self._open, daemon=True, name="styleflow-serve-open")
        # Listed before it starts: it lists the worker threads it starts after itself, and
        # stop() takes the first one listed for it.
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _open(self) -> None:
        try:
            makers = self.engine.open(self.log)
        except StyleflowError as exc:
            makers = [self._broken(one_line(exc))]
        except Exception as exc:  # noqa: BLE001 - every job will say so; the server goes on
            makers = [self._broken(one_line(f"cannot start the engine: {type(exc).__name__}: "
                                            f"{exc}")[:500])]
        self._count = len(makers)
        for index, make in enumerate(makers):
            if self.stopping.is_set():
                break
            thread = threading.Thread(target=self._work, args=(index, make), daemon=True,
                                      name=f"styleflow-serve-{index + 1}")
            thread.start()
            with self._lock:
                self._threads.append(thread)

    def _broken(self, error: str):
        self.log(f"styleflow serve: error: {error}")
        return lambda: Broken(error)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the workers: a running job is stopped at its next evaluation and recorded as
        failed (the server, not a person, stopped it); queued jobs stay queued in their
        folders for the next server. Then close the engine."""
        self.closing.set()
        self.stopping.set()
        deadline = time.monotonic() + timeout
        if not self._threads:  # never started
            self.engine.close()
            return
        self._threads[0].join(max(0.0, deadline - time.monotonic()))  # the engine opening
        with self._lock:
            running, threads = list(self._running.values()), self._threads[1:]
        for job in running:
            job.stop_reason = STOPPED
            job.cancel_requested.set()
        for _ in threads:
            self._pending.put(None)
        stop_loading = getattr(self.engine, "stop_loading", None)  # the local engine's
        if stop_loading is not None:
            stop_loading()
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.engine.close()

    def _work(self, index: int, make) -> None:
        try:
            worker = make()
        except StyleflowError as exc:
            worker = self._broken(one_line(exc))()
        except Exception as exc:  # noqa: BLE001 - every job will say so; the server goes on
            worker = self._broken(one_line(f"cannot start a worker: {type(exc).__name__}: "
                                           f"{exc}")[:500])()
        with self._lock:
            self._made += 1
            if self._made == self._count:
                self.ready.set()
        while not self.stopping.is_set():
            job = self._pending.get()
            if job is None or self.stopping.is_set():
                return
            if not job.begin():  # cancelled while it waited
                continue
            with self._lock:
                self._running[index] = job
            try:
                try:
                    job.save()
                except StyleflowError as exc:
                    self._end(job, "failed", str(storage_error(exc, job.folder)))
                    continue
                self._run(worker, job)
            except Exception as exc:  # noqa: BLE001 - a failing job never stops the server
                self._end(job, "failed", one_line(f"internal error: {type(exc).__name__}: "
                                                  f"{exc}")[:500])
            finally:
                with self._lock:
                    self._running.pop(index, None)

    def _run(self, worker, job: Job) -> None:
        """Apply `worker.run(job)`'s events to `job` until its end."""
        for event in worker.run(job):
            if event[0] == "end":
                self._end(job, *event[1:])
                return
            job.apply(event)
        self._end(job, "failed", "internal error: the run ended without saying how")

    def _end(self, job: Job, status: str, error: str | None = None,
             has_result: bool = False) -> None:
        if status == "cancelled" and job.stop_reason:
            status, error = "failed", job.stop_reason + (f"; {error}" if error else "")
        job.finish(status, error, has_result)
        try:
            job.save()
        except StyleflowError as exc:
            self.log(f"styleflow serve: job {job.id}: {one_line(exc)}")
        took = f" in {job.finished - job.started:.1f} s" if job.started else ""
        self.log(f"styleflow serve: job {job.id} {status}{took}"
                 f"{f': {error}' if error else ''}")
