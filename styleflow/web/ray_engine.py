"""`styleflow serve --engine ray`: each worker thread of the server hands its jobs to one Ray
actor (`ServeActor`), made and placed as `styleflow batch --engine ray` makes its actors
(batch.ray_engine: `connect`, `actor_plan`; batch.processes: `prepare_tensorflow`, `Growth`).

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

from ..batch.processes import RECYCLE_GROWTH, Growth, prepare_tensorflow, resident_bytes
from ..batch.ray_engine import actor_plan, connect
from ..io import files
from .job import RESULTS, Job, Task, one_line
from .run import Runner, amended, keep

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
                if event[0] == "end":
                    yield ("memory", resident_bytes())  # RayWorker replaces a grown actor
                    if event[3]:  # those written (the actor's disk may have kept the PNG alone)
                        yield ("files", {name: (folder / name).read_bytes() for name in RESULTS
                                         if (folder / name).is_file()})
                yield event
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            with self._lock:
                self._stops.pop(task.id, None)


class RayEngine:
    """Workers on Ray actors: one per GPU, else `workers` CPU actors (default one per two
    CPUs), on the cluster at `address` (else RAY_ADDRESS, else a local Ray started here and
    stopped with the server). An actor is replaced between jobs once its process has grown by
    more than `recycle_growth`, as a local worker process is (local_engine.py). queue.py says
    what an engine is."""

    def __init__(self, stylizer_options: dict, workers: int | None = None,
                 address: str | None = None, recycle_growth: float | None = RECYCLE_GROWTH):
        self.stylizer_options = dict(stylizer_options)
        self.workers = workers
        self.address = address
        self.recycle_growth = recycle_growth
        self.ray = None
        self._started = False
        self._actors: list = []
        self._lock = threading.Lock()
        self._remote = self._threads = None
        self.closed = False

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
        self._remote = self.ray.remote(ServeActor).options(max_concurrency=CONCURRENCY,
                                                           max_restarts=-1, max_task_retries=0,
                                                           **options)
        self._threads = threads
        # Made now, so every actor loads its network while the first is awaited.
        actors = [self.new_actor() for _ in range(count)]
        return [lambda number=number, actor=actor: RayWorker(self, number, actor, log)
                for number, actor in enumerate(actors, 1)]

    def new_actor(self):
        """A new actor (its network loading), kept for close(); None once closed."""
        with self._lock:
            if self.closed:
                return None
            actor = self._remote.remote(self.stylizer_options, self._threads)
            self._actors.append(actor)
        return actor

    def retire(self, actor) -> None:
        """End `actor` (it has grown; a new one takes its place)."""
        with self._lock:
            if actor in self._actors:
                self._actors.remove(actor)
        self.ray.kill(actor)

    def close(self) -> None:
        if self.ray is None:
            return
        with self._lock:
            actors, self._actors, self.closed = self._actors, [], True
        for actor in actors:
            self.ray.kill(actor)
        if self._started:
            self.ray.shutdown()


class RayWorker:
    """A worker thread's side of one actor: waits for its network, then streams jobs to it;
    replaces it with a new actor between jobs once it has grown (batch/processes.py, Growth)."""

    def __init__(self, engine: RayEngine, number: int, actor, log):
        self.engine, self.ray, self.log = engine, engine.ray, log
        self.growth = Growth(engine.recycle_growth, f"styleflow serve: worker {number}")
        self._retiring: str | None = None
        self._ready(actor, first=True)

    def _ready(self, actor, first: bool = False) -> None:
        self.actor = actor
        self.growth.reset()
        broken, notes = self.ray.get(actor.ready.remote())
        if first:  # a replacement's notes were said the first time
            for note in notes:
                self.log(f"styleflow serve: {note}")
        if broken:
            self.log(f"styleflow serve: error: {broken}")

    def run(self, job: Job):
        try:
            yield from self._stream(job)
        finally:
            said, self._retiring = self._retiring, None
            if said and not self.engine.closed:
                self.log(said)
                self.engine.retire(self.actor)
                actor = self.engine.new_actor()
                if actor is not None:
                    self._ready(actor)

    def _stream(self, job: Job):
        ray = self.ray
        uploads = {name: (job.folder / name).read_bytes() for name in job.task.stored()}
        stream = self.actor.run.options(num_returns="streaming").remote(job.task, uploads)
        told, written = False, None
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
                if event[0] == "memory":
                    self._retiring = self.growth.due(event[1])
                    continue
                if event[0] == "files":  # written here as a local worker writes them
                    data = event[1]
                    written = keep(job.folder, lambda path: files.write_atomically(
                        path, lambda handle: handle.write(data[path.name]))
                        if path.name in data else None)
                    continue
                if event[0] == "end" and written is not None:
                    event = amended(event, *written)
                yield event
        except ray.exceptions.RayActorError as exc:
            yield ("end", "failed", one_line(f"the Ray worker died during this job "
                                             f"({one_line(exc)[:200]})"), False)
        except ray.exceptions.RayError as exc:
            yield ("end", "failed", one_line(exc)[:500], False)
