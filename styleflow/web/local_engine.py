"""`styleflow serve --engine local`: the workers are threads of the server's process, each
keeping one Stylizer (TensorFlow releases the interpreter while it computes, so the page stays
responsive during a run)."""

from __future__ import annotations

from .job import Job
from .run import Runner


class LocalEngine:
    """`workers` threads, each with a Stylizer made with `stylizer_options` (queue.py says
    what an engine is)."""

    def __init__(self, stylizer_options: dict, workers: int = 1):
        self.stylizer_options = dict(stylizer_options)
        self.workers = int(workers)

    def open(self, log):
        return [lambda: LocalWorker(self.stylizer_options, log)] * self.workers

    def close(self) -> None:
        pass


class LocalWorker:
    """One Stylizer, loaded when the worker is made, so the first job need not."""

    def __init__(self, stylizer_options: dict, log):
        self.runner = Runner(stylizer_options, lambda note: log(f"styleflow serve: {note}"))
        if self.runner.broken:
            log(f"styleflow serve: error: {self.runner.broken}")

    def run(self, job: Job):
        return self.runner.run(job.task, job.folder, job.cancel_requested)
