"""Resident memory of a `styleflow serve` server after 10 and after N jobs of different sizes,
posted through its JSON API one after another: a server that runs for days should hold about
what it held after its first jobs. What it holds beyond the jobs' records (a few kB each) is
the library's caches: one feature extractor per set of layers, one compiled loss per image
size and problem kind, which only bounded caches keep from growing with every new size.

    python bench/serve_memory.py [--jobs 100] [--widths 48 160] [--iterations 1]
        [--method transfer|style|photo] [--weights lite]

Each job is `--iterations` iterations at a width drawn from the range (seeded), so most jobs
are a size not seen before. Prints the resident memory of the server and its worker processes
together (with --engine local the workers are child processes, replaced when they have grown:
web/local_engine.py) after the first job, every 10 jobs and after all, and the ratio of the
last to the 10-job figure.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from proctree import memory_mb  # noqa: E402

FINAL = {"done", "cancelled", "failed"}


def multipart(fields: dict, files: list[tuple[str, Path]]) -> tuple[bytes, str]:
    """A multipart/form-data body (what the page's form sends) and its content type."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                     f"{value}\r\n".encode())
    for name, path in files:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                     f'filename="{path.name}"\r\nContent-Type: application/octet-stream'
                     "\r\n\r\n".encode() + path.read_bytes() + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def call(url: str, method: str = "GET", body: bytes | None = None,
         content_type: str | None = None) -> dict:
    request = urllib.request.Request(url, data=body, method=method)
    if content_type:
        request.add_header("Content-Type", content_type)
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def run_job(base: str, fields: dict, files) -> dict:
    """Post a job and wait for its end; its final state."""
    body, kind = multipart(fields, files)
    job = call(f"{base}api/jobs", "POST", body, kind)
    while job["status"] not in FINAL:
        time.sleep(0.05)
        job = call(f"{base}api/jobs/{job['id']}")
    return job


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--widths", type=int, nargs=2, default=(48, 160), metavar=("MIN", "MAX"))
    parser.add_argument("--iterations", type=int, default=1)
    parser.add_argument("--method", choices=("transfer", "style", "photo"), default="transfer")
    parser.add_argument("--weights", default="lite")
    args = parser.parse_args()
    files = [("content", ROOT / "images" / "base1.jpg"), ("style", ROOT / "images" / "ref7.jpg")]
    rng = random.Random(0)
    out = tempfile.mkdtemp(prefix="serve-memory-")
    server = subprocess.Popen(
        [sys.executable, "-m", "styleflow", "serve", "--port", "0", "--out", out,
         "--weights", args.weights], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        base = re.search(r"http://\S+/", server.stdout.readline()).group(0)
        seen: dict[int, float] = {}
        sizes: set[int] = set()
        began = time.perf_counter()
        for n in range(1, args.jobs + 1):
            width = rng.randint(*args.widths)
            sizes.add(width)
            job = run_job(base, {"method": args.method, "width": width,
                                 "iterations": args.iterations}, files)
            if job["status"] != "done":
                print(f"job {n} at {width} px: {job['status']}: {job['error']}")
            if n in (1, 10, args.jobs) or n % 10 == 0:
                own, workers = memory_mb(server.pid)
                seen[n] = own + workers
                print(f"after {n:4d} jobs ({len(sizes):3d} widths, "
                      f"{time.perf_counter() - began:6.1f} s): RSS {seen[n]:7.1f} MB "
                      f"(server {own:6.1f}, worker processes {workers:7.1f})", flush=True)
        if 10 in seen and args.jobs > 10:
            print(f"RSS after {args.jobs} jobs / after 10 jobs: {seen[args.jobs] / seen[10]:.2f}")
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
