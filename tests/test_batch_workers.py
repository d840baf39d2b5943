"""The local engine of `styleflow batch`: its pairs run in a worker process, replaced when it
has grown, failing its pair in one line when it dies, and never left running after the batch
that started it (batch/local_engine.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import alive, child, descendants, make_image
from styleflow.batch.jobs import Pair
from styleflow.batch.local_engine import PairProcess
from styleflow.batch.worker import Settings

pytestmark = pytest.mark.slow

SETTINGS = Settings(method="lbfgs", weights="random", seed=1, jit="off")


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def pairs(tmp_path):
    """pairs(n, iterations): n pairs of small pictures, each of its own height."""
    make_image(tmp_path / "c.png", (48, 32), 1)
    make_image(tmp_path / "s.png", (40, 40), 2)

    def make(count: int, iterations: int = 1) -> list[Pair]:
        return [Pair(str(tmp_path / "c.png"), str(tmp_path / "s.png"),
                     str(tmp_path / "out" / f"p{k}.png"),
                     {"iterations": iterations, "height": 24 + 8 * k})
                for k in range(count)]

    return make


def test_a_grown_worker_process_is_replaced_between_pairs(pairs):
    notes: list[str] = []
    # A negative growth replaces the process after every pair but its first (whose memory is
    # the reference); the default replaces it after RECYCLE_GROWTH of growth.
    worker = PairProcess(SETTINGS, notes.append, recycle_growth=-1.0)
    first, second, third = pairs(3)
    try:
        assert worker.run(first)["status"] == "done"
        pid = worker.pid
        assert pid is not None and pid != os.getpid()
        assert worker.run(second)["status"] == "done"
        assert worker.run(third)["status"] == "done"
        assert worker.pid not in (None, pid)
        wait_for(lambda: not alive(pid), 15, "the grown process to end")
    finally:
        worker.close()
    replaced = [n for n in notes if "replaced after it grew" in n]
    assert len(replaced) == 1, notes
    assert replaced[0].startswith("styleflow batch: the worker process replaced after it grew to")
    assert all(os.path.getsize(p.output) > 0 for p in (first, second, third))


def test_a_worker_process_that_dies_fails_its_pair_in_one_line_and_the_next_runs(pairs):
    doomed, after = pairs(2, iterations=500)
    after.options["iterations"] = 1
    worker = PairProcess(SETTINGS)
    killed = []

    def kill_once(done, total):  # the pair's first iteration is in: its process dies
        if not killed:
            killed.append(worker.pid)
            os.kill(worker.pid, signal.SIGKILL)

    try:
        rec = worker.run(doomed, on_progress=kill_once)
        assert rec["status"] == "failed"
        assert rec["error"] == ("the worker process ended during this pair (exit code -9 "
                                "(signal SIGKILL)); a new one runs the next pair")
        assert not os.path.exists(doomed.output)
        assert worker.run(after)["status"] == "done"
        assert worker.pid not in (None, killed[0])
        last = worker.pid
    finally:
        worker.close()
    wait_for(lambda: not alive(last), 15, "the worker process to leave")


def batch(tmp_path, iterations: str) -> list[str]:
    (tmp_path / "in").mkdir()
    make_image(tmp_path / "in" / "c0.png", (48, 32), 1)
    make_image(tmp_path / "s.png", (40, 40), 2)
    return [sys.executable, "-m", "styleflow", "batch", "--contents", str(tmp_path / "in"),
            "--styles", str(tmp_path / "s.png"), "--out", str(tmp_path / "out"), "--weights",
            "random", "--iter", iterations, "--height", "32", "--seed", "1",
            "--iteration-images"]


def workers_of(proc, timeout: float = 120) -> list[int]:
    """The batch's processes below it (its worker), once there is one."""
    found: list[int] = []

    def started():
        found[:] = descendants(proc.pid)
        return bool(found) or proc.poll() is not None

    wait_for(started, timeout, "the worker process")
    assert proc.poll() is None and found, "the batch ended before its worker started"
    return found


@pytest.mark.parametrize("how", ["ctrl-c", "kill"])
def test_no_worker_process_outlives_its_batch(tmp_path, how):
    # The batch in a session of its own, so a Ctrl-C can go to its whole process group, as a
    # terminal sends it.
    with child(batch(tmp_path, "1000"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
               text=True, start_new_session=True) as proc:
        workers_of(proc)
        # Its first iteration's image is written: the worker is optimising the pair.
        wait_for(lambda: (tmp_path / "out" / "c0_s_at_iteration_00.png").exists(), 120,
                 "the pair's first iteration")
        workers = workers_of(proc)
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 130, err
            # --iteration-images: the abandoned pair's iteration images stay, not its output.
            assert "abandoned (its iteration images so far kept, not its output)" in err
            assert "Traceback" not in err
        else:
            proc.kill()
            proc.wait(timeout=30)
    wait_for(lambda: not any(map(alive, workers)), 15, f"worker processes {workers} to end")
    assert not (tmp_path / "out" / "c0_s.png").exists()
    assert not [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("method, flag", [("lbfgs", "--weights"), ("adam", "--network")])
def test_a_note_from_the_worker_names_the_batch_s_own_option_once(tmp_path, method, flag):
    from conftest import call_cli

    (tmp_path / "in").mkdir()
    for k in range(2):
        make_image(tmp_path / "in" / f"c{k}.png", (48, 32), k)
    make_image(tmp_path / "s.png", (40, 40), 2)
    iterations = ["--iter", "1", "--height", "24"] if method == "lbfgs" else \
        ["--iterations", "1", "--width", "24"]
    proc = call_cli("styleflow", "batch", "--method", method, "--contents", tmp_path / "in",
                    "--styles", tmp_path / "s.png", "--out", tmp_path / "out", flag, "auto",
                    *iterations)
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stderr.splitlines() if "could not be downloaded" in line]
    # Offline, the weights fall back to lite with a note: once for the batch, worded with
    # the batch's flag, though each pair's worker run could say it.
    assert len(notes) == 1, proc.stderr
    assert notes[0].endswith(f"or pass {flag} PATH") and "weights=" not in notes[0]
