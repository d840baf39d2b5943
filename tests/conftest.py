"""Shared fixtures: tiny images, and running the CLIs as users do
(in a child process where the process boundary is the point, else in-process via main(argv)).

The environment the tests rely on is set here, not inherited: an empty Keras cache (so a
user's cached ImageNet file cannot change results), an unreachable ImageNet mirror (so
'imagenet' fails fast and alike everywhere), no GPU for child processes, and a persistent
XLA cache of the suite's own.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
LITE_H5 = ROOT / "styleflow" / "model" / "data" / "vgg19_imagenet_block1-3.h5"
# Everything the suite's processes leave in a temporary folder (an empty Keras cache, a child's
# autograph files, Ray's session) goes under one folder, removed when the suite ends; pytest's
# own tmp_path folders are kept only for failed tests (pytest.ini).
SESSION_TMP = tempfile.mkdtemp(prefix="styleflow-tests-")
atexit.register(shutil.rmtree, SESSION_TMP, True)
EMPTY_KERAS_HOME = tempfile.mkdtemp(prefix="keras-home-", dir=SESSION_TMP)
UNREACHABLE_MIRROR = "http://127.0.0.1:9/vgg19_notop.h5"
os.environ["KERAS_HOME"] = EMPTY_KERAS_HOME
os.environ["STYLEFLOW_IMAGENET_URL"] = UNREACHABLE_MIRROR
# XLA's compiled transforms are shared by the suite's processes, never with the user's cache.
os.environ["STYLEFLOW_XLA_CACHE"] = os.path.join(SESSION_TMP, "xla")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# On a GPU host the memory checks would be left to TensorFlow (and a 90000x60000 test image
# would be allocated): the suite runs on the CPU everywhere.
os.environ["CUDA_VISIBLE_DEVICES"] = ""
SCRIPTS = {"neural_style_transfer.py": "styleflow.cli.transfer",
           "neural_style.py": "styleflow.cli.style", "styleflow": "styleflow.cli.main"}


def make_image(path: Path, size=(48, 32), seed=0, mode="RGB") -> Path:
    """A smooth random colour image (w, h) = size, saved at `path`."""
    rng = np.random.default_rng(seed)
    w, h = size
    small = rng.integers(0, 256, (max(2, h // 8), max(2, w // 8), 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR)
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path)
    return path


@pytest.fixture(autouse=True)
def no_onednn_pass_limit(monkeypatch):
    """Tests plan passes as on a CPU without oneDNN's GEMM convolution limit, whichever CPU runs
    them (it varies between machines); the tests of that limit set it themselves."""
    from styleflow.model import machine

    monkeypatch.setattr(machine, "onednn_pass_pixels", lambda precision="float32": None)


@pytest.fixture
def tiny(tmp_path):
    """A 48x32 content image and a style image of another size."""
    return make_image(tmp_path / "base.png", (48, 32), 1), make_image(tmp_path / "style.png", (40, 40), 2)


def cli_env(**extra) -> dict:
    env = dict(os.environ)
    env["CUDA_VISIBLE_DEVICES"] = ""  # children never compete for a GPU with the tests
    env["KERAS_HOME"] = EMPTY_KERAS_HOME
    env["STYLEFLOW_IMAGENET_URL"] = UNREACHABLE_MIRROR
    env["PYTHONPATH"] = str(ROOT)
    env["TMPDIR"] = SESSION_TMP  # a child killed on purpose leaves its temporary files there
    env.update(extra)
    return env


def default_signals() -> None:
    """preexec_fn: SIGINT and SIGTERM at their defaults in the child, whatever the shell that
    started the tests handed down (a background job gets SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def run_cli(script: str, *args, timeout=300, **env) -> subprocess.CompletedProcess:
    """Run one of the top-level scripts in a child process as a user would, capturing output."""
    command = [sys.executable, str(ROOT / script)] if script.endswith(".py") else \
        [sys.executable, "-m", "styleflow"]
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=cli_env(**env),
                          stdin=subprocess.DEVNULL, preexec_fn=default_signals)


@contextlib.contextmanager
def child(args, env: dict | None = None, **popen):
    """A Popen child with default signal dispositions (`env`: variables beyond cli_env's),
    killed if the test fails while it runs."""
    proc = subprocess.Popen(args, env=cli_env(**(env or {})), cwd=ROOT, stdin=subprocess.DEVNULL,
                            preexec_fn=default_signals, **popen)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


@contextlib.contextmanager
def tmpfs(folder: Path, options: str):
    """A tmpfs mounted on the new `folder` with mount `options` (root only; the test is
    skipped, with the reason, where it cannot be mounted), unmounted afterwards."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs ({options}) here ({mounted.stderr.strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def call_cli(script: str, *args) -> subprocess.CompletedProcess:
    """Run a CLI's main(argv) in this process, capturing what it prints: the same code path
    as the script without a child's TensorFlow import. Exceptions (a traceback for a user)
    propagate and fail the test."""
    import importlib

    main = importlib.import_module(SCRIPTS[script]).main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse's usage errors and --help
            code = exc.code
    return subprocess.CompletedProcess([script, *args], code, out.getvalue(), err.getvalue())


def assert_clean_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """A non-zero exit with one readable error line naming the problem, and no traceback."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle.lower() in lines[0].lower(), lines[0]


@pytest.fixture(scope="module")
def ray_address():
    """A local 2-CPU Ray for one test module; its address. Ray's session folder is under the
    suite's own temporary folder, removed when the suite ends."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             _temp_dir=str(Path(SESSION_TMP) / "ray"))
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def descendants(pid: int) -> list[int]:
    """The processes below `pid` (Linux /proc)."""
    found = []
    try:  # a process may end while it is looked at
        for task in Path(f"/proc/{pid}/task").iterdir():
            for below in (task / "children").read_text().split():
                found += [int(below), *descendants(int(below))]
    except (FileNotFoundError, ProcessLookupError):
        pass
    return found


def alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie (Linux /proc)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
