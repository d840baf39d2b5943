"""`styleflow serve` as a person and a script use it: a browser (Playwright driving Debian's
chromium) on the page of a server running in a child process, and plain HTTP for what a
browser would not send.

The server runs the shipped lite weights at 64-96 px so each iteration takes a fraction of a
second. Set STYLEFLOW_README_SHOTS=1 to also write the README's screenshot
(images/readme/serve.png) mid-run.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import numpy as np
import pytest
import tifffile
from PIL import Image

from conftest import ROOT, SESSION_TMP, alive, child, cli_env, default_signals, descendants
from styleflow import StyleflowError
from styleflow.io import images

pytestmark = pytest.mark.slow

CONTENT = ROOT / "images" / "base1.jpg"
STYLE = ROOT / "images" / "ref7.jpg"
SHOT = ROOT / "images" / "readme" / "serve.png"
# Waiting for a job to finish: the first one also waits for the worker to load TensorFlow, on
# a machine other jobs may share.
FINISH_MS = 180_000


def _chromium() -> str | None:
    return shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists()
                                        else None)


def _playwright():
    """Playwright's sync API, or a skip (a failure in CI, which installs both)."""
    try:
        from playwright import sync_api
    except ImportError:
        sync_api = None
    missing = "playwright" if sync_api is None else "chromium" if _chromium() is None else None
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing} is not installed (.ci/run installs it)")
        pytest.skip(f"{missing} is not installed (pip install -r requirements-dev.txt; "
                    "apt-get install chromium)")
    return sync_api


@contextlib.contextmanager
def serving(out: Path, log: Path, *options: str, env: dict | None = None, **popen):
    """A `styleflow serve` child on a free port with `options`, its stderr in `log`; yields
    (process, base URL). Killed when the block ends, whatever happened."""
    with open(log, "w") as err, child([sys.executable, "-m", "styleflow", "serve", "--port", "0",
                                       "--out", str(out), "--weights", "lite", *options],
                                      env=env, stdout=subprocess.PIPE, stderr=err,
                                      text=True, **popen) as proc:
        line = proc.stdout.readline()  # the URL line, printed once the socket listens
        found = re.search(r"http://\S+/", line)
        assert found, f"no URL in {line!r}; stderr: {log.read_text()}"
        yield proc, found.group(0)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    with serving(folder / "out", folder / "server.log") as (proc, url):
        yield proc, url, folder / "server.log"
    assert "Traceback" not in (folder / "server.log").read_text()


@pytest.fixture(scope="module")
def browser():
    sync_api = _playwright()
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=_chromium())
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1100, "height": 820}, accept_downloads=True)
    try:
        yield context.new_page()
    finally:
        context.close()


def start_job(page, url: str, *, method="transfer", width=64, iterations=3, content=CONTENT,
              styles=(STYLE,), load=True) -> str:
    """Fill the form as a person would (on a freshly loaded page unless `load` is False),
    press Start; the job's id (from the page's URL)."""
    if load:
        page.goto(url)
    page.get_by_test_id("method").select_option(method)
    page.get_by_test_id("content").set_input_files(str(content))
    page.get_by_test_id("style").set_input_files([str(s) for s in styles])
    page.get_by_test_id("width").fill(str(width))
    page.get_by_test_id("iterations").fill(str(iterations))
    page.get_by_test_id("start").click()
    page.wait_for_url(re.compile(r"/jobs/[0-9a-f]{12}$"))
    return page.url.rsplit("/", 1)[1]


def wait_status(page, status: str, timeout_ms: float = FINISH_MS) -> None:
    page.wait_for_function(
        "s => document.querySelector('[data-testid=status]').dataset.status === s", arg=status,
        timeout=timeout_ms)


def api(url: str, path: str, method: str = "GET") -> tuple[int, bytes]:
    """(status, body) of a request sent with its path exactly as given."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def job_state(url: str, job_id: str) -> dict:
    status, body = api(url, f"/api/jobs/{job_id}")
    assert status == 200, body
    return json.loads(body)


def watch_previews(page) -> None:
    """Record, in the page, every change of the preview's picture with the status shown then."""
    page.evaluate("""() => {
        window.previews = [];
        const img = document.querySelector('[data-testid=preview]');
        const status = document.querySelector('[data-testid=status]');
        new MutationObserver(() => window.previews.push([img.getAttribute('src'),
                                                         status.dataset.status]))
            .observe(img, {attributes: true, attributeFilter: ['src']});
    }""")


def cancel_in_time(page, url: str, job_id: str) -> dict:
    """Press Cancel on the page of a running job (of 5000 iterations); the page must say
    cancelled within 2 s, and the job keep its best image so far. The job's state."""
    began = time.monotonic()
    page.get_by_test_id("cancel").click()
    wait_status(page, "cancelled", 5_000)
    took = time.monotonic() - began
    assert took <= 2.0, took
    assert page.get_by_test_id("status").text_content().startswith("cancelled at iteration ")
    state = job_state(url, job_id)
    assert state["status"] == "cancelled" and 0 < state["iteration"] < 5000
    assert state["downloads"] is not None  # the best image so far is kept
    return state


def downloaded_png_width(page) -> int:
    """Click the page's PNG download; the width of the PNG it gives."""
    with page.expect_download() as download:
        page.get_by_test_id("download").click()
    with Image.open(download.value.path()) as picture:
        assert picture.format == "PNG"
        return picture.width


def test_the_preview_changes_live_and_a_second_page_follows_the_same_job(server, page, browser):
    _, url, _ = server
    page.goto(url)
    watch_previews(page)  # survives pushState: the page is not reloaded when a job starts
    job_id = start_job(page, url, width=96 if os.environ.get("STYLEFLOW_README_SHOTS") else 64,
                       iterations=8, load=False)
    page.wait_for_function("() => document.querySelector('[data-testid=status]')"
                           ".textContent.startsWith('running: iteration')", timeout=FINISH_MS)
    # A second browser window on the job's own URL sees the same run, live.
    other = browser.new_context().new_page()
    try:
        other.goto(f"{url}jobs/{job_id}")
        other.wait_for_function("() => /^(running: iteration|done)/.test("
                                "document.querySelector('[data-testid=status]').textContent)",
                                timeout=10_000)
        if os.environ.get("STYLEFLOW_README_SHOTS"):
            page.wait_for_function("() => /iteration [3-9]/.test(document.querySelector("
                                   "'[data-testid=status]').textContent)", timeout=FINISH_MS)
            page.screenshot(path=str(SHOT))
        wait_status(page, "done")
        wait_status(other, "done", 10_000)
        assert other.get_by_test_id("download").get_attribute("href") == \
            page.get_by_test_id("download").get_attribute("href")
    finally:
        other.context.close()
    changes = page.evaluate("window.previews")
    while_running = {src for src, status in changes if status == "running"}
    assert len(while_running) >= 3, changes
    assert page.get_by_test_id("status").text_content() == "done: iteration 8 of 8"
    # The loss curve was drawn: the canvas is not blank.
    drawn = page.evaluate("""() => {
        const c = document.querySelector('[data-testid=curve]');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let red = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i] > 150 && d[i + 1] < 100) red++;
        return red;
    }""")
    assert drawn > 20


def test_cancel_acts_within_two_seconds_and_the_next_job_downloads_at_its_width(server, page):
    _, url, _ = server
    # Adam never ends early, so the job is still running when it is cancelled.
    job_id = start_job(page, url, method="style", width=64, iterations=5000)
    page.wait_for_function("() => /^running: iteration [1-9]/.test(document.querySelector("
                           "'[data-testid=status]').textContent)", timeout=FINISH_MS)
    stopped = cancel_in_time(page, url, job_id)
    # Continue: a new job from the kept picture, for the iterations left, which runs (and is
    # cancelled in turn, to keep this short).
    page.get_by_test_id("continue").click()
    page.wait_for_url(re.compile(r"/jobs/(?!" + job_id + r")[0-9a-f]{12}$"))
    continued = page.url.rsplit("/", 1)[1]
    page.wait_for_function("() => /^running: iteration [1-9]/.test(document.querySelector("
                           "'[data-testid=status]').textContent)", timeout=FINISH_MS)
    state = job_state(url, continued)
    assert state["iterations"] == 5000 - stopped["iteration"]
    assert state["inputs"]["start"] == f"job {job_id}'s picture"
    assert state["options"]["width"] == 64
    cancel_in_time(page, url, continued)

    start_job(page, url, method="transfer", width=72, iterations=2)
    wait_status(page, "done")
    assert downloaded_png_width(page) == 72
    tiff = page.request.get(urljoin(page.url, page.get_by_test_id("download-tiff")
                                    .get_attribute("href")))
    array = tifffile.imread(io.BytesIO(tiff.body()))
    assert array.dtype == np.uint16 and array.shape[1] == 72 and array.shape[2] == 3


def test_a_file_that_is_not_an_image_is_refused_on_the_page_and_the_server_goes_on(
        server, page, tmp_path):
    proc, url, _ = server
    fake = tmp_path / "holiday.png"
    fake.write_text("not a picture at all\n")
    with pytest.raises(StyleflowError) as said:  # what the command lines print for it
        images.load_image(fake, "content image")
    page.goto(url)
    before = page.get_by_test_id("status").text_content()
    page.get_by_test_id("content").set_input_files(str(fake))
    page.get_by_test_id("style").set_input_files(str(STYLE))
    page.get_by_test_id("start").click()
    error = page.get_by_test_id("error")
    page.wait_for_function("() => document.querySelector('[data-testid=error]').textContent")
    assert error.text_content() == str(said.value).replace(str(fake), fake.name)
    assert page.get_by_test_id("status").text_content() == before  # no job was made
    assert proc.poll() is None
    # The refusal goes once the form changes (it stayed, naming a file no longer chosen).
    page.get_by_test_id("width").fill("80")
    assert error.text_content() == ""
    start_job(page, url, width=64, iterations=1)
    wait_status(page, "done")
    assert error.text_content() == ""


def test_two_jobs_from_two_pages_both_finish_in_order(server, browser):
    _, url, _ = server
    pages = [browser.new_context().new_page() for _ in range(2)]
    try:
        ids = [start_job(p, url, width=64, iterations=2) for p in pages]
        for p in pages:
            wait_status(p, "done")
        first, second = (job_state(url, job_id) for job_id in ids)
        assert first["created"] < second["created"]
        assert first["finished"] <= second["started"]  # one worker: one after the other
        listed = [job["id"] for job in json.loads(api(url, "/api/jobs")[1])["jobs"]]
        assert listed.index(ids[1]) < listed.index(ids[0])  # newest first
        # Each page's list follows the other's job to its end (the first page's list was
        # last drawn when its own job ended, and went on saying the other was running).
        for p in pages:
            p.wait_for_function(
                "id => [...document.querySelectorAll('[data-testid=jobs] a')].some(a => "
                "a.dataset.job === id && a.nextElementSibling.textContent === 'done')",
                arg=ids[1], timeout=10_000)
    finally:
        for p in pages:
            p.context.close()


def test_the_server_serves_its_own_files_only(server):
    _, url, _ = server
    assert api(url, "/static/app.js")[0] == 200
    listed = json.loads(api(url, "/api/jobs")[1])["jobs"]
    job_id = listed[0]["id"] if listed else "0123456789ab"
    for path in ("/static/../pyproject.toml", "/static/..%2F..%2Fpyproject.toml",
                 "/static/%2e%2e/%2e%2e/pyproject.toml", "/static/index.html/../../README.md",
                 "/static/..%5c..%5cpyproject.toml", "/../../../../etc/passwd",
                 "/jobs/..%2F..%2Fetc%2Fpasswd", f"/api/jobs/{job_id}/job.json",
                 f"/api/jobs/{job_id}/content.upload", f"/api/jobs/{job_id}/..%2Fjob.json",
                 f"/api/jobs/{job_id}/%2e%2e%2f%2e%2e%2fREADME.md", "/api/jobs/..%2F..%2F",
                 "/api/jobs/0123456789ab/result.png"):
        status, body = api(url, path)
        assert status == 404, (path, status, body[:200])
        assert b"root:" not in body and b"[project]" not in body and b"styleflow" not in body


def test_results_stay_in_out_and_are_listed_after_a_restart(page, tmp_path):
    out = tmp_path / "out"
    with serving(out, tmp_path / "first.log") as (proc, url):
        job_id = start_job(page, url, width=64, iterations=1)
        wait_status(page, "done")
        assert page.get_by_test_id("connection").is_hidden()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
        # The open page says it has lost the server, rather than going on as if all were well.
        page.get_by_test_id("connection").wait_for(state="visible", timeout=10_000)
        assert "lost contact with the server" in page.get_by_test_id("connection").text_content()
    assert "Traceback" not in (tmp_path / "first.log").read_text()
    assert (out / "jobs" / job_id / "result.png").is_file()
    with serving(out, tmp_path / "second.log") as (proc, url):
        page.goto(url)
        link = page.locator(f"[data-testid=jobs] a[data-job='{job_id}']")
        link.wait_for(timeout=10_000)
        link.click()
        wait_status(page, "done", 10_000)
        href = page.get_by_test_id("download").get_attribute("href")
        with Image.open(io.BytesIO(page.request.get(urljoin(page.url, href)).body())) as picture:
            assert picture.width == 64


@pytest.mark.parametrize("how", ["ctrl-c", "kill"])
def test_no_worker_process_outlives_its_server(page, tmp_path, how):
    """The local engine's workers are child processes of the server (web/local_engine.py). A
    Ctrl-C at a terminal reaches the whole process group: the server stops the running job and
    its workers itself, exits 130, and nothing prints a traceback. A server killed outright
    cannot stop them: its worker process leaves at once, mid-job, rather than computing on
    until it has something to send (and then dying of the broken pipe with a traceback). The
    server runs in a session of its own, so the group's SIGINT reaches nothing else."""
    log = tmp_path / "server.log"
    with serving(tmp_path / "out", log, start_new_session=True) as (proc, url):
        job_id = start_job(page, url, method="style", width=64, iterations=5000)
        deadline = time.monotonic() + FINISH_MS / 1000
        while job_state(url, job_id)["iteration"] < 2:
            assert time.monotonic() < deadline, "the job did not start"
            time.sleep(0.1)
        below = descendants(proc.pid)
        assert below
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
            assert proc.wait(timeout=60) == 130
        else:
            proc.kill()
            proc.wait(timeout=30)
        deadline = time.monotonic() + 15
        while any(alive(pid) for pid in below):
            assert time.monotonic() < deadline, [pid for pid in below if alive(pid)]
            time.sleep(0.1)
    assert "Traceback" not in log.read_text()


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except (FileNotFoundError, ProcessLookupError):  # ended meanwhile
        return ""


def test_a_ctrl_c_while_the_worker_loads_the_network_stops_at_once_and_quietly(tmp_path):
    """A Ctrl-C in a server's first seconds, while its worker process is still starting or
    loading the network: no traceback from the worker (which once was born with Ctrl-C open,
    multiprocessing's resource tracker having unblocked it), no 'error:' line (nothing
    failed), exit 130 without waiting for the load (it waited 4.5-5 s), and no worker left."""
    log = tmp_path / "server.log"
    with serving(tmp_path / "out", log, start_new_session=True) as (proc, url):
        deadline = time.monotonic() + 30
        while not any("spawn_main" in _command_line(pid) for pid in descendants(proc.pid)):
            assert time.monotonic() < deadline, "no worker process started"
            time.sleep(0.02)
        below = descendants(proc.pid)
        began = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 130
        took = time.monotonic() - began
        deadline = time.monotonic() + 15
        while any(alive(pid) for pid in below):
            assert time.monotonic() < deadline, [pid for pid in below if alive(pid)]
            time.sleep(0.1)
    text = log.read_text()
    assert "Traceback" not in text and "error:" not in text, text
    assert text.strip().splitlines()[-1] == "styleflow serve: interrupted"
    assert took < 3, took


def test_on_ray_actors_the_page_shows_previews_cancels_and_downloads(page, tmp_path):
    """--engine ray --workers 1 on a local Ray that the server starts (and stops on Ctrl-C):
    the page follows a job run by a Ray actor as it follows a local one — a changing preview,
    a cancel acted on mid-run, a result of the asked width — and the results stay in --out
    for the next server, whichever its engine."""
    pytest.importorskip("ray")
    out, log = tmp_path / "out", tmp_path / "ray.log"
    ray_tmp = {"RAY_TMPDIR": str(Path(SESSION_TMP) / "ray-serve")}
    with serving(out, log, "--engine", "ray", "--workers", "1", env=ray_tmp) as (proc, url):
        page.goto(url)
        watch_previews(page)
        # Adam never ends early, so the job is still running when it is cancelled.
        first = start_job(page, url, method="style", width=64, iterations=5000, load=False)
        page.wait_for_function("() => window.previews.filter(([, s]) => s === 'running')"
                               ".length >= 3", timeout=FINISH_MS)
        state = cancel_in_time(page, url, first)
        changes = page.evaluate("window.previews")
        assert len({src for src, status in changes if status == "running"}) >= 3, changes
        assert state["rate"] > 0 and len(state["curve"]) >= 3  # the loss curve and the rate
        second = start_job(page, url, method="transfer", width=72, iterations=2)
        wait_status(page, "done")
        assert downloaded_png_width(page) == 72
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    said = log.read_text()
    assert "Traceback" not in said
    assert "styleflow serve: ray: 1 CPU actor(s)" in said
    # The server wrote what the actor sent back: the result is in --out, read by a new server.
    with serving(out, tmp_path / "local.log") as (proc, url):
        listed = {job["id"]: job for job in json.loads(api(url, "/api/jobs")[1])["jobs"]}
        assert listed[first]["status"] == "cancelled" and listed[second]["status"] == "done"
        status, body = api(url, f"/api/jobs/{second}/result.png")
        assert status == 200
        with Image.open(io.BytesIO(body)) as picture:
            assert picture.width == 72


def test_help_and_refusals_answer_without_tensorflow_or_the_web_stack():
    probe = ("import contextlib, io, json, sys\n"
             "from styleflow.cli import main\n"
             "said = []\n"
             "for argv in (['serve', '--help'], ['serve', '--address', 'x:1']):\n"
             "    out, err = io.StringIO(), io.StringIO()\n"
             "    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):\n"
             "        try:\n"
             "            code = main.main(argv)\n"
             "        except SystemExit as exc:\n"
             "            code = exc.code\n"
             "    said.append([code, out.getvalue(), err.getvalue()])\n"
             "loaded = [m for m in ('tensorflow', 'starlette', 'uvicorn') if m in sys.modules]\n"
             "print(json.dumps({'said': said, 'loaded': loaded}))\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          cwd=ROOT, env=cli_env(), timeout=60, preexec_fn=default_signals)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    (help_code, help_text, _), (address_code, _, address_error) = report["said"]
    assert help_code == 0 and "--engine" in help_text and "--max-upload-mb" in help_text
    assert "--address" in help_text
    assert address_code == 2
    assert address_error.startswith("styleflow serve: error: argument --address: only with "
                                    "--engine ray")
    assert len(address_error.strip().splitlines()) == 1
    assert report["loaded"] == []


def test_listening_beyond_this_machine_warns_in_one_line(tmp_path):
    with child([sys.executable, "-m", "styleflow", "serve", "--host", "0.0.0.0", "--port", "0",
                "--out", str(tmp_path / "out"), "--weights", "lite"],
               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        assert re.search(r"http://0\.0\.0\.0:\d+/", proc.stdout.readline())
        warning = proc.stderr.readline()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    assert warning.startswith("styleflow serve: warning: listening on 0.0.0.0: anyone who can "
                              "reach this machine"), warning
