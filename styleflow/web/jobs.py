"""The jobs of `styleflow serve`: what a person asked for, its state as it runs, its files in
the server's folder, and the queue that runs jobs one after another per worker, each worker
keeping one Stylizer (the network loaded once, the loss compiled once per size), as a batch
does.

Plain Python and threads, no web stack: the HTTP app (app.py) reads a job's `state()` and
calls `JobQueue.create` and `JobQueue.cancel`. A job's folder, OUT/jobs/ID/, holds its
uploads, `job.json` (rewritten atomically at each change of status) and, once it has one,
`result.png` and `result.tif` (16 bits per channel), so a restarted server lists it again.
"""

from __future__ import annotations

import io
import json
import math
import queue
import re
import secrets
import shutil
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..defaults import PHOTO_DEFAULTS, STYLIZE_DEFAULTS, TRANSFER_DEFAULTS
from ..errors import StyleflowError, exhaustion
from ..io import files, images

# The page's methods and the Stylizer's run each one starts.
METHODS = {"transfer": "iter_transfer", "style": "iter_stylize", "photo": "iter_photo"}
DEFAULTS = {"transfer": TRANSFER_DEFAULTS, "style": STYLIZE_DEFAULTS, "photo": PHOTO_DEFAULTS}
# The main loss weights each method takes from the page (blank: the method's default).
WEIGHTS = {"transfer": ("content_weight", "style_weight", "tv_weight"),
           "style": ("content_weight", "style_weight", "tv_weight"),
           "photo": ("content_weight", "style_weight", "tv_weight", "photorealism")}
STATUSES = ("queued", "running", "done", "cancelled", "failed")
FINAL = frozenset({"done", "cancelled", "failed"})
ID = re.compile(r"^[0-9a-f]{12}$")
# Files of a job's folder that the API serves, by the name it serves them under.
RESULTS = {"result.png": "image/png", "result.tif": "image/tiff"}
# The loss curve a state carries is thinned to about this many points (the page's canvas is
# narrower), so a long run's updates stay small.
CURVE_POINTS = 400
# Seconds between two preview images: encoding one per Adam step would cost more than the step.
PREVIEW_SECONDS = 0.2
STOPPED = "the server stopped during this job; start it again"


class Cancelled(KeyboardInterrupt):
    """A job cancelled from the page or the API. Raised from the run's `on_evaluation`
    callback, so the run stops between two evaluations; a KeyboardInterrupt because the
    library lets those through with the best image so far kept (`run.result()`)."""


@dataclass(frozen=True)
class Limits:
    """What one upload may be: bytes in the whole request, pixels of each image, output width,
    iterations."""

    max_bytes: int = 20 * 2 ** 20
    max_pixels: int = 40_000_000
    max_width: int = 1024
    max_iterations: int = 5000


@dataclass(frozen=True)
class Upload:
    """One uploaded file: the form field it came in (`role`), the name it had on the person's
    machine, its bytes."""

    role: str
    filename: str
    data: bytes


def one_line(text) -> str:
    return " ".join(str(text).split())


def _shown_name(filename: str) -> str:
    """An uploaded file's name as the page shows it: the last path part, printable, short."""
    name = re.split(r"[\\/]", filename or "")[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    return (name or "upload")[:80]


class Job:
    """One request: method, options, uploads, and its state as a worker runs it. Workers write
    it and the HTTP app reads it from other threads: every change holds `lock` and bumps
    `version`, which the event streams watch."""

    def __init__(self, id: str, folder: Path, method: str, options: dict, inputs: dict,
                 names: dict, created: float | None = None):
        self.id = id
        self.folder = folder
        self.method = method
        self.options = options  # the API's keyword arguments, files excluded
        self.inputs = inputs  # role -> file name in the folder (style: a list)
        self.names = names  # role -> the uploaded file's name (style: a list)
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

    def evaluated(self, count: int, loss: float) -> None:
        with self.lock:
            self.evaluations = count
            if math.isfinite(loss):
                self.curve.append((count, float(loss)))
            self._changed()

    def iterated(self, iteration: int, rate: float | None, preview: bytes | None) -> None:
        with self.lock:
            self.iteration, self.rate = iteration, rate
            if preview is not None:
                self.preview = preview
                self.preview_version += 1
            self._changed()

    def finish(self, status: str, error: str | None = None, has_result: bool = False) -> None:
        with self.lock:
            self.status, self.error, self.finished = status, error, time.time()
            self.has_result = has_result
            self.curve = _thinned(self.curve, CURVE_POINTS)
            if has_result:
                self.preview = None  # result.png is the preview from now on
                self.preview_version += 1
            self._changed()

    # -- what the API shows --------------------------------------------------------------

    def state(self, position: int | None = None) -> dict:
        """The job as the API and the event stream give it (docs/web.md)."""
        with self.lock:
            base = f"/api/jobs/{self.id}"
            shown = self.preview is not None or self.has_result
            return {
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
                "preview": f"{base}/preview.png?v={self.preview_version}" if shown else None,
                "downloads": {"png": f"{base}/result.png", "tiff": f"{base}/result.tif"}
                if self.has_result else None,
            }

    def record(self) -> dict:
        """What job.json keeps."""
        with self.lock:
            return {"id": self.id, "method": self.method, "options": self.options,
                    "inputs": self.inputs, "names": self.names, "created": self.created,
                    "status": self.status, "started": self.started, "finished": self.finished,
                    "iteration": self.iteration, "evaluations": self.evaluations,
                    "curve": self.curve, "rate": self.rate, "error": self.error,
                    "note": self.note, "size": self.size, "has_result": self.has_result}

    @classmethod
    def from_record(cls, folder: Path, rec: dict) -> "Job":
        job = cls(rec["id"], folder, rec["method"], rec["options"], rec["inputs"],
                  rec["names"], rec["created"])
        job.status, job.started, job.finished = rec["status"], rec["started"], rec["finished"]
        job.iteration, job.evaluations = rec["iteration"], rec["evaluations"]
        job.curve = [tuple(p) for p in rec["curve"]]
        job.rate, job.error, job.note = rec["rate"], rec["error"], rec.get("note")
        job.size = tuple(rec["size"]) if rec.get("size") else None
        job.has_result = bool(rec["has_result"]) and (folder / "result.png").is_file()
        return job


def _thinned(points: Sequence, most: int) -> list:
    """Every k-th point, and the last, so that about `most` remain."""
    if len(points) <= most:
        return list(points)
    step = math.ceil(len(points) / most)
    kept = list(points[::step])
    if kept[-1] != points[-1]:
        kept.append(points[-1])
    return kept


def _number(fields: dict, name: str, kind: type, low: float, high: float | None = None,
            default=None):
    """A form field as a number within [low, high]; blank gives `default`."""
    text = str(fields.get(name, "")).strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise StyleflowError(f"{name}: '{text[:40]}' is not a "
                             f"{'whole ' if kind is int else ''}number") from None
    if not math.isfinite(value) or value < low or (high is not None and value > high):
        bound = f"from {low:g} to {high:g}" if high is not None else f"{low:g} or more"
        raise StyleflowError(f"{name}: must be {bound}, not {text[:40]}")
    return value


class JobQueue:
    """Jobs kept in `folder`/jobs, run by `workers` threads one after another, each thread
    with its own Stylizer made with `stylizer_options` (weights, precision, ...). `log`
    receives a line for each job that ends and for notes such as the weights fallback."""

    def __init__(self, folder, *, workers: int = 1, stylizer_options: dict | None = None,
                 limits: Limits = Limits(), log: Callable[[str], None] | None = None):
        self.folder = Path(folder)
        self.jobs_folder = self.folder / "jobs"
        self.workers = int(workers)
        self.stylizer_options = dict(stylizer_options or {})
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
        self.ready = threading.Event()  # set once every worker has its Stylizer (or failed)
        self._loaded = 0

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
        queued ones queued again, and one that was running when the server stopped is failed
        (it may have been what stopped it)."""
        if not self.jobs_folder.is_dir():
            return
        found = []
        for path in self.jobs_folder.glob("*/job.json"):
            if not ID.match(path.parent.name):
                continue
            try:
                job = Job.from_record(path.parent, json.loads(path.read_text()))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                self.log(f"styleflow serve: skipping {path}: {one_line(exc)[:200]}")
                continue
            if job.id != path.parent.name:
                continue
            if job.status == "running":
                job.status, job.error, job.finished = "failed", STOPPED, time.time()
                self._save(job)
            found.append(job)
        for job in sorted(found, key=lambda j: j.created):
            self._jobs[job.id] = job
            if job.status == "queued":
                self._pending.put(job)

    def create(self, fields: dict, uploads: Sequence[Upload]) -> Job:
        """A new queued job from the page's form: `fields` (method, width, iterations, the
        weights; blank for a default) and its files. Every upload is read as an image here,
        so a file that is not one is refused at once with the library's one line. Raises
        StyleflowError; leaves no folder behind when it does."""
        method = str(fields.get("method") or "transfer")
        if method not in METHODS:
            raise StyleflowError(f"method: must be one of {', '.join(METHODS)}, not "
                                 f"'{method[:40]}'")
        limits = self.limits
        options = {
            "iterations": _number(fields, "iterations", int, 1, limits.max_iterations,
                                  DEFAULTS[method]["iterations"]),
            "width": _number(fields, "width", int, images.MIN_INPUT_SIDE, limits.max_width,
                             min(PHOTO_DEFAULTS["width"], limits.max_width)),
        }
        for name in WEIGHTS[method]:
            value = _number(fields, name, float, 0)
            if value is not None:
                options[name] = value
        by_role: dict[str, list[Upload]] = {}
        for upload in uploads:
            if upload.filename or upload.data:  # an empty file input sends an empty part
                by_role.setdefault(upload.role, []).append(upload)
        unknown = set(by_role) - {"content", "style", "content_mask", "style_mask"}
        if unknown:
            raise StyleflowError(f"unknown file field '{sorted(unknown)[0][:40]}'")
        if len(by_role.get("content", [])) != 1:
            raise StyleflowError("content: give one content image")
        if not by_role.get("style"):
            raise StyleflowError("style: give at least one style image")
        if method != "style" and len(by_role["style"]) > 1:
            raise StyleflowError(f"style: the {method} method takes one style image; choose "
                                 "the style method to blend several")
        if method != "photo" and ("content_mask" in by_role or "style_mask" in by_role):
            raise StyleflowError("content_mask/style_mask: masks are for the photo method")
        for role in ("content_mask", "style_mask"):
            if len(by_role.get(role, [])) > 1:
                raise StyleflowError(f"{role}: give one mask")
        job_id = secrets.token_hex(6)
        folder = self.jobs_folder / job_id
        try:
            inputs, names = self._store(folder, by_role)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        job = Job(job_id, folder, method, options, inputs, names)
        self._save(job)
        with self._lock:
            self._jobs[job_id] = job
        self._pending.put(job)
        return job

    def _store(self, folder: Path, by_role: dict) -> tuple[dict, dict]:
        """Write the uploads into the job's folder and read each as an image (refusing what
        is not one, or is too large); (role -> file names, role -> uploaded names)."""
        inputs: dict = {}
        names: dict = {}
        what = {"content": "content image", "style": "style image",
                "content_mask": "content mask", "style_mask": "style mask"}
        for role in ("content", "style", "content_mask", "style_mask"):
            for k, upload in enumerate(by_role.get(role, [])):
                stored = f"{role}-{k + 1}.upload" if role == "style" else f"{role}.upload"
                shown = _shown_name(upload.filename)
                path = folder / stored
                files.write_atomically(path, lambda handle, data=upload.data: handle.write(data))
                label = f"{what[role]}{f' {k + 1}' if role == 'style' and len(by_role[role]) > 1 else ''}"
                try:
                    self._check_image(path, label)
                except StyleflowError as exc:
                    # The message names the server's copy: name the person's file instead.
                    raise StyleflowError(str(exc).replace(str(path), shown)) from None
                if role == "style":
                    inputs.setdefault(role, []).append(stored)
                    names.setdefault(role, []).append(shown)
                else:
                    inputs[role], names[role] = stored, shown
        return inputs, names

    def _check_image(self, path: Path, label: str) -> None:
        """Refuse an image with more pixels than the limit from its header (before decoding
        it), then read it as a run would (load_image: not an image, corrupt, too small)."""
        from PIL import Image

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as img:
                    w, h = img.size
        except Exception:  # noqa: BLE001 - load_image below says what is wrong, in one line
            w = h = 0
        if w * h > self.limits.max_pixels:
            raise StyleflowError(f"{label} '{path}': image is too large ({w}x{h} px, more than "
                                 f"{self.limits.max_pixels} pixels); downscale it first")
        images.load_image(path, label)

    def cancel(self, job: Job) -> None:
        """Cancel `job`: a queued job at once, a running one at its next evaluation (within
        about a second at the sizes a page asks for); a finished job stays as it is."""
        with job.lock:
            if job.status in FINAL:
                return
            job.cancel_requested.set()
            queued = job.status == "queued"
            if queued:  # under the lock: a worker taking the job now finds it cancelled
                job.status, job.finished = "cancelled", time.time()
                job._changed()
        if queued:
            self._save(job)
            self.log(f"styleflow serve: job {job.id} cancelled while queued")

    def _save(self, job: Job) -> None:
        data = json.dumps(job.record(), indent=1).encode()
        files.write_atomically(job.folder / "job.json", lambda handle: handle.write(data))

    # -- the workers -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the workers; each loads its Stylizer at once, so the first job need not."""
        for index in range(self.workers):
            thread = threading.Thread(target=self._work, args=(index,), daemon=True,
                                      name=f"styleflow-serve-{index + 1}")
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the workers: a running job is stopped at its next evaluation and recorded as
        failed (the server, not a person, stopped it); queued jobs stay queued in their
        folders for the next server."""
        self.closing.set()
        self.stopping.set()
        with self._lock:
            running = list(self._running.values())
        for job in running:
            job.stop_reason = STOPPED
            job.cancel_requested.set()
        for _ in self._threads:
            self._pending.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _stylizer(self):
        from ..api import Stylizer

        return Stylizer(**self.stylizer_options, notes=lambda note: self.log(
            f"styleflow serve: {one_line(note)}"))

    def _work(self, index: int) -> None:
        stylizer, broken = None, None
        try:
            stylizer = self._stylizer()
        except StyleflowError as exc:
            broken = one_line(exc)
            self.log(f"styleflow serve: error: {broken}")
        except Exception as exc:  # noqa: BLE001 - every job will say so; the server goes on
            broken = one_line(f"cannot load the network: {type(exc).__name__}: {exc}")[:500]
            self.log(f"styleflow serve: error: {broken}")
        with self._lock:
            self._loaded += 1
            if self._loaded == self.workers:
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
                self._save(job)
                if broken:
                    self._end(job, "failed", broken)
                else:
                    self._run(stylizer, job)
            except Exception as exc:  # noqa: BLE001 - a failing job never stops the server
                self._end(job, "failed", one_line(f"internal error: {type(exc).__name__}: "
                                                  f"{exc}")[:500])
            finally:
                with self._lock:
                    self._running.pop(index, None)

    def _end(self, job: Job, status: str, error: str | None = None,
             has_result: bool = False) -> None:
        job.finish(status, error, has_result)
        try:
            self._save(job)
        except StyleflowError as exc:
            self.log(f"styleflow serve: job {job.id}: {one_line(exc)}")
        took = f" in {job.finished - job.started:.1f} s" if job.started else ""
        self.log(f"styleflow serve: job {job.id} {status}{took}"
                 f"{f': {error}' if error else ''}")

    def _run(self, stylizer, job: Job) -> None:
        """Run `job` on `stylizer`; record its end (done, cancelled, failed) and its result."""
        stop = job.cancel_requested

        def on_evaluation(count: int, loss: float) -> None:
            job.evaluated(count, loss)
            if stop.is_set():
                raise Cancelled()

        run = None
        try:
            run = self._prepare(stylizer, job, on_evaluation)
            job.size = run.size
            if stop.is_set():
                raise Cancelled()
            seconds: list[float] = []
            shown = 0.0
            for it in run:
                seconds = (seconds + [it.seconds])[-5:]
                now = time.monotonic()
                last = it.iteration == it.iterations
                preview = None
                if last or now - shown >= PREVIEW_SECONDS:
                    preview, shown = _png(it.array), now
                rate = len(seconds) / sum(seconds) if sum(seconds) > 0 else None
                job.iterated(it.iteration, rate, preview)
                if stop.is_set():
                    raise Cancelled()
                stopped = getattr(run, "stopped", None)
                if stopped and job.note is None:
                    with job.lock:
                        job.note = (f"L-BFGS stopped after iteration {stopped[0]}: "
                                    f"{stopped[1]}; the later iterations repeat its image")
        except Cancelled:
            kept = run is not None and self._keep(job, run.result())
            if job.stop_reason:
                self._end(job, "failed", job.stop_reason, kept)
            else:
                self._end(job, "cancelled", None, kept)
            return
        except StyleflowError as exc:
            self._end(job, "failed", self._worded(job, exc))
            return
        except Exception as exc:
            exhausted = exhaustion(exc)
            if exhausted is None:
                raise
            self._end(job, "failed", self._worded(job, exhausted))
            return
        self._end(job, "done", None, self._keep(job, run.result()))

    def _prepare(self, stylizer, job: Job, on_evaluation):
        """The job's Run: the method's iter_* with the job's files and options."""
        folder, inputs = job.folder, job.inputs
        options = dict(job.options, on_evaluation=on_evaluation)
        content = folder / inputs["content"]
        styles = [folder / name for name in inputs["style"]]
        if job.method == "style":
            return stylizer.iter_stylize(content, styles, **options)
        if job.method == "photo":
            for role in ("content_mask", "style_mask"):
                if role in inputs:
                    options[role] = folder / inputs[role]
            return stylizer.iter_photo(content, styles[0], **options)
        return stylizer.iter_transfer(content, styles[0], **options)

    @staticmethod
    def _worded(job: Job, exc: StyleflowError) -> str:
        """A library message with its parameters named as the page names them (the page has
        a width and no height) and the server's copies of the uploads named as uploaded."""
        text = exc.worded({"width": "width", "iterations": "iterations"})
        for role, stored in job.inputs.items():
            shown = job.names[role]
            for one, name in (zip(stored, shown) if role == "style" else [(stored, shown)]):
                text = text.replace(str(job.folder / one), name)
        return one_line(text)

    @staticmethod
    def _keep(job: Job, result) -> bool:
        """Write `result` (None: nothing was evaluated) as result.png and result.tif."""
        if result is None:
            return False
        result.save(job.folder / "result.tif")
        result.save(job.folder / "result.png")
        return True


def _png(array) -> bytes:
    """A uint8 RGB array as PNG bytes, fast rather than small (a preview)."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG", compress_level=1)
    return out.getvalue()
