"""One job of `styleflow serve`: what a person asked for (its `Task`), its state as a worker
runs it, and its folder, OUT/jobs/ID/: the uploads, `job.json` (rewritten atomically at each
change of status) and, once it has one, `result.png` and `result.tif` (16 bits per channel),
so a restarted server lists it again.

Plain Python, no web stack and no TensorFlow.
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import StyleflowError
from ..io import files

# The page's methods and the Stylizer's run each one starts.
METHODS = {"transfer": "iter_transfer", "style": "iter_stylize", "photo": "iter_photo"}
STATUSES = ("queued", "running", "done", "cancelled", "failed")
FINAL = frozenset({"done", "cancelled", "failed"})
ID = re.compile(r"^[0-9a-f]{12}$")
# Files of a job's folder that the API serves, by the name it serves them under.
RESULTS = {"result.png": "image/png", "result.tif": "image/tiff"}
# A job that ended without a result keeps its last iterate here (not in memory).
LAST_PREVIEW = "preview.png"
# The most characters of an uploaded file's name that a job keeps.
NAME_CHARS = 80
# The loss curve a state carries is thinned to about this many points (the page's canvas is
# narrower), so a long run's updates stay small.
CURVE_POINTS = 400
STOPPED = ("the server stopped during this job; its picture so far is kept, and Continue goes "
           "on from it")


def one_line(text) -> str:
    return " ".join(str(text).split())


class StorageError(StyleflowError):
    """The server could not keep a job's files (disk full, read-only, removed): its own
    failure, not the request's (HTTP 507)."""


def without_folder(text, folder: Path) -> str:
    """A message on one line with the server's path to `folder` taken out of the paths in it
    (what the page may show)."""
    return one_line(text).replace(f"{folder}{os.sep}", "")


def storage_error(exc: StyleflowError, folder: Path) -> StorageError:
    """`exc` (a write under `folder` refused) as a StorageError saying why, without the
    server's paths."""
    reason = exc.reason or without_folder(exc, folder)
    return StorageError(f"the server cannot store this job ({reason})")


def stored_name(role: str, index: int = 0) -> str:
    """The name of an upload in its job's folder: content.upload, style-1.upload, ..."""
    return f"{role}-{index + 1}.upload" if role == "style" else f"{role}.upload"


STORED = re.compile(r"(content|content_mask|style_mask|start|style-[0-9]{1,3})\.upload")


@dataclass(frozen=True)
class Task:
    """What a run needs of a job, and nothing else (it travels to a Ray actor): the id, the
    method, the API's keyword arguments (files excluded), role -> file name in the job's
    folder (style: a list), role -> the uploaded file's name (style: a list)."""

    id: str
    method: str
    options: dict
    inputs: dict
    names: dict

    def stored(self) -> list[str]:
        """The names of the uploads in the job's folder."""
        return [name for value in self.inputs.values()
                for name in (value if isinstance(value, list) else [value])]


class Job:
    """One request and its state as a worker runs it. Workers write it and the HTTP app reads
    it from other threads: every change holds `lock` and bumps `version`, which the event
    streams watch."""

    def __init__(self, id: str, folder: Path, method: str, options: dict, inputs: dict,
                 names: dict, created: float | None = None):
        self.id = id
        self.folder = folder
        self.task = Task(id, method, options, inputs, names)
        self.method = method
        self.options = options
        self.inputs = inputs
        self.names = names
        self.created = time.time() if created is None else created
        self.status = "queued"
        self.started: float | None = None
        self.finished: float | None = None
        self.iteration = 0
        self.iterations = int(options["iterations"])
        self.evaluations = 0
        self.curve: list[tuple[int, float]] = []  # (evaluations, loss) after each evaluation
        self.rate: float | None = None  # iterations per second, over the last few
        self.size: tuple[int, int] | None = None  # (height, width) of the output
        self.error: str | None = None
        self.note: str | None = None  # e.g. L-BFGS ended before its evaluations were spent
        self.has_result = False
        self.preview: bytes | None = None  # PNG of the latest iterate while the job runs
        self.preview_version = 0
        self.version = 0
        self.lock = threading.Lock()
        self.cancel_requested = threading.Event()
        self.stop_reason: str | None = None  # set when the server, not a person, stops it

    # -- changes (worker side) -----------------------------------------------------------

    def _changed(self) -> None:
        self.version += 1

    def begin(self) -> bool:
        """Mark the job running; False when it was cancelled while it waited."""
        with self.lock:
            if self.status != "queued":
                return False
            self.status, self.started = "running", time.time()
            self._changed()
            return True

    def cancel(self) -> bool:
        """Ask the job to stop; True when it was queued (and is now cancelled), False when it
        is running (its run stops at its next evaluation) or already finished."""
        with self.lock:
            if self.status in FINAL:
                return False
            self.cancel_requested.set()
            if self.status != "queued":
                return False
            # Under the lock: a worker taking the job now finds it cancelled.
            self.status, self.finished = "cancelled", time.time()
            self._changed()
            return True

    def apply(self, event: tuple) -> None:
        """One progress event of a run (run.py says which), from whichever engine ran it."""
        kind = event[0]
        with self.lock:
            if kind == "evaluated":
                count, loss = event[1:]
                self.evaluations = count
                if math.isfinite(loss):
                    self.curve.append((count, float(loss)))
            elif kind == "iterated":
                self.iteration, self.rate, preview = event[1:]
                if preview is not None:
                    self.preview = preview
                    self.preview_version += 1
            elif kind == "size":
                self.size = tuple(event[1])
            elif kind == "note":
                self.note = event[1]
            else:
                raise ValueError(f"unknown event {kind!r}")
            self._changed()

    def finish(self, status: str, error: str | None = None, has_result: bool = False) -> None:
        # result.png is the preview from now on; without one the last iterate is kept in the
        # folder (shown after a restart too), not in memory.
        with self.lock:
            last = None if has_result else self.preview
        if last is not None:
            with contextlib.suppress(StyleflowError):  # a full disk: no picture then
                files.write_atomically(self.folder / LAST_PREVIEW,
                                       lambda handle: handle.write(last))
        with self.lock:
            self.status, self.error, self.finished = status, error, time.time()
            self.has_result = has_result
            self.curve = _thinned(self.curve, CURVE_POINTS)
            self.preview = None
            self.preview_version += 1
            self._changed()

    # -- what the API shows --------------------------------------------------------------

    def state(self, position: int | None = None) -> dict:
        """The job as the API and the event stream give it (docs/web.md)."""
        base = f"/api/jobs/{self.id}"
        with self.lock:  # one consistent view; the disk is asked after, without the lock
            live, has_result = self.preview is not None, self.has_result
            state = {
                "id": self.id, "url": f"/jobs/{self.id}", "method": self.method,
                "status": self.status, "iteration": self.iteration,
                "iterations": self.iterations, "evaluations": self.evaluations,
                "loss": self.curve[-1][1] if self.curve else None, "rate": self.rate,
                "curve": [list(p) for p in _thinned(self.curve, CURVE_POINTS)],
                "width": self.options.get("width"),
                "size": None if self.size is None else {"height": self.size[0],
                                                        "width": self.size[1]},
                "options": dict(self.options), "inputs": dict(self.names),
                "error": self.error, "note": self.note, "created": self.created,
                "started": self.started, "finished": self.finished, "queue_position": position,
                "preview": f"{base}/preview.png?v={self.preview_version}",
            }
        # A job's files are written before it is marked as having them: once `has_result`
        # is seen, they are there (unless removed by hand).
        if not (live or state["status"] in FINAL and self.picture(has_result) is not None):
            state["preview"] = None
        state["downloads"] = self._downloads(base) if has_result else None
        # Whether POST .../continue can go on from its picture (JobQueue.continue_job).
        state["continuable"] = (state["status"] in ("failed", "cancelled")
                                and state["preview"] is not None
                                and 1 <= state["iteration"] < state["iterations"])
        return state

    def picture(self, has_result: bool | None = None) -> str | None:
        """The file of its folder that shows a finished job (result.png, else its last
        iterate), if there is one; `has_result` as seen (default: as it is now)."""
        has_result = self.has_result if has_result is None else has_result
        for name in ("result.png", LAST_PREVIEW) if has_result else (LAST_PREVIEW,):
            if (self.folder / name).is_file():
                return name
        return None

    def _downloads(self, base: str) -> dict | None:
        # Those written: on a full disk the PNG may be kept without the TIFF (run.keep).
        there = {kind: f"{base}/{name}" for kind, name in (("png", "result.png"),
                                                            ("tiff", "result.tif"))
                 if (self.folder / name).is_file()}
        return there or None

    # -- its folder ----------------------------------------------------------------------

    def record(self) -> dict:
        """What job.json keeps."""
        with self.lock:
            return {"id": self.id, "method": self.method, "options": self.options,
                    "inputs": self.inputs, "names": self.names, "created": self.created,
                    "status": self.status, "started": self.started, "finished": self.finished,
                    "iteration": self.iteration, "evaluations": self.evaluations,
                    "curve": self.curve, "rate": self.rate, "error": self.error,
                    "note": self.note, "size": self.size, "has_result": self.has_result}

    def save(self) -> None:
        """Write job.json, atomically."""
        data = json.dumps(self.record(), indent=1).encode()
        files.write_atomically(self.folder / "job.json", lambda handle: handle.write(data))

    @classmethod
    def from_record(cls, folder: Path, rec) -> "Job":
        """The job `rec` (job.json's contents) describes; ValueError saying which field is
        missing or wrong when the record is damaged."""
        _check_record(rec)
        job = cls(rec["id"], folder, rec["method"], rec["options"], rec["inputs"],
                  rec["names"], rec["created"])
        job.status, job.started, job.finished = rec["status"], rec["started"], rec["finished"]
        job.iteration, job.evaluations = rec["iteration"], rec["evaluations"]
        job.curve = [tuple(p) for p in rec["curve"]]
        job.rate, job.error, job.note = rec["rate"], rec["error"], rec.get("note")
        job.size = tuple(rec["size"]) if rec.get("size") else None
        job.has_result = bool(rec["has_result"]) and (folder / "result.png").is_file()
        return job


def _is_time(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and \
        math.isfinite(value)


# job.json's fields and what each must be: a damaged record is skipped with the field named.
_FIELDS = {
    "id": (lambda v: isinstance(v, str) and bool(ID.match(v)), "a job id"),
    "method": (lambda v: v in METHODS, f"one of {', '.join(METHODS)}"),
    "options": (lambda v: isinstance(v, dict) and isinstance(v.get("iterations"), int),
                "the options, with the iterations"),
    "inputs": (lambda v: _files(v, STORED), "the stored files"),
    "names": (lambda v: _files(v, re.compile(f".{{1,{NAME_CHARS}}}")), "the uploaded names"),
    "created": (_is_time, "a time"),
    "status": (lambda v: v in STATUSES, f"one of {', '.join(STATUSES)}"),
    "started": (lambda v: v is None or _is_time(v), "a time"),
    "finished": (lambda v: v is None or _is_time(v), "a time"),
    "iteration": (lambda v: isinstance(v, int), "a whole number"),
    "evaluations": (lambda v: isinstance(v, int), "a whole number"),
    "curve": (lambda v: isinstance(v, list) and all(
        isinstance(p, list) and len(p) == 2 and all(_is_time(x) for x in p) for p in v),
        "a list of (evaluations, loss) pairs"),
    "rate": (lambda v: v is None or _is_time(v), "a number"),
    "error": (lambda v: v is None or isinstance(v, str), "text"),
    "has_result": (lambda v: isinstance(v, bool), "true or false"),
    "note": (lambda v: v is None or isinstance(v, str), "text"),
    "size": (lambda v: v is None or isinstance(v, list) and len(v) == 2 and all(
        isinstance(d, int) and d > 0 for d in v), "a height and a width"),
}


def _files(value, names: re.Pattern) -> bool:
    """Whether `value` is role -> file name as a job keeps them: one content, one or more
    styles, optional masks; each name matching `names` (stored: `stored_name`'s, so a record
    cannot name another folder's file)."""
    if not isinstance(value, dict) or set(value) - {"content", "style", "content_mask",
                                                    "style_mask", "start"}:
        return False
    styles = value.get("style")
    if not isinstance(styles, list) or not styles or "content" not in value:
        return False
    return all(isinstance(v, str) and names.fullmatch(v)
               for v in [*styles, *(value[k] for k in value if k != "style")])


def _check_record(rec) -> None:
    if not isinstance(rec, dict):
        raise ValueError("not a job record")
    for key, (valid, what) in _FIELDS.items():
        if key not in rec:
            if key in ("note", "size"):  # not in the records of earlier versions
                continue
            raise ValueError(f"'{key}' is missing")
        if not valid(rec[key]):
            raise ValueError(f"'{key}' is not {what}")


def _thinned(points: Sequence, most: int) -> list:
    """Every k-th point, and the last, so that about `most` remain."""
    if len(points) <= most:
        return list(points)
    step = math.ceil(len(points) / most)
    kept = list(points[::step])
    if kept[-1] != points[-1]:
        kept.append(points[-1])
    return kept
