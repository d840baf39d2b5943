"""A batch on this machine: its pairs run one after another in a worker process holding one
PairWorker (the network loaded once, the loss traced once per size), which is replaced between
two pairs once it has grown (processes.py says why a process and not this one). The worker
writes the images; this process alone writes the status log (through `finished`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

from ..errors import Note, StyleflowError
from ..io import files
from .jobs import Pair
from .processes import (RECYCLE_GROWTH, Growth, discard, ended_code, leave, pipe,
                        prepare_tensorflow, resident_bytes, spawn_worker,
                        worker_signals)
from .worker import PairWorker, Settings, one_line, record

# How often the waiting process looks at the worker's pipe (seconds): a Ctrl-C acts this soon.
POLL_SECONDS = 0.1


def run_locally(pairs: Sequence[Pair], settings: Settings,
                finished: Callable[[Pair, dict], None], *,
                notes: Callable[[str], None] | None = None,
                on_start: Callable[[Pair], None] | None = None,
                on_progress: Callable[[int, int], None] | None = None,
                recycle_growth: float | None = RECYCLE_GROWTH) -> None:
    """Run `pairs` in a worker process, calling `finished(pair, record)` here for each.
    `notes` receives one-line notes (the weights fallback, a replaced worker); the worker is
    replaced once it has grown by more than `recycle_growth` (a fraction; None: never).
    An interrupt (KeyboardInterrupt) ends the worker at once: the pair in progress leaves no
    file."""
    if not pairs:
        return
    worker = PairProcess(settings, notes, recycle_growth)
    try:
        for pair in pairs:
            if on_start is not None:
                on_start(pair)
            finished(pair, worker.run(pair, on_progress))
    except BaseException:
        worker.kill()
        raise
    else:
        worker.close()


class PairProcess:
    """This side of the worker process: starts it, hands it pairs, replaces it when it has
    grown or died."""

    def __init__(self, settings: Settings, notes: Callable[[str], None] | None = None,
                 recycle_growth: float | None = RECYCLE_GROWTH):
        self.settings = settings
        self.notes = notes
        self.growth = Growth(recycle_growth, "styleflow batch: the worker process", "pair")
        self.process = self.conn = None
        self._said: set[str] = set()  # a replacement repeats its notes: each is said once
        self._retiring = False  # grown: replaced before the next pair
        self._current: Pair | None = None  # the pair the worker is doing
        self._started = False

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def _start(self) -> None:
        """Start a worker process; StyleflowError (one line) when it cannot load TensorFlow."""
        parent, child = pipe()
        self.process = spawn_worker(pair_process_main, (child, self.settings),
                                    "styleflow-batch-worker")
        child.close()
        self.conn = parent
        self.growth.reset()
        try:
            broken = self._receive()[1]  # ("ready", why not) once TensorFlow is loaded
        except EOFError:
            broken = (f"the worker process ended while starting (exit code "
                      f"{ended_code(self.process)})")
        if broken:
            self.kill()
            raise StyleflowError(broken)

    def _receive(self):
        """The worker's next message, waiting in short polls (so an interrupt acts at once);
        EOFError when the process has ended."""
        while not self.conn.poll(POLL_SECONDS):
            if not self.process.is_alive() and not self.conn.poll():
                raise EOFError
        try:
            return self.conn.recv()
        except OSError:
            raise EOFError from None

    def _note(self, text: str) -> None:
        if self.notes is not None and text not in self._said:
            self._said.add(text)
            self.notes(text)

    def run(self, pair: Pair, on_progress: Callable[[int, int], None] | None = None) -> dict:
        """Do `pair` in the worker process; its status record. StyleflowError when the first
        worker cannot start (a later one that cannot fails the pair)."""
        began = time.perf_counter()
        if self._retiring:
            self._retiring = False
            self.close()
        if self.process is None or not self.process.is_alive():
            self._discard()
            try:
                self._start()
            except StyleflowError as exc:
                if not self._started:
                    raise
                return record(pair, "failed", began, error=str(exc))
            self._started = True
        self._current = pair
        try:
            self.conn.send(pair)
        except OSError:
            return self._died(pair, began)
        while True:
            try:
                message = self._receive()
            except EOFError:
                return self._died(pair, began)
            if message[0] == "progress":
                if on_progress is not None:
                    on_progress(*message[1:])
            elif message[0] == "note":
                self._note(Note(*message[1:]))
            elif message[0] == "memory":
                said = self.growth.due(message[1])
                if said:  # replaced before the next pair, once this one is recorded
                    self._note(said)
                    self._said.discard(said)
                    self._retiring = True
            else:  # ("record", rec)
                self._current = None
                return message[1]

    def _died(self, pair: Pair, began: float) -> dict:
        code = ended_code(self.process)
        self._discard()
        self._current = None
        return record(pair, "failed", began,
                      error=f"the worker process ended during this pair (exit code "
                            f"{code}); a new one runs the next pair")

    def close(self) -> None:
        """Ask the worker process to leave (no pair is running); kill it if it does not
        within LEAVE_SECONDS."""
        if self.process is None:
            return
        leave(self.process, self.conn)
        self._discard()

    def kill(self) -> None:
        """End the worker process at once (interrupted: its pair is abandoned, and a temporary
        file it was writing is removed)."""
        self._discard()
        if self._current is not None:
            files.remove_stale_temporaries(Path(self._current.output).parent)
            self._current = None

    def _discard(self) -> None:
        discard(self.process, self.conn)
        self.process = self.conn = None


def pair_process_main(conn, settings: Settings) -> None:
    """The worker process: load TensorFlow, then do each pair sent until None comes, sending
    its progress, notes, memory held and finally its record."""
    worker_signals()
    try:
        prepare_tensorflow(None)
    except Exception as exc:  # noqa: BLE001 - said in one line by the batch
        conn.send(("ready", one_line(f"cannot load TensorFlow: {type(exc).__name__}: "
                                     f"{exc}")[:500]))
        return
    # A note keeps the parameters it names, for the batch to word as its flags.
    worker = PairWorker(settings, notes=lambda text: conn.send(
        ("note", one_line(text), tuple(getattr(text, "params", ())))))
    conn.send(("ready", None))
    while True:
        try:
            pair = conn.recv()
        except EOFError:
            return
        if pair is None:
            return
        rec = worker.run(pair, on_progress=lambda done, total: conn.send(("progress", done,
                                                                           total)))
        # Memory counts once the network is loaded: a first pair refused before that (a bad
        # row) would set a baseline every later pair outgrows.
        conn.send(("memory", resident_bytes() if worker.loaded else None))
        conn.send(("record", rec))
