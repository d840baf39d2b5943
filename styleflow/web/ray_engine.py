"""`styleflow serve --engine ray`: each worker thread of the server hands its jobs to one Ray
actor (`ServeActor`), made and placed as `styleflow batch --engine ray` makes its actors
(batch.ray_engine: `connect`, `actor_plan`, `prepare_tensorflow`).

What travels, and why no shared storage is needed:

- to the actor: the job's `Task` and its uploads' bytes (at most --max-upload-mb); the actor
  writes them to a temporary folder of its own and runs the job there (run.Runner, the body
  the local engine runs too);
- back, as a Ray streaming generator (`num_returns="streaming"`): the run's progress events
  as they happen (run.py), previews included as PNG bytes at most every PREVIEW_SECONDS, then
  the result's PNG and TIFF bytes, which the server writes into the job's folder in --out;
- a cancel: `ServeActor.cancel(job_id)`, which the actor can take while it runs a job (a
  threaded actor, two calls at once): it sets the Event the job's `on_evaluation` checks.
  The server's thread polls the stream every POLL_SECONDS and sends the cancel as soon as
  the job's `cancel_requested` is set, so it acts within about a second as on the local
  engine.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path

from ..batch.ray_engine import actor_plan, connect, prepare_tensorflow
from ..io import files
from .job import RESULTS, Job, Task, one_line
from .run import Runner

# How often a worker thread looks at its job's stream and cancel flag.
POLL_SECONDS = 0.1
# A threaded actor: one call runs a job while another can cancel it.
CONCURRENCY = 2


class ServeActor:
    """The actor's body: a Runner (one Stylizer) in its own process, TensorFlow on `threads`
    threads (prepare_tensorflow), and the cancel flags of the job it runs."""

    def __init__(self, stylizer_options: dict, threads: int | None = None):
        prepare_tensorflow(threads)
        self.notes: list[str] = []
        self.runner = Runner(stylizer_options, self.notes.append)
        self._stops: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def ready(self) -> tuple[str | None, list[str]]:
        """(why there is no network, or None; the notes of loading it)."""
        return self.runner.broken, list(self.notes)

    def _stop(self, job_id: str) -> threading.Event:
        with self._lock:
            return self._stops.setdefault(job_id, threading.Event())

    def cancel(self, job_id: str) -> None:
        """Stop job `job_id` at its next evaluation (or before it starts)."""
        self._stop(job_id).set()

    def run(self, task: Task, uploads: dict):
        """Run `task` with `uploads` (file name -> bytes); called with num_returns="streaming",
        so each event reaches the server as it is yielded. A result comes back as
        ("files", {name: bytes}) just before the end event."""
        stop = self._stop(task.id)
        folder = Path(tempfile.mkdtemp(prefix=f"styleflow-serve-{task.id}-"))
        try:
            for name, data in uploads.items():
                (folder / name).write_bytes(data)
            for event in self.runner.run(task, folder, stop):
                if event[0] == "end" and event[3]:
                    yield ("files", {name: (folder / name).read_bytes() for name in RESULTS})
                yield event
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            with self._lock:
                self._stops.pop(task.id, None)


class RayEngine:
    """Workers on Ray actors: one per GPU, else `workers` CPU actors (default one per two
    CPUs), on the cluster at `address` (else RAY_ADDRESS, else a local Ray started here and
    stopped with the server). queue.py says what an engine is."""

    def __init__(self, stylizer_options: dict, workers: int | None = None,
                 address: str | None = None):
        self.stylizer_options = dict(stylizer_options)
        self.workers = workers
        self.address = address
        self.ray = None
        self._started = False
        self._actors: list = []

    def connect(self) -> None:
        """Join the cluster, or start a local Ray. Call it in a thread that lives as long as
        the server (the CLI calls it in the main thread, before it listens): the processes of
        a local Ray die with the thread that started them (Linux's parent-death signal)."""
        if self.ray is None:
            self.ray, self._started = connect(self.address)

    def open(self, log):
        self.connect()
        resources = self.ray.cluster_resources()
        count, options, threads = actor_plan(resources, self.workers, self.workers or 1 << 30)
        log(f"styleflow serve: ray: {count} {'GPU' if 'num_gpus' in options else 'CPU'} "
            f"actor(s)" + (f" of {threads} threads" if threads else "")
            + f" on {int(resources.get('CPU', 0))} CPUs and {int(resources.get('GPU', 0))} GPUs")
        # Restarted by Ray if its process dies (the job it ran fails); a job is never retried,
        # since its events would be sent twice.
        remote = self.ray.remote(ServeActor).options(max_concurrency=CONCURRENCY,
                                                     max_restarts=-1, max_task_retries=0,
                                                     **options)
        self._actors = [remote.remote(self.stylizer_options, threads) for _ in range(count)]
        return [lambda actor=actor: RayWorker(self.ray, actor, log) for actor in self._actors]

    def close(self) -> None:
        if self.ray is None:
            return
        for actor in self._actors:
            self.ray.kill(actor)
        if self._started:
            self.ray.shutdown()


class RayWorker:
    """A worker thread's side of one actor: waits for its network, then streams jobs to it."""

    def __init__(self, ray, actor, log):
        self.ray, self.actor = ray, actor
        broken, notes = ray.get(actor.ready.remote())
        for note in notes:
            log(f"styleflow serve: {note}")
        if broken:
            log(f"styleflow serve: error: {broken}")

    def run(self, job: Job):
        ray = self.ray
        uploads = {name: (job.folder / name).read_bytes() for name in job.task.stored()}
        stream = self.actor.run.options(num_returns="streaming").remote(job.task, uploads)
        told = False
        try:
            while True:
                if job.cancel_requested.is_set() and not told:
                    self.actor.cancel.remote(job.id)
                    told = True
                ready, _ = ray.wait([stream], timeout=POLL_SECONDS)
                if not ready:
                    continue
                try:
                    event = ray.get(next(stream))
                except StopIteration:
                    return
                if event[0] == "files":
                    for name, data in event[1].items():
                        files.write_atomically(job.folder / name,
                                               lambda handle, data=data: handle.write(data))
                    continue
                yield event
        except ray.exceptions.RayActorError as exc:
            yield ("end", "failed", one_line(f"the Ray worker died during this job "
                                             f"({one_line(exc)[:200]})"), False)
        except ray.exceptions.RayError as exc:
            yield ("end", "failed", one_line(exc)[:500], False)
