"""`styleflow serve`'s refusals, through its real HTTP stack (uvicorn and Starlette in a thread
of this process, on a queue whose engine runs nothing, so jobs stay queued) and its parts:
every answer JSON, the server's disk failing, other host names, strict fields, a damaged job
record, one server per folder, results that cannot be written."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib

import numpy as np
import pytest

from conftest import cli_env, default_signals, make_image, tmpfs
from styleflow import StyleflowError
from styleflow.io import images
from styleflow.model.weights import check_spec
from styleflow.web import form
from styleflow.web.form import Limits
from styleflow.web.job import Job, Task
from styleflow.web.queue import LOCK_NAME, JobQueue, claim
from styleflow.web.run import Cancelled, Runner, amended, keep

try:
    import uvicorn  # the web extra, which CI installs
except ImportError:
    if os.environ.get("CI"):
        raise
    pytest.skip("the web extra is not installed (pip install -r requirements-web.txt)",
                allow_module_level=True)
NOT_A_FOLDER = "a part of the path is a file, not a folder"  # errors.os_reason's ENOTDIR


class Idle:
    """An engine with no workers: jobs stay queued."""

    def open(self, log):
        return []

    def close(self):
        pass


class Serving:
    """A server on `jobs` listening on loopback; requests sent as given (Host included)."""

    def __init__(self, jobs: JobQueue, hosts=None):
        from styleflow.web.app import create_app

        self.jobs = jobs
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(create_app(jobs, hosts=hosts), log_level="critical",
                                access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)  # in a thread, it leaves signals alone
        self.thread = threading.Thread(target=self.server.run,
                                       kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.jobs.closing.set()
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None):
        """(status, headers, body) of one request; the Host header is the server's own
        unless `headers` gives one."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            sent = {"Host": f"127.0.0.1:{self.port}", **(headers or {})}
            if body is not None:
                sent.setdefault("Content-Length", str(len(body)))
            for key, value in sent.items():
                conn.putheader(key, value)
            conn.endheaders(body)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def post(self, fields: dict, files: dict, headers: dict | None = None):
        body, kind = multipart(fields, files)
        return self.request("POST", "/api/jobs", body, {"Content-Type": kind, **(headers or {})})


def multipart(fields, files: dict) -> tuple[bytes, str]:
    """A multipart/form-data body of `fields` (name -> text, or (name, text) pairs) and `files`
    (name -> (filename, bytes), or a list of them), and its content type."""
    boundary = "styleflowtestboundary"
    parts = []
    for name, value in (fields.items() if isinstance(fields, dict) else fields):
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                     f"{value}\r\n".encode())
    for name, value in files.items():
        for filename, data in (value if isinstance(value, list) else [value]):
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                         f'filename="{filename}"\r\nContent-Type: application/octet-stream'
                         f"\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def error_of(answer) -> str:
    status, headers, body = answer
    assert headers.get("content-type", "").startswith("application/json"), (status, body[:200])
    assert headers.get("x-content-type-options") == "nosniff"
    return json.loads(body)["error"]


@pytest.fixture
def pictures(tmp_path):
    content = make_image(tmp_path / "c.png", (48, 32), 1).read_bytes()
    style = make_image(tmp_path / "s.png", (40, 40), 2).read_bytes()
    return {"content": ("c.png", content), "style": ("s.png", style)}


@pytest.fixture
def served(tmp_path):
    jobs = JobQueue(tmp_path / "out", Idle(), log=lambda line: None)
    (tmp_path / "out" / "jobs").mkdir(parents=True)
    with Serving(jobs) as server:
        yield server


def test_every_refusal_is_one_line_of_json_even_starlettes_own(served):
    assert error_of(served.request("GET", "/api/nothing")) == "not found"
    status, headers, _ = answer = served.request("PUT", "/api/jobs", b"")
    assert status == 405 and set(headers["allow"].split(", ")) >= {"GET", "POST"}
    assert error_of(answer) == "method not allowed"
    status, headers, _ = served.request("PATCH", "/api/jobs/0123456789ab", b"")
    assert status == 405 and "DELETE" in headers["allow"]
    too_many = {f"f{i}": "1" for i in range(40)}
    status, _, _ = answer = served.post(too_many, {})
    assert status == 400
    assert error_of(answer).lower().startswith("the upload is not a form the page sends (too "
                                               "many fields")
    status, _, _ = answer = served.request("POST", "/api/jobs", b"x" * 10,
                                           {"Content-Type": "multipart/form-data"})
    assert status == 400 and "boundary" in error_of(answer).lower()


def test_a_result_removed_by_hand_is_a_404_not_a_server_error(served, pictures):
    status, _, body = served.post({"iterations": "1"}, pictures)
    assert status == 201, body
    job = served.jobs.get(json.loads(body)["id"])
    images.save_image(job.folder / "result.png", np.zeros((4, 4, 3), np.uint8))
    job.finish("done", None, has_result=True)
    assert served.request("GET", f"/api/jobs/{job.id}/result.png")[0] == 200
    state = json.loads(served.request("GET", f"/api/jobs/{job.id}")[2])
    assert list(state["downloads"]) == ["png"]  # only what was written is offered
    (job.folder / "result.png").unlink()
    state = json.loads(served.request("GET", f"/api/jobs/{job.id}")[2])
    assert state["preview"] is None and state["downloads"] is None
    for name, said in (("result.png", "this job's result.png is not there"),
                       ("result.tif", "this job's result.tif is not there"),
                       ("preview.png", "no picture: the job has ended and none is kept")):
        status, _, _ = answer = served.request("GET", f"/api/jobs/{job.id}/{name}")
        assert status == 404 and error_of(answer) == said, name


def test_fields_are_read_strictly(served, pictures):
    for fields, needle in (({"colour": "red"}, "unknown field 'colour'"),
                           ({"photorealism": "5"}, "photorealism: the transfer method does "
                                                   "not take it"),
                           ({"iterations": "1_0"}, "iterations: '1_0' is not a whole number"),
                           ({"iterations": "\u0663"}, "is not a whole number"),
                           ({"width": "1e2"}, "width: '1e2' is not a whole number"),
                           ({"style_weight": "1_0"}, "style_weight: '1_0' is not a number"),
                           ({"iterations": "9" * 5000}, f"iterations: {'9' * 40}... is too large"),
                           ({"iterations": "0" * 4400 + "9000"}, "must be from 1 to 5000"),
                           ({"content_weight": "1e400"}, "content_weight: 1e400 is too large"),
                           ({"style_weight": "1e300"}, "style_weight: 1e300 is too large"),
                           ({"content": "c.png"}, "content: send the content image as a file")):
        status, _, _ = answer = served.post(fields, pictures)
        assert status == 400, (fields, answer)
        assert needle in error_of(answer), (fields, answer)
    # One mask without the other: refused as the upload is, not when the job runs.
    answer = served.post({"method": "photo"},
                         {**pictures, "content_mask": ("m.png", pictures["content"][1])})
    assert answer[0] == 400 and error_of(answer) == (
        "style_mask: content_mask is given without it; give both masks or neither")
    # A field given twice is not taken as either.
    answer = served.post([("width", "9999"), ("width", "64")], pictures)
    assert answer[0] == 400 and error_of(answer) == "width: given more than once"
    # A blank weight of another method is what the page sends: taken as not given.
    assert served.post({"photorealism": " ", "style_weight": "2.5e1"}, pictures)[0] == 201
    assert served.jobs.all()[0].options["style_weight"] == 25.0


def test_a_disk_that_refuses_the_uploads_is_a_507_without_the_servers_paths(
        served, pictures, tmp_path):
    jobs = served.jobs.jobs_folder
    jobs.rmdir()
    jobs.write_text("a file where the jobs' folder was")
    status, _, _ = answer = served.post({}, pictures)
    message = error_of(answer)
    assert status == 507, answer
    assert message == f"the server cannot store this job ({NOT_A_FOLDER})", message
    assert str(tmp_path) not in message


def test_a_cancel_the_server_cannot_record_is_a_507_that_says_so(served, pictures):
    job = served.jobs.get(json.loads(served.post({}, pictures)[2])["id"])
    for path in job.folder.iterdir():
        path.unlink()
    job.folder.rmdir()
    job.folder.write_text("not a folder")
    status, _, _ = answer = served.request("DELETE", f"/api/jobs/{job.id}")
    assert status == 507
    assert error_of(answer) == (f"the server cannot store this job ({NOT_A_FOLDER}): "
                                f"cancelled, but a restarted server would run it again")
    assert job.status == "cancelled"


def test_on_loopback_only_this_machines_names_are_answered(tmp_path):
    jobs = JobQueue(tmp_path / "out", Idle(), log=lambda line: None)
    with Serving(jobs, hosts=["127.0.0.1"]) as server:
        for host in ("attacker.example", "attacker.example:80", "127.0.0.1.nip.io", "",
                     "[::1", "styleflow.example"):
            status, _, _ = answer = server.request("GET", "/api/jobs", headers={"Host": host})
            assert status == 421 and "does not answer to" in error_of(answer), host
        for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}", "LOCALHOST",
                     "localhost.", f"[::1]:{server.port}", "127.0.0.5"):
            assert server.request("GET", "/api/jobs", headers={"Host": host})[0] == 200, host
    # Behind a reverse proxy that passes its public name on: --allow-host.
    jobs = JobQueue(tmp_path / "out", Idle(), log=lambda line: None)
    with Serving(jobs, hosts=["127.0.0.1", "styleflow.example"]) as server:
        for host in ("styleflow.example", "STYLEFLOW.example.:443", f"127.0.0.1:{server.port}"):
            assert server.request("GET", "/api/jobs", headers={"Host": host})[0] == 200, host
        assert server.request("GET", "/api/jobs", headers={"Host": "other.example"})[0] == 421


def test_the_server_passes_the_names_it_answers_to_as_it_listens():
    from styleflow.cli.serve import allowed_hosts, parse

    args = parse(["--allow-host", "a.example", "--allow-host", "b.example"])
    assert allowed_hosts(args.host, "127.0.0.1", args.allow_host) == [
        "127.0.0.1", "a.example", "b.example"]
    assert allowed_hosts("localhost", "127.0.0.1", []) == ["localhost"]
    assert allowed_hosts("::1", "::1", []) == ["::1"]
    assert allowed_hosts("myhost", "127.0.1.1", []) == ["myhost"]  # a name for loopback
    assert allowed_hosts("0.0.0.0", "0.0.0.0", ["a.example"]) is None  # wider: any name
    assert allowed_hosts("192.0.2.7", "192.0.2.7", []) is None
    assert allowed_hosts("localhost", "192.0.2.7", []) is None  # where it listens decides
    assert parse(["--allow-host", "[::1]"]).allow_host == ["::1"]


@pytest.mark.parametrize("given", ["a.example:443", "https://a.example", "", "a b",
                                   "user@a.example"])
def test_an_allowed_host_is_a_name_without_port_or_scheme(given, capsys):
    from styleflow.cli.serve import parse

    with pytest.raises(SystemExit) as exited:
        parse(["--allow-host", given])
    assert exited.value.code == 2
    assert "argument --allow-host: a host name or address without port or scheme" in \
        capsys.readouterr().err


def test_the_final_state_offers_the_result_it_was_finished_with(tmp_path):
    job = Job("0123456789ab", tmp_path / "0123456789ab", "transfer", {"iterations": 1},
              {"content": "content.upload", "style": ["style-1.upload"]},
              {"content": "c.png", "style": ["s.png"]})
    job.folder.mkdir()
    images.save_image(job.folder / "result.png", np.zeros((8, 8, 3), np.uint8))
    picture = job.picture

    def finished_meanwhile(*args):  # the worker finishes the job while a state is read
        if job.status != "done":
            job.finish("done", None, has_result=True)
        return picture(*args)

    job.picture = finished_meanwhile
    state = job.state()
    assert (state["status"] == "done") == (state["downloads"] is not None)
    assert (state["status"] == "done") == (state["preview"] is not None)


def test_a_queued_jobs_event_stream_follows_its_place_in_the_queue(served, pictures):
    first = json.loads(served.post({}, pictures)[2])["id"]
    second = json.loads(served.post({}, pictures)[2])["id"]
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    try:
        conn.request("GET", f"/api/jobs/{second}/events")
        stream = conn.getresponse()
        places = []

        def read_state():
            while True:
                line = stream.readline().decode()
                assert line, "the stream ended"
                if line.startswith("data: "):
                    return json.loads(line[len("data: "):])

        places.append(read_state()["queue_position"])
        assert served.jobs.get(first).begin()  # a worker takes the first job
        places.append(read_state()["queue_position"])
    finally:
        served.jobs.closing.set()
        conn.close()
    assert places == [1, 0]


def test_an_image_past_pillows_own_guard_is_refused_with_the_servers_limit(tmp_path):
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))

    huge = tmp_path / "huge.png"  # a header only: 20000 x 20000, 1 bit per pixel
    huge.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000,
                                                                       1, 0, 0, 0, 0))
                     + chunk(b"IEND", b""))
    with pytest.raises(StyleflowError) as caught:
        form.check_image(huge, "content image", 40_000_000)
    assert str(caught.value) == (f"content image '{huge}': image is too large (400000000 px, "
                                 f"more than 40000000 pixels); downscale it first")


def test_a_damaged_job_record_is_skipped_with_the_field_named(tmp_path):
    lines = []
    jobs = JobQueue(tmp_path, Idle(), log=lines.append)
    good = Job("0123456789ab", tmp_path / "jobs" / "0123456789ab", "transfer",
               {"iterations": 2, "width": 64},
               {"content": "content.upload", "style": ["style-1.upload"]},
               {"content": "c.png", "style": ["s.png"]})
    good.folder.mkdir(parents=True)
    good.save()
    record = good.record()
    expected = []
    for job_id, change in (("00000000000a", {"created": "yesterday"}),
                           ("00000000000b", {"options": {"width": 64}}),
                           ("00000000000c", {"status": "paused"}),
                           ("00000000000d", {"curve": [[1, "x"]]})):
        folder = tmp_path / "jobs" / job_id
        folder.mkdir()
        broken = {**record, "id": job_id, **change}
        (folder / "job.json").write_text(json.dumps(broken))
    for job_id, text, needle in (
            ("00000000000f", json.dumps({**record, "id": "00000000000f", "size": [1]}),
             "'size' is not a height and a width"),
            ("0000000000a0", json.dumps({**record, "id": "0000000000a0", "method": "bogus"}),
             "'method' is not one of transfer, style, photo"),
            ("0000000000a1", json.dumps({**record, "id": "0000000000a1",
                                         "inputs": {"content": "../../etc/passwd",
                                                    "style": ["style-1.upload"]}}),
             "'inputs' is not the stored files"),
            ("0000000000a4", json.dumps({**record, "id": "ffffffffffff"}),
             "its id 'ffffffffffff' is not its folder's name"),
            ("0000000000a2", "[" * 100_000, "skipping"),
            ("0000000000a3", "\udcff not json", "skipping")):
        folder = tmp_path / "jobs" / job_id
        folder.mkdir()
        (folder / "job.json").write_text(text, errors="surrogateescape")
        expected.append(needle)
    missing = tmp_path / "jobs" / "00000000000e"
    missing.mkdir()
    (missing / "job.json").write_text(json.dumps({k: v for k, v in record.items()
                                                  if k != "iteration"}))
    jobs.load()
    assert [job.id for job in jobs.all()] == [good.id]
    said = "\n".join(lines)
    for needle in ("'created' is not a time", "'options' is not the options, with the "
                   "iterations", "'status' is not one of queued", "'curve' is not a list",
                   "'iteration' is missing", *expected):
        assert needle in said, said
    assert len(lines) == 11 and all(line.startswith("styleflow serve: skipping ")
                                    for line in lines), lines


# A job.json as the server before this check wrote it (a photo job with both masks, two
# styles' worth of names, a curve, a note): it must still load.
OLD_RECORD = {
    "id": "5d1c0e2f9a7b", "method": "photo",
    "options": {"iterations": 3, "width": 96, "photorealism": 1000.0},
    "inputs": {"content": "content.upload", "style": ["style-1.upload"],
               "content_mask": "content_mask.upload", "style_mask": "style_mask.upload"},
    "names": {"content": "C:\\photos\\IMG 0001.JPG", "style": ["painting.png"],
              "content_mask": "mask.png", "style_mask": "mask2.png"},
    "created": 1764950000.25, "status": "done", "started": 1764950001.5,
    "finished": 1764950009.0, "iteration": 3, "evaluations": 61,
    "curve": [[1, 5.5e9], [2, 4.25e9], [61, 1.125e9]], "rate": 0.4, "error": None,
    "note": "photo: stage 1 (without photorealism) ran iterations 1-2", "size": [64, 96],
    "has_result": True}


def test_a_record_an_earlier_server_wrote_still_loads(tmp_path):
    folder = tmp_path / "jobs" / OLD_RECORD["id"]
    folder.mkdir(parents=True)
    (folder / "job.json").write_text(json.dumps(OLD_RECORD))
    images.save_image(folder / "result.png", np.zeros((8, 8, 3), np.uint8))
    lines = []
    jobs = JobQueue(tmp_path, Idle(), log=lines.append)
    jobs.load()
    assert lines == []
    (job,) = jobs.all()
    state = job.state()
    assert state["status"] == "done" and state["size"] == {"height": 64, "width": 96}
    assert state["downloads"] == {"png": f"/api/jobs/{job.id}/result.png"}
    assert job.names["content"] == "C:\\photos\\IMG 0001.JPG" and job.curve[-1] == (61, 1.125e9)


def test_a_job_that_ends_without_a_result_keeps_its_last_picture_on_disk(tmp_path):
    job = Job("0123456789ab", tmp_path / "0123456789ab", "transfer", {"iterations": 3},
              {"content": "content.upload", "style": ["style-1.upload"]},
              {"content": "c.png", "style": ["s.png"]})
    job.folder.mkdir()
    job.apply(("iterated", 2, 1.0, b"\x89PNG last iterate"))
    assert job.state()["preview"] is not None
    job.finish("failed", "out of memory")
    assert job.preview is None  # not held in memory
    assert (job.folder / "preview.png").read_bytes() == b"\x89PNG last iterate"
    assert job.picture() == "preview.png" and job.state()["preview"] is not None
    assert Job.from_record(job.folder, json.loads(json.dumps(job.record()))).picture() == \
        "preview.png"  # after a restart too


def test_one_server_per_folder_and_the_second_is_refused_before_it_touches_anything(tmp_path):
    out = tmp_path / "out"
    held = claim(out)
    try:
        assert (out / LOCK_NAME).read_text().strip() == str(os.getpid())
        with pytest.raises(StyleflowError, match=rf"another styleflow serve \(process "
                                                 rf"{os.getpid()}\) keeps its jobs there"):
            claim(out)
        # The command: one line, exit 1, and no job of the first server's touched.
        running = Job("0123456789ab", out / "jobs" / "0123456789ab", "transfer",
                      {"iterations": 2}, {"content": "c", "style": ["s"]},
                      {"content": "c.png", "style": ["s.png"]})
        running.folder.mkdir()
        running.begin()
        running.save()
        before = (running.folder / "job.json").read_bytes()
        proc = subprocess.run([sys.executable, "-m", "styleflow", "serve", "--port", "0",
                               "--out", str(out), "--weights", "lite"],
                              capture_output=True, text=True, timeout=120, env=cli_env(),
                              stdin=subprocess.DEVNULL, preexec_fn=default_signals)
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.strip() == (f"styleflow serve: error: --out '{out}': another "
                                       f"styleflow serve (process {os.getpid()}) keeps its "
                                       f"jobs there; stop it or give another --out")
        assert (running.folder / "job.json").read_bytes() == before
    finally:
        held.close()
    claim(out).close()  # free again once the first has gone


def test_a_folder_that_cannot_take_a_file_is_refused_at_start(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StyleflowError, match=rf"cannot use the folder \({NOT_A_FOLDER}\)"):
        claim(tmp_path / "file" / "out")
    with tmpfs(tmp_path / "full", "size=64k") as full:
        claim(full / "out").close()  # a server ran there before: its lock file is left
        with open(full / "filler", "wb", buffering=0) as filler:
            with contextlib.suppress(OSError):  # until the disk is full
                while True:
                    filler.write(b"\0" * 4096)
        with pytest.raises(StyleflowError, match=r"No space left on device"):
            claim(full / "out")


def test_the_port_must_be_one(capsys):
    from styleflow.cli import serve

    with pytest.raises(SystemExit) as exited:
        serve.parse(["--port", "70000"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == ("styleflow serve: error: argument --port: must be from 0 "
                                       "to 65535, not 70000 (see --help)\n")


@pytest.mark.parametrize("argv, said", [
    (["--max-width", "4"], "argument --max-width: at least 8, the smallest width a job takes, "
                           "not 4"),
    (["--max-upload-mb", "1e-9"], "argument --max-upload-mb: at least 0.001 (a kilobyte), not "
                                  "1e-09")])
def test_limits_no_job_could_meet_are_refused(capsys, argv, said):
    from styleflow.cli import serve

    with pytest.raises(SystemExit) as exited:
        serve.parse(argv)
    assert exited.value.code == 2
    assert capsys.readouterr().err == f"styleflow serve: error: {said} (see --help)\n"


def test_a_host_name_python_cannot_encode_is_one_line():
    from styleflow.cli import serve

    with pytest.raises(StyleflowError, match=r"^--host bad\.\.host: not a valid host name$"):
        serve._listen("bad..host", 0)


def test_no_more_pixels_than_the_image_reader_takes(capsys):
    from PIL import Image

    from styleflow.cli import serve

    assert serve.parse(["--max-pixels", str(Image.MAX_IMAGE_PIXELS)]).max_pixels == \
        Image.MAX_IMAGE_PIXELS
    with pytest.raises(SystemExit) as exited:
        serve.parse(["--max-pixels", "300000000"])
    assert exited.value.code == 2
    assert f"--max-pixels: at most {Image.MAX_IMAGE_PIXELS}" in capsys.readouterr().err


def test_weights_that_start_as_neither_hdf5_nor_mat_are_refused_up_front(tmp_path):
    import h5py

    text = tmp_path / "w.h5"
    text.write_text("x")
    with pytest.raises(StyleflowError, match="not a readable HDF5 or .mat weights file"):
        check_spec(str(text))
    with h5py.File(tmp_path / "real.h5", "w") as handle:
        handle["x"] = 1
    assert check_spec(str(tmp_path / "real.h5")) == tmp_path / "real.h5"
    with h5py.File(tmp_path / "block.h5", "w", userblock_size=512) as handle:
        handle["x"] = 1  # HDF5 after a 512-byte user block
    assert check_spec(str(tmp_path / "block.h5")) == tmp_path / "block.h5"
    with open(tmp_path / "block.h5", "r+b") as handle:  # as MATLAB 7.3 writes: scipy cannot
        handle.write(b"MATLAB 7.3 MAT-file")
    (tmp_path / "block.h5").rename(tmp_path / "v73.mat")
    with pytest.raises(StyleflowError, match=r"\(a MATLAB 7.3 file, which scipy cannot read; "
                                             r"save it with -v7\)"):
        check_spec(str(tmp_path / "v73.mat"))
    (tmp_path / "v5.mat").write_bytes(b"MATLAB 5.0 MAT-file" + b" " * 97 + b"\0" * 12)
    assert check_spec(str(tmp_path / "v5.mat")) == tmp_path / "v5.mat"
    (tmp_path / "v5.h5").write_bytes(b"MATLAB 5.0 MAT-file")
    with pytest.raises(StyleflowError, match="not a readable HDF5"):
        check_spec(str(tmp_path / "v5.h5"))


class Picture:
    def save(self, path):
        images.save_image(path, np.full((8, 8, 3), 128, np.uint8))


def test_a_result_that_cannot_be_written_ends_the_job_in_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    assert keep(tmp_path / "file", Picture().save) == (
        False, f"cannot write 'result.png': {NOT_A_FOLDER}")
    folder = tmp_path / "job"
    (folder / "result.tif").mkdir(parents=True)  # the TIFF's place taken: the PNG is kept
    (folder / "result.tif" / "x").write_text("x")
    kept, lost = keep(folder, Picture().save)
    assert kept and images.load_image(folder / "result.png").shape == (8, 8, 3)
    assert lost.startswith("cannot write 'result.tif': ") and lost.endswith("; the PNG was kept")
    assert str(tmp_path) not in lost
    # A finished run whose result is lost has failed; a cancelled one stays cancelled.
    assert amended(("end", "done", None, False), kept, lost) == ("end", "failed", lost, True)
    assert amended(("end", "cancelled", None, False), False, lost) == (
        "end", "cancelled", lost, False)
    assert amended(("end", "done", None, False), True, None) == ("end", "done", None, True)


def test_a_cancelled_job_whose_image_cannot_be_kept_ends_without_killing_its_worker(tmp_path):
    class Run:
        size = (8, 8)

        def __iter__(self):
            raise Cancelled()

        def result(self):
            return Picture()

    class Stylizer:
        def iter_transfer(self, content, style, **options):
            return Run()

    runner = Runner.__new__(Runner)
    runner.stylizer, runner.broken = Stylizer(), None
    (tmp_path / "file").write_text("x")
    task = Task("0123456789ab", "transfer", {"iterations": 1}, {"content": "c", "style": ["s"]},
                {"content": "c.png", "style": ["s.png"]})
    events = list(runner.run(task, tmp_path / "file", threading.Event()))
    assert events[-1] == ("end", "cancelled", f"cannot write 'result.png': {NOT_A_FOLDER}", False)


def test_a_network_the_server_cannot_load_fails_jobs_without_naming_its_files(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 2000)  # HDF5's signature, then nothing
    runner = Runner({"weights": str(bad)}, notes=lambda note: None)
    assert str(bad) in runner.broken  # for the server's log
    task = Task("0123456789ab", "transfer", {"iterations": 1}, {"content": "c", "style": ["s"]},
                {"content": "c.png", "style": ["s.png"]})
    events = list(runner.run(task, tmp_path, threading.Event()))
    assert events == [("end", "failed", "the server cannot load its network (its log says why)",
                       False)]


def test_a_run_that_stops_early_is_done_with_a_note_for_each_stage_and_its_result(tmp_path):
    """L-BFGS stopping early (`stage_stops`, as the library's runs report it) is a note, not
    the end of the job: it finishes, and its result is kept."""
    from types import SimpleNamespace

    class Run:
        size, stages, first_stage = (8, 8), 2, 2
        stage_stops: list = []

        def __iter__(self):
            for i in range(1, 5):
                if i == 2:
                    self.stage_stops.append((1, 1, 2, "converged"))
                if i == 4:
                    self.stage_stops.append((2, 3, 4, "line search found no lower loss"))
                yield SimpleNamespace(iteration=i, iterations=4, seconds=0.1,
                                      array=np.zeros((8, 8, 3), np.uint8))

        def result(self):
            return Picture()

    class Stylizer:
        def iter_transfer(self, content, style, **options):
            return Run()

    runner = Runner.__new__(Runner)
    runner.stylizer, runner.broken = Stylizer(), None
    task = Task("0123456789ab", "transfer", {"iterations": 4}, {"content": "c", "style": ["s"]},
                {"content": "c.png", "style": ["s.png"]})
    events = list(runner.run(task, tmp_path, threading.Event()))
    assert [e[1] for e in events if e[0] == "note"] == [
        "stage 1: L-BFGS stopped after 1 of its 2 iterations: converged; iteration 2 repeats "
        "its last image",
        "stage 2: L-BFGS stopped after 1 of its 2 iterations: line search found no lower loss; "
        "iteration 4 repeats its last image"]
    assert events[-1] == ("end", "done", None, True)
    assert images.load_image(tmp_path / "result.png").shape == (8, 8, 3)


def test_a_job_that_cannot_be_recorded_when_it_starts_fails_in_one_line(tmp_path, pictures):
    class Worker:
        def run(self, job):
            raise AssertionError("the job must not run")

    class One:
        def open(self, log):
            return [Worker]

        def close(self):
            pass

    lines = []
    jobs = JobQueue(tmp_path / "out", One(), log=lines.append)
    job = jobs.create({}, [form.Upload("content", *pictures["content"]),
                           form.Upload("style", *pictures["style"])])
    for path in job.folder.iterdir():
        path.unlink()
    job.folder.rmdir()
    job.folder.write_text("not a folder")
    jobs.start()
    try:
        deadline = time.monotonic() + 30
        while job.status != "failed":
            assert time.monotonic() < deadline, job.status
            time.sleep(0.05)
    finally:
        jobs.stop()
    assert job.error == f"the server cannot store this job ({NOT_A_FOLDER})"
    assert not any("internal error" in line for line in lines), lines


def test_jobs_queued_before_a_restart_with_lower_limits_fail_instead_of_running(tmp_path):
    """A server restarted with a lower width or iteration limit fails the jobs an earlier one
    queued past them (saying why and what to do), and queues the rest."""
    made = {}
    for name, options in (("0123456789a1", {"iterations": 50, "width": 900}),
                          ("0123456789a2", {"iterations": 50, "width": 400}),
                          ("0123456789a3", {"iterations": 5000, "width": 400})):
        folder = tmp_path / "jobs" / name
        folder.mkdir(parents=True)
        made[name] = Job(name, folder, "transfer", options,
                         {"content": "content.upload", "style": ["style-1.upload"]},
                         {"content": "c.png", "style": ["s.png"]})
        made[name].save()
    jobs = JobQueue(tmp_path, Idle(), limits=Limits(max_width=512, max_iterations=100),
                    log=[].append)
    jobs.load()
    states = {job.id: job.state() for job in jobs.all()}
    assert states["0123456789a2"]["status"] == "queued"
    for name, words in (("0123456789a1", "width 900 is past this server's limit (512)"),
                        ("0123456789a3", "iterations 5000 is past this server's limit (100)")):
        assert states[name]["status"] == "failed" and words in states[name]["error"]
        assert "start it again" in states[name]["error"]
        # On disk too: a second restart does not queue it again.
        assert json.loads((tmp_path / "jobs" / name / "job.json").read_text())["status"] == \
            "failed"


def test_a_stopped_job_continues_from_its_picture_for_the_iterations_left(tmp_path):
    """Continue (POST .../continue): a new queued job with the same uploads and options, the
    stopped job's kept picture as its start (init; initial for style) and the iterations it
    had left (photo: the photorealistic stage alone); refused, in one line, where there is
    nothing to go on from."""
    from styleflow.web.run import _prepare

    jobs = JobQueue(tmp_path, Idle(), log=[].append)

    def stopped(job_id, method, status="cancelled", iteration=3, picture=True):
        folder = tmp_path / "jobs" / job_id
        folder.mkdir(parents=True)
        make_image(folder / "c.png", (48, 32), 1).rename(folder / "content.upload")
        make_image(folder / "s.png", (40, 40), 2).rename(folder / "style-1.upload")
        if picture:
            make_image(folder / "preview.png", (48, 32), 3)
        job = Job(job_id, folder, method, {"iterations": 10, "width": 48},
                  {"content": "content.upload", "style": ["style-1.upload"]},
                  {"content": "c.png", "style": ["s.png"]})
        job.status, job.iteration = status, iteration
        job.save()
        jobs._jobs[job_id] = job
        return job

    for method, start in (("transfer", "init"), ("style", "initial"), ("photo", "init")):
        job = stopped(f"00000000000{'tsp'.index(method[0])}", method)
        assert job.state()["continuable"]
        new = jobs.continue_job(job)
        state = new.state()
        assert state["status"] == "queued" and state["iterations"] == 7 and not \
            state["continuable"]
        assert state["options"] == {"iterations": 7, "width": 48,
                                    **({"stages": 1} if method == "photo" else {})}
        assert state["inputs"]["start"] == f"job {job.id}'s picture"
        assert (new.folder / "start.upload").read_bytes() == \
            (job.folder / "preview.png").read_bytes()
        assert (new.folder / "content.upload").read_bytes() == \
            (job.folder / "content.upload").read_bytes()
        # The run starts from it: the method is called with the picture as its start.
        called = {}

        class Recording:
            def __getattr__(self, name):
                return lambda content, style, **options: called.update(options, name=name)

        _prepare(Recording(), new.task, new.folder, None)
        assert called[start] == new.folder / "start.upload"
        # And it survives a restart as any job does.
        assert Job.from_record(new.folder, json.loads((new.folder / "job.json").read_text()))
    for job, words in ((stopped("0000000000a1", "transfer", "done", 10), "is done"),
                       (stopped("0000000000a2", "transfer", "queued", 0), "is queued"),
                       (stopped("0000000000a3", "transfer", picture=False), "kept no picture"),
                       (stopped("0000000000a4", "transfer", "failed", 10), "ran all its 10")):
        assert not job.state()["continuable"]
        with pytest.raises(StyleflowError, match=words):
            jobs.continue_job(job)
    # A server restarted with a lower width limit does not continue past it.
    lower = JobQueue(tmp_path, Idle(), limits=Limits(max_width=32), log=[].append)
    with pytest.raises(StyleflowError, match=r"width 48 is past this server's limit \(32\)"):
        lower.continue_job(stopped("0000000000b1", "transfer"))
