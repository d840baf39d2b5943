"""The local engine of `styleflow serve`: its workers are child processes, replaced when they
have grown, failed jobs in one line when they die, and never left running after the queue or
the server that started them (web/local_engine.py). Driven through the queue in this process,
as the server drives it, without a browser."""

from __future__ import annotations

import os
import signal
import time

import pytest

from conftest import ROOT, alive
from styleflow.web.form import Upload
from styleflow.web.local_engine import LocalEngine
from styleflow.web.queue import JobQueue

pytestmark = pytest.mark.slow

UPLOADS = [Upload("content", "base1.jpg", (ROOT / "images" / "base1.jpg").read_bytes()),
           Upload("style", "ref7.jpg", (ROOT / "images" / "ref7.jpg").read_bytes())]
FINAL = {"done", "cancelled", "failed"}


def wait_for(condition, timeout: float = 180.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def finished(job, timeout: float = 180.0):
    wait_for(lambda: job.status in FINAL, timeout, f"job {job.id}")
    return job


@pytest.fixture
def queue_of(tmp_path):
    """A started JobQueue on a LocalEngine made with the given options; stopped after the test,
    which then checks that none of its worker processes is left."""
    made, lines = [], []

    def make(**engine_options):
        engine = LocalEngine({"weights": "lite", "jit": "off"}, **engine_options)
        queue = JobQueue(tmp_path / "out", engine, log=lines.append)
        queue.start()
        made.append((queue, engine))
        return queue, engine, lines

    yield make
    for queue, engine in made:
        pids = [worker.pid for worker in engine._made if worker.pid]
        queue.stop(timeout=60)
        assert all(worker.pid is None for worker in engine._made)
        for pid in pids:
            wait_for(lambda: not alive(pid), 15, f"worker process {pid} to end")
    assert not any("Traceback" in line for line in lines), lines


def test_a_grown_worker_process_is_replaced_between_jobs(queue_of):
    # A negative growth replaces the process after every job but its first (whose memory is
    # the reference); the default replaces it after RECYCLE_GROWTH of growth.
    queue, engine, lines = queue_of(recycle_growth=-1.0)
    first = finished(queue.create({"method": "transfer", "width": 48, "iterations": 1}, UPLOADS))
    worker = engine._made[0]
    pid = worker.pid
    second = finished(queue.create({"method": "transfer", "width": 56, "iterations": 1},
                                   UPLOADS))
    wait_for(lambda: worker.pid not in (None, pid), 120, "the replacement process")
    assert not alive(pid)
    third = finished(queue.create({"method": "style", "width": 64, "iterations": 2}, UPLOADS))
    assert [job.status for job in (first, second, third)] == ["done"] * 3
    assert [job.size[1] for job in (first, second, third)] == [48, 56, 64]
    assert (third.folder / "result.png").is_file()
    replaced = [line for line in lines if "replaced after it grew" in line]
    assert len(replaced) == 1 and replaced[0].startswith("styleflow serve: worker 1 replaced")


def test_a_worker_process_that_dies_fails_its_job_in_one_line_and_the_next_job_runs(queue_of):
    queue, engine, lines = queue_of()
    # Adam never ends early: the job still runs when its process is killed.
    doomed = queue.create({"method": "style", "width": 64, "iterations": 5000}, UPLOADS)
    wait_for(lambda: doomed.evaluations >= 2, 180, "the job's first evaluations")
    pid = engine._made[0].pid
    os.kill(pid, signal.SIGKILL)
    finished(doomed, 30)
    assert doomed.status == "failed"
    assert doomed.error == ("the worker process ended during this job (exit code -9 (signal "
                            "SIGKILL)); a new one runs the next job")
    after = finished(queue.create({"method": "transfer", "width": 48, "iterations": 1}, UPLOADS))
    assert after.status == "done" and engine._made[0].pid not in (None, pid)


def test_a_grown_ray_actor_is_replaced_between_jobs_as_a_worker_process_is(ray_address,
                                                                           tmp_path):
    from styleflow.web.ray_engine import RayEngine

    lines = []
    engine = RayEngine({"weights": "lite", "jit": "off"}, workers=1, address=ray_address,
                       recycle_growth=-1.0)
    engine.connect()
    queue = JobQueue(tmp_path / "out", engine, log=lines.append)
    queue.start()
    try:
        first = finished(queue.create({"method": "transfer", "width": 48, "iterations": 1},
                                      UPLOADS))
        actor = engine._actors[0]
        second = finished(queue.create({"method": "transfer", "width": 56, "iterations": 1},
                                       UPLOADS))
        third = finished(queue.create({"method": "transfer", "width": 64, "iterations": 1},
                                      UPLOADS))
        assert [job.status for job in (first, second, third)] == ["done"] * 3
        assert (third.folder / "result.png").is_file()
        assert len(engine._actors) == 1 and engine._actors[0] != actor
        # Replaced after the second job only: the new actor's first job (the third) sets its
        # own reference.
        replaced = [line for line in lines if "replaced after it grew" in line]
        assert len(replaced) == 1 and replaced[0].startswith("styleflow serve: worker 1 "), lines
    finally:
        queue.stop(timeout=60)
    assert engine._actors == [] and engine.closed


def test_stopping_the_queue_stops_a_running_job_and_ends_its_worker_process(queue_of):
    queue, engine, lines = queue_of()
    job = queue.create({"method": "style", "width": 64, "iterations": 5000}, UPLOADS)
    wait_for(lambda: job.evaluations >= 2, 180, "the job's first evaluations")
    pid = engine._made[0].pid
    began = time.monotonic()
    queue.stop(timeout=60)
    took = time.monotonic() - began
    assert job.status == "failed" and job.error.startswith("the server stopped during this job")
    assert took < 15, (took, job.evaluations, lines)
    wait_for(lambda: not alive(pid), 15, "the worker process to end")
