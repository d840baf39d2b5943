"""The body of one job, shared by both engines: a `Runner` holds one Stylizer (the network
loaded once, the loss compiled once per size) and runs a job's `Task` on it as a stream of
progress events. A local worker process sends the events to its worker thread through a pipe
(local_engine.py), a Ray actor yields them back to the server (ray_engine.py); either way the
server's worker thread applies them to its Job as they come.

The events (plain tuples, cheap to send between processes):

    ("size", (height, width))              the output's size, once the run is prepared
    ("evaluated", evaluations, loss)       after every loss evaluation (L-BFGS) or step (Adam)
    ("iterated", iteration, rate, png)     after every iteration; png: the iterate as PNG
                                           bytes at most every PREVIEW_SECONDS (and the last
                                           one), else None; rate: iterations per second
    ("note", text)                         e.g. L-BFGS ended early
    ("end", status, error, has_result)     last: done, cancelled or failed; the result, when
                                           there is one, is in the folder as result.png/.tif

A cancel is a flag with `is_set()` (a `threading.Event` in a Ray actor; in a local worker
process, its cancels pipe) that the run's `on_evaluation` callback checks: set, it raises
`Cancelled`, so the run stops between two evaluations and keeps its best image so far.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Callable, Iterator

from ..errors import StyleflowError, explained
from .job import RESULTS, Task, one_line, without_folder

# Seconds between two preview images: encoding one per Adam step would cost more than the step.
PREVIEW_SECONDS = 0.2


class Cancelled(KeyboardInterrupt):
    """A job cancelled from the page or the API. Raised from the run's `on_evaluation`
    callback, so the run stops between two evaluations; a KeyboardInterrupt because the
    library lets those through with the best image so far kept (`run.result()`)."""


class Runner:
    """One Stylizer made with `stylizer_options` (weights, precision, jit), or `broken`: the
    one line saying why there is none (every job it is given fails with it). `notes` receives
    the library's notes, such as the weights fallback."""

    def __init__(self, stylizer_options: dict, notes: Callable[[str], None]):
        self.stylizer, self.broken = None, None
        try:
            from ..api import Stylizer

            self.stylizer = Stylizer(**stylizer_options, notes=lambda note: notes(one_line(note)))
        except StyleflowError as exc:
            self.broken = one_line(exc)
        except Exception as exc:  # noqa: BLE001 - every job will say so; the server goes on
            self.broken = one_line(f"cannot load the network: {type(exc).__name__}: "
                                   f"{exc}")[:500]

    def run(self, task: Task, folder: Path, stop) -> Iterator[tuple]:
        """Run `task` with its uploads in `folder` (where the result is written too), until
        it ends or `stop` (anything with `is_set()`) is set; yields the events above."""
        if self.broken:  # said in full in the server's log; it may name the server's files
            yield ("end", "failed", "the server cannot load its network (its log says why)",
                   False)
            return
        evaluations: list[tuple] = []

        def on_evaluation(count: int, loss: float) -> None:
            evaluations.append(("evaluated", count, float(loss)))
            if stop.is_set():
                raise Cancelled()

        def flushed() -> list[tuple]:
            out = evaluations[:]
            del evaluations[:]
            return out

        run = None
        try:
            run = _prepare(self.stylizer, task, folder, on_evaluation)
            yield ("size", tuple(run.size))
            if getattr(run, "stages_report", ""):  # photo's two stages
                yield ("note", run.stages_report)
            if stop.is_set():
                raise Cancelled()
            seconds: list[float] = []
            shown, noted = 0.0, 0
            for it in run:
                yield from flushed()
                seconds = (seconds + [it.seconds])[-5:]
                now = time.monotonic()
                preview = None
                if it.iteration == it.iterations or now - shown >= PREVIEW_SECONDS:
                    preview, shown = _png(it.array), now
                rate = len(seconds) / sum(seconds) if sum(seconds) > 0 else None
                yield ("iterated", it.iteration, rate, preview)
                if stop.is_set():
                    raise Cancelled()
                for stage_stop in getattr(run, "stage_stops", [])[noted:]:  # L-BFGS's, per stage
                    noted += 1
                    yield ("note", _stop_note(run, *stage_stop))
            end = amended(("end", "done", None, False), *keep(folder, _saver(run.result())))
        except Cancelled:
            kept = keep(folder, _saver(run.result())) if run is not None else (False, None)
            end = amended(("end", "cancelled", None, False), *kept)
        except StyleflowError as exc:
            end = ("end", "failed", _worded(task, folder, exc), False)
        except Exception as exc:  # noqa: BLE001 - a failing job never stops the server
            exhausted = explained(exc)
            error = _worded(task, folder, exhausted) if exhausted is not None else \
                one_line(f"internal error: {type(exc).__name__}: {exc}")[:500]
            end = ("end", "failed", error, False)
        yield from flushed()
        yield end


def _prepare(stylizer, task: Task, folder: Path, on_evaluation):
    """The task's Run: the method's iter_* with the task's files and options."""
    inputs = task.inputs
    options = dict(task.options, on_evaluation=on_evaluation)
    content = folder / inputs["content"]
    styles = [folder / name for name in inputs["style"]]
    if "start" in inputs:  # a job continuing another from its kept picture
        options["initial" if task.method == "style" else "init"] = folder / inputs["start"]
    if task.method == "style":
        return stylizer.iter_stylize(content, styles, **options)
    if task.method == "photo":
        for role in ("content_mask", "style_mask"):
            if role in inputs:
                options[role] = folder / inputs[role]
        return stylizer.iter_photo(content, styles[0], **options)
    return stylizer.iter_transfer(content, styles[0], **options)


def _worded(task: Task, folder: Path, exc: StyleflowError) -> str:
    """A library message with its parameters named as the page names them (the page has a
    width and no height) and the copies of the uploads named as uploaded."""
    text = exc.worded({"width": "width", "iterations": "iterations"})
    for role, stored in task.inputs.items():
        shown = task.names[role]
        for one, name in (zip(stored, shown) if role == "style" else [(stored, shown)]):
            text = text.replace(str(folder / one), name)
    return one_line(text)


def _saver(result):
    """What `keep` writes a run's result with (None: nothing was evaluated)."""
    return None if result is None else result.save


def keep(folder: Path, write) -> tuple[bool, str | None]:
    """Write a job's result into `folder` by `write(path)` (None: there is none): result.png,
    then result.tif. (Whether result.png was written, None or the one line saying what could
    not be, without the server's paths.) The PNG goes first, the smaller and the one the page
    shows: on a full disk it may still fit."""
    if write is None:
        return False, None
    written = False
    try:
        for name in RESULTS:  # result.png first
            write(folder / name)
            written = True
    except StyleflowError as exc:
        text = without_folder(exc, folder)
        return written, (f"{text}; the PNG was kept" if written else text)
    return True, None


def _stop_note(run, stage: int, done: int, last: int, why: str) -> str:
    """As `styleflow photo` says it: the stage's own count, the run's iteration numbers."""
    first = run.first_stage + 1 if stage == 2 else 1
    said = f"stage {stage}: " if getattr(run, "stages", 1) == 2 else ""
    repeat = (f"iteration {last} repeats" if last == done + 1
              else f"iterations {done + 1}-{last} repeat")
    return (f"{said}L-BFGS stopped after {done - first + 1} of its {last - first + 1} "
            f"iterations: {why}; {repeat} its last image")


def amended(end: tuple, kept: bool, lost: str | None) -> tuple:
    """A run's end event once its result is written (`keep`'s answer): a finished run whose
    result could not be written has failed, a cancelled one stays cancelled; either says what
    was lost."""
    _, status, error, _ = end
    if lost is not None:
        status = "failed" if status == "done" else status
        error = lost if error is None else f"{error}; {lost}"
    return ("end", status, error, kept)


def _png(array) -> bytes:
    """A uint8 RGB array as PNG bytes, fast rather than small (a preview)."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG", compress_level=1)
    return out.getvalue()
