"""`styleflow batch --engine ray` on a local 2-CPU Ray instance started once for these tests."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from conftest import ROOT, call_cli, child, make_image
from styleflow.batch.status import read_status


@pytest.fixture(scope="module")
def ray_address():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture
def pictures(tmp_path):
    contents, styles = tmp_path / "c", tmp_path / "s"
    contents.mkdir()
    styles.mkdir()
    for i in range(3):
        make_image(contents / f"c{i}.png", (48, 32), i)
    make_image(styles / "s0.png", (40, 40), 9)
    return contents, styles


def test_ray_gives_the_local_engine_s_images_byte_for_byte(ray_address, pictures, tmp_path):
    contents, styles = pictures
    common = ["--contents", contents, "--styles", styles, "--weights", "random", "--seed", "4",
              "--iter", "1", "--height", "24", "--quiet"]
    local = call_cli("styleflow", "batch", *common, "--out", tmp_path / "local")
    assert local.returncode == 0, local.stderr
    remote = call_cli("styleflow", "batch", *common, "--out", tmp_path / "ray", "--engine", "ray",
                      "--workers", "2")
    assert remote.returncode == 0, remote.stderr
    names = sorted(p.name for p in (tmp_path / "local").glob("*.png"))
    assert names == ["c0_s0.png", "c1_s0.png", "c2_s0.png"]
    for name in names:
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    records = read_status(tmp_path / "ray" / "styleflow-status.jsonl")
    assert sorted(r["status"] for r in records) == ["done"] * 3


def actor_pids() -> list[int]:
    """Processes Ray runs the PairActor in (Ray titles them 'ray::PairActor...')."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"PairActor" in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_a_killed_actor_is_restarted_and_its_pair_retried(ray_address, pictures, tmp_path):
    contents, styles = pictures
    out = tmp_path / "out"
    args = [sys.executable, "-m", "styleflow", "batch", "--contents", str(contents), "--styles",
            str(styles), "--out", str(out), "--weights", "random", "--iter", "4", "--height",
            "32", "--engine", "ray", "--workers", "1", "--address", ray_address]
    killed = []
    with child(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        deadline = time.time() + 180
        # Kill the actor once it is working on the first pair (no pair finished yet).
        seen = None
        while time.time() < deadline and proc.poll() is None and not killed:
            pids = actor_pids()
            if pids and seen is None:
                seen = time.time()
            if pids and time.time() - seen > 2 and not list(out.glob("*.png")):
                try:
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])
                except ProcessLookupError:  # it ended meanwhile: look again
                    pass
            time.sleep(0.2)
        assert killed, "the actor was never seen working"
        stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stdout + stderr
    assert sorted(p.name for p in out.glob("*.png")) == ["c0_s0.png", "c1_s0.png", "c2_s0.png"]
    for path in out.glob("*.png"):
        with Image.open(path) as img:
            assert img.size == (48, 32)
    records = read_status(out / "styleflow-status.jsonl")
    assert sorted(r["status"] for r in records) == ["done"] * 3


def test_without_ray_the_engine_says_how_to_install_it(tmp_path, pictures):
    contents, styles = pictures
    code = ("import sys; sys.modules['ray'] = None\n"
            "from styleflow.cli.main import main\n"
            f"sys.exit(main(['batch', '--contents', {str(contents)!r}, '--styles', "
            f"{str(styles)!r}, '--out', {str(tmp_path / 'o')!r}, '--engine', 'ray']))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'styleflow[ray]'" in lines[0], proc.stderr
