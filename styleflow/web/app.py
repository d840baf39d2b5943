"""The HTTP side of `styleflow serve` (Starlette): the page, its three static files, and the
JSON API behind it — post a job, read its state, follow it as Server-Sent Events, cancel it,
fetch its preview and results (docs/web.md).

Only named files are served: the page's own (a fixed table, read from the package) and a
job's preview and results (fixed names inside a folder found by the job's id), so no request
path reaches any other file. Errors are one line of JSON, `{"error": "..."}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ipaddress
import json
import time
from importlib import resources
from typing import Collection
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..errors import StyleflowError
from .form import DEFAULTS, WEIGHTS, Upload
from .job import FINAL, LAST_PREVIEW, METHODS, RESULTS, StorageError, one_line
from .queue import JobQueue

# The page's files: name -> media type. Nothing else under static/ is served.
STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "style.css": "text/css; charset=utf-8"}
# How often an event stream looks for a change (a cancel shows within this), and how long a
# quiet stream waits before a comment that keeps proxies from closing it.
POLL_SECONDS = 0.1
KEEPALIVE_SECONDS = 15.0
# Names of this machine a request may always be addressed to (and any loopback address).
LOOPBACK_NAMES = frozenset({"localhost", "::1"})
# The page runs no inline script and loads nothing from elsewhere.
HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
                                      "frame-ancestors 'none'"}


def _static(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": one_line(message)}, status_code=status, headers=HEADERS)


def create_app(jobs: JobQueue, hosts: Collection[str] | None = None) -> Starlette:
    """The app serving `jobs`: starts its engine's workers when the server starts, stops them
    (a running job recorded as stopped by the server) when it stops. `hosts`: the names a
    request may be addressed to (its Host header, any loopback address besides), or None for
    any."""
    pages = {name: _static(name) for name in STATIC}  # read once: the package may move
    limits = jobs.limits

    def page(_request: Request) -> Response:
        return Response(pages["index.html"], media_type=STATIC["index.html"], headers=HEADERS)

    def job_page(request: Request) -> Response:
        if jobs.get(request.path_params["job_id"]) is None:
            return _error(404, "no such job")
        return page(request)

    def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC or name == "index.html":
            return _error(404, "not found")
        return Response(pages[name], media_type=STATIC[name],
                        headers={**HEADERS, "Cache-Control": "no-cache"})

    def config(_request: Request) -> JSONResponse:
        return JSONResponse({
            "methods": {m: {"iterations": DEFAULTS[m]["iterations"],
                            "weights": {w: DEFAULTS[m][w] for w in WEIGHTS[m]}}
                        for m in METHODS},
            "max_width": limits.max_width, "max_bytes": limits.max_bytes,
            "max_pixels": limits.max_pixels, "max_iterations": limits.max_iterations,
        }, headers=HEADERS)

    def listing(_request: Request) -> JSONResponse:
        return JSONResponse({"jobs": [jobs.state(job) for job in jobs.all()]}, headers=HEADERS)

    async def post(request: Request) -> JSONResponse:
        refused = _cross_origin(request)
        if refused:
            return _error(403, refused)
        length = request.headers.get("content-length")
        if length is None or not length.isdigit():
            return _error(411, "the upload must say its length (Content-Length)")
        if int(length) > limits.max_bytes:
            return _error(413, f"the upload is {int(length) / 2 ** 20:.1f} MB; the limit is "
                               f"{limits.max_bytes / 2 ** 20:.1f} MB")
        try:
            async with request.form(max_files=16, max_fields=32,
                                    max_part_size=64 * 1024) as form:
                fields, uploads = {}, []
                for key, value in form.multi_items():
                    if isinstance(value, UploadFile):
                        uploads.append(Upload(key, value.filename or "", await value.read()))
                    elif key in fields:  # which one was meant?
                        return _error(400, f"{key}: given more than once")
                    else:
                        fields[key] = value
                job = await run_in_threadpool(jobs.create, fields, uploads)
        except (MultiPartException, HTTPException) as exc:  # Starlette's form parser
            detail = getattr(exc, "message", None) or getattr(exc, "detail", "")
            return _error(400, f"the upload is not a form the page sends ({detail})")
        except ClientDisconnect:  # the client went away mid-upload: no one to answer
            return _error(400, "the upload was cut off")
        except StorageError as exc:  # the server's disk, not the request
            return _error(507, str(exc))
        except StyleflowError as exc:
            return _error(400, str(exc))
        return JSONResponse(jobs.state(job), status_code=201, headers=HEADERS)

    def found(request: Request):
        return jobs.get(request.path_params["job_id"])

    def state(request: Request) -> JSONResponse:
        job = found(request)
        if job is None:
            return _error(404, "no such job")
        return JSONResponse(jobs.state(job), headers=HEADERS)

    def changed(request: Request):
        """The job a request that changes one names, or the refusal to answer instead (another
        site's page: 403; no such job: 404)."""
        refused = _cross_origin(request)
        if refused:
            return _error(403, refused)
        job = found(request)
        return _error(404, "no such job") if job is None else job

    async def cancel(request: Request) -> JSONResponse:
        job = changed(request)
        if isinstance(job, Response):
            return job
        try:
            await run_in_threadpool(jobs.cancel, job)
        except StorageError as exc:
            return _error(507, str(exc))
        return JSONResponse(jobs.state(job), status_code=202, headers=HEADERS)

    async def go_on(request: Request) -> JSONResponse:
        job = changed(request)
        if isinstance(job, Response):
            return job
        try:
            new = await run_in_threadpool(jobs.continue_job, job)
        except StorageError as exc:
            return _error(507, str(exc))
        except StyleflowError as exc:
            return _error(409, str(exc))
        return JSONResponse(jobs.state(new), status_code=201, headers=HEADERS)

    def events(request: Request) -> Response:
        job = found(request)
        if job is None:
            return _error(404, "no such job")

        async def stream():
            seen, quiet_since = None, time.monotonic()
            yield "retry: 1000\n\n"  # reconnect within a second after a server restart
            while not jobs.closing.is_set():
                # A queued job's place changes as the jobs ahead start, not the job itself.
                now_seen = job.version, jobs.position(job)
                if now_seen != seen:
                    seen = now_seen
                    now = jobs.state(job)
                    yield f"event: state\ndata: {json.dumps(now)}\n\n"
                    quiet_since = time.monotonic()
                    if now["status"] in FINAL:
                        return
                elif time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
                    yield ": still here\n\n"
                    quiet_since = time.monotonic()
                await asyncio.sleep(POLL_SECONDS)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={**HEADERS, "Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})

    def preview(request: Request) -> Response:
        job = found(request)
        if job is None:
            return _error(404, "no such job")
        with job.lock:
            png = job.preview
        if png is not None:
            return Response(png, media_type="image/png",
                            headers={**HEADERS, "Cache-Control": "no-store"})
        kept = job.picture()
        if kept is not None:
            return _file(job, kept, {**HEADERS, "Cache-Control": "no-store"})
        return _error(404, "no picture: the job has ended and none is kept" if job.status in FINAL
                      else "no picture yet")

    def result(request: Request) -> Response:
        job = found(request)
        name = request.path_params["name"]
        if job is None or name not in RESULTS:
            return _error(404, "not found")
        if not job.has_result:
            return _error(404, "this job has no result")
        return _file(job, name, HEADERS, filename=f"styleflow-{job.id}{name[len('result'):]}")

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        jobs.start()
        try:
            yield
        finally:
            await run_in_threadpool(jobs.stop)

    routes = [
        Route("/", page),
        Route("/jobs/{job_id}", job_page),
        Route("/static/{name}", static),
        Route("/api/config", config),
        # One route per path, so that a 405 lists every method the path takes (Allow).
        Route("/api/jobs", by_method(GET=listing, POST=post), methods=["GET", "POST"]),
        Route("/api/jobs/{job_id}", by_method(GET=state, DELETE=cancel),
              methods=["GET", "DELETE"]),
        Route("/api/jobs/{job_id}/events", events),
        Route("/api/jobs/{job_id}/continue", go_on, methods=["POST"]),
        Route("/api/jobs/{job_id}/preview.png", preview),
        Route("/api/jobs/{job_id}/{name}", result),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    middleware=[Middleware(HostCheck, hosts=hosts)],
                    exception_handlers={HTTPException: _http_error})
    app.router.redirect_slashes = False  # exact paths only: nothing else is ever answered 3xx
    return app


def by_method(**handlers):
    """One endpoint calling the handler named by the request's method (HEAD as GET); a plain
    function runs in the threadpool, as Starlette runs one given as an endpoint."""
    async def endpoint(request: Request) -> Response:
        handler = handlers["GET" if request.method == "HEAD" else request.method]
        if inspect.iscoroutinefunction(handler):
            return await handler(request)
        return await run_in_threadpool(handler, request)

    return endpoint


def _file(job, name: str, headers: dict, filename: str | None = None) -> Response:
    """A file of the job's folder, or a 404 when it has gone (removed by hand, or never
    written when the disk was full)."""
    path = job.folder / name
    if not path.is_file():
        return _error(404, f"this job's {name} is not there")
    return FileResponse(path, media_type={**RESULTS, LAST_PREVIEW: "image/png"}[name],
                        filename=filename, headers=headers)


def _http_error(_request: Request, exc: HTTPException) -> Response:
    """Starlette's own refusals (no such path, a method a path does not take) as our JSON
    errors, with the same headers."""
    response = _error(exc.status_code, str(exc.detail).lower())
    response.headers.update(exc.headers or {})
    return response


def _bare(host: str) -> str:
    """A host name or address as compared: lower case, without a trailing dot (a fully
    qualified name is the same name) or an IPv6 address's brackets."""
    return host.lower().removesuffix(".").strip("[]")


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address) is this machine's loopback."""
    host = _bare(host)
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name, not an address
        return False


class HostCheck:
    """Refuses requests addressed (Host header) to a name this server does not answer to: a
    page of another site whose name its owner points at 127.0.0.1 (DNS rebinding) would
    otherwise be same-origin with a server listening on loopback. `hosts` None: any. Names
    are compared as `_bare` gives them."""

    def __init__(self, app, hosts: Collection[str] | None):
        self.app = app
        self.hosts = None if hosts is None else {_bare(h) for h in hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.hosts is not None:
            host = Headers(scope=scope).get("host", "")
            try:
                name = _bare(urlsplit(f"//{host}").hostname or "")
            except ValueError:
                name = ""
            if not (name and (name in self.hosts or is_loopback(name))):
                response = _error(421, f"this server does not answer to "
                                       f"'{one_line(host)[:60]}'; use its own address")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _cross_origin(request: Request) -> str | None:
    """Why a state-changing request from another site's page is refused (None if it is not
    one): a form post needs no CORS preflight, so any page a person visits could otherwise
    start jobs here."""
    origin = request.headers.get("origin")
    if origin is None:  # not sent by a browser for same-origin GETs, nor by scripts
        return None
    host = request.headers.get("host", "")
    if urlsplit(origin).netloc != host:
        return "requests from other sites' pages are refused"
    return None
