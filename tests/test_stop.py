"""A stop acts within about a second: a tiled evaluation looks for it between tiles, then the
best image so far is written and the command exits 143 (SIGTERM) or 130 (Ctrl-C); a second
Ctrl-C exits as soon as that image is written."""

from __future__ import annotations

import contextlib
import queue
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, child, make_image

# From the signal to the best image written: a tile and the write, far less than one
# evaluation of the run below (about 50 passes, each over nearly the whole image), which a
# stop that waited for the evaluation to end would take on average half of. Generous for a
# loaded machine; the process's own exit after the write is not counted.
STOP_SECONDS = 6.0


def _lines(stream) -> queue.Queue:
    """The lines a child writes to `stream`, read in a thread (so a wait can have a deadline)."""
    lines: queue.Queue = queue.Queue()

    def read():
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


def _wait_for(lines: queue.Queue, needle: str, seen: list, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        if line is None:
            return False
        seen.append(line)
        if needle in line:
            return True
    return False


@pytest.mark.slow
def test_a_stop_acts_between_tiles(tmp_path):
    base = make_image(tmp_path / "base.png", (48, 32), 1)
    style = make_image(tmp_path / "style.png", (40, 40), 2)
    # Full layers on random weights in 32 px tiles: each tile carries a 96 px halo, so one
    # evaluation runs the network about 50 times over nearly the whole 192x128 image.
    cases = [(signal.SIGTERM, 1, 143, "t"), (signal.SIGINT, 2, 130, "i")]
    with contextlib.ExitStack() as stack:  # both at once: the test takes one run's time
        runs = []
        for sig, times, code, name in cases:
            args = [sys.executable, str(ROOT / "neural_style_transfer.py"), str(base),
                    str(style), str(tmp_path / name), "--weights", "random", "--iter", "50",
                    "--height", "128", "--tile", "32", "--jit", "off"]
            # Progress lines go to stdout, the interruption's to stderr: one stream to read.
            proc = stack.enter_context(child(args, stdout=subprocess.PIPE,
                                             stderr=subprocess.STDOUT, text=True))
            runs.append((proc, _lines(proc.stdout), []))
        for (proc, lines, seen), (sig, times, code, name) in zip(runs, cases):
            # A progress line comes after an evaluation: the best image so far exists.
            assert _wait_for(lines, "progress:", seen, 240), "".join(seen)
            time.sleep(1.0)  # well into the next evaluation
            began = time.monotonic()
            for _ in range(times):
                proc.send_signal(sig)
                time.sleep(0.2)
            written = _wait_for(lines, "written to", seen, 120)
            took = time.monotonic() - began
            proc.wait(timeout=60)
            while (line := lines.get(timeout=10)) is not None:
                seen.append(line)
            err = "".join(seen)
            # A second Ctrl-C that arrives once the image is written and the process is
            # already ending finds Python's handlers gone: it ends the process at once (-2),
            # which is what it asks for.
            assert written and proc.returncode in ((code,) if times == 1 else (code, -sig)), err
            assert took <= STOP_SECONDS, (sig, took, err)
            assert "Traceback" not in err
            kept = tmp_path / f"{name}_interrupted.png"
            assert f"written to {kept}" in err
            with Image.open(kept) as img:
                assert img.size == (192, 128)
                assert np.asarray(img).std() > 0  # an image, not an empty canvas


def test_an_interrupt_anywhere_in_the_hand_over_ends_the_thread():
    """Ctrl-C raises KeyboardInterrupt between any two steps of the consumer of the L-BFGS
    thread's iterations; wherever it lands, the generator ends, the thread ends and nothing
    waits for ever (the consumer takes no lock an interrupt could leave taken: a run hung so
    once, found in review). A watchdog ends the suite with every thread's stack should it hang."""
    import faulthandler

    from styleflow.optim.lbfgs import _handed_over

    rng = np.random.default_rng(0)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    faulthandler.dump_traceback_later(120, exit=True)
    try:
        for _ in range(150):
            stop = threading.Event()
            before = threading.active_count()
            consumed = []
            timer = threading.Timer(rng.uniform(0.001, 0.02), signal.pthread_kill,
                                    (threading.main_thread().ident, signal.SIGINT))
            with pytest.raises(KeyboardInterrupt):
                timer.start()
                for value in _handed_over(lambda report: [report(i) for i in range(10**6)],
                                          stop):
                    consumed.append(value)
                    time.sleep(rng.uniform(0, 0.002))  # the consumer's own work
            timer.join()
            assert stop.is_set()
            assert consumed == list(range(len(consumed)))  # in order, none lost or repeated
            assert threading.active_count() == before  # the thread has ended
    finally:
        faulthandler.cancel_dump_traceback_later()
        signal.signal(signal.SIGINT, previous)
