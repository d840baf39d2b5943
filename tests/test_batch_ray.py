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


@pytest.fixture
def pictures(tmp_path):
    contents, styles = tmp_path / "c", tmp_path / "s"
    contents.mkdir()
    styles.mkdir()
    for i in range(3):
        make_image(contents / f"c{i}.png", (48, 32), i)
    make_image(styles / "s0.png", (40, 40), 9)
    return contents, styles


@pytest.mark.slow
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


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # the field after the command's name


def own_actor_pids() -> list[int]:
    """PairActor processes of this test's own Ray (descendants of this process: ray.init
    started the Ray it runs them in); Ray titles them 'ray::PairActor...'."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if b"PairActor" not in (entry / "cmdline").read_bytes():
                continue
        except OSError:
            continue
        pid = int(entry.name)
        ancestor = pid
        for _ in range(32):
            ancestor = _parent(ancestor)
            if ancestor in (None, 0, 1) or ancestor == me:
                break
        if ancestor == me:
            found.append(pid)
    return found


@pytest.mark.slow
def test_a_killed_actor_is_restarted_and_its_pair_retried(ray_address, pictures, tmp_path):
    """The actor is killed in the middle of a pair (its first iteration image is written, its
    output not yet): Ray restarts it, the pair is run again, and every pair ends done."""
    contents, styles = pictures
    out = tmp_path / "out"
    args = [sys.executable, "-m", "styleflow", "batch", "--contents", str(contents), "--styles",
            str(styles), "--out", str(out), "--weights", "random", "--iter", "40", "--height",
            "32", "--engine", "ray", "--workers", "1", "--address", ray_address,
            "--iteration-images", "--jit", "off"]  # no XLA trials before the first iteration
    killed = []
    with child(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None and not killed:
            started = [p for p in out.glob("c*_s0_at_iteration_00.png")]
            busy = [p for p in started
                    if not (out / p.name.replace("_at_iteration_00", "")).exists()]
            pids = own_actor_pids()
            if busy and pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append((pids[0], busy[0].name.replace("_at_iteration_00", "")))
            time.sleep(0.05)
        assert killed, "the actor was never seen in the middle of a pair"
        _, pair = killed[0]
        assert not (out / pair).exists()  # killed before that pair's output was written
        stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stdout + stderr
    outputs = sorted(p.name for p in out.glob("*.png") if "_at_iteration_" not in p.name)
    assert outputs == ["c0_s0.png", "c1_s0.png", "c2_s0.png"]
    for name in outputs:
        with Image.open(out / name) as img:
            assert img.size == (48, 32)
    records = read_status(out / "styleflow-status.jsonl")
    assert sorted(r["status"] for r in records) == ["done"] * 3


@pytest.mark.slow
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


@pytest.mark.parametrize("resources,workers,pairs,want", [
    ({"CPU": 8}, None, 10, (4, {"num_cpus": 2}, 2)),    # default: one actor per 2 CPUs
    ({"CPU": 8}, 2, 10, (2, {"num_cpus": 4}, 4)),       # fewer actors: more threads each
    ({"CPU": 8}, None, 1, (1, {"num_cpus": 8}, 8)),     # one pair: one actor, every CPU
    ({"CPU": 2}, 4, 10, (4, {"num_cpus": 1}, 1)),       # more actors than CPUs: 1 each
    ({"CPU": 16, "GPU": 2}, None, 10, (2, {"num_gpus": 1}, None)),
])
def test_cpu_actors_reserve_and_use_their_share_of_the_cpus(resources, workers, pairs, want):
    from styleflow.batch.ray_engine import actor_plan

    assert actor_plan(resources, workers, pairs) == want


def test_an_actor_runs_tensorflow_on_the_threads_it_was_given():
    code = ("from styleflow.batch.ray_engine import PairActor\n"
            "from styleflow.batch.worker import Settings\n"
            "print(PairActor(Settings(weights='random'), threads=1).threads())\n")
    from conftest import cli_env, default_signals

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=cli_env(), cwd=ROOT, timeout=120, stdin=subprocess.DEVNULL,
                          preexec_fn=default_signals)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-1] == "1"  # TensorFlow's default, 0, would use every core


def test_an_address_nobody_answers_is_one_line_at_once(pictures, tmp_path):
    import socket

    contents, styles = pictures
    with socket.socket() as probe:  # a port nothing listens on: bound, never listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        began = time.time()
        proc = call_cli("styleflow", "batch", "--contents", contents, "--styles", styles,
                        "--out", tmp_path / "out", "--engine", "ray", "--address",
                        f"127.0.0.1:{port}", "--weights", "random", "--iter", "1")
    assert time.time() - began < 60
    from conftest import assert_clean_error

    assert_clean_error(proc, f"127.0.0.1:{port}", "cannot reach")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.png"))


@pytest.mark.slow
def test_a_grown_ray_actor_is_replaced_between_pairs(ray_address, pictures, tmp_path,
                                                     monkeypatch):
    from styleflow.batch import ray_engine
    from styleflow.batch.jobs import Pair
    from styleflow.batch.worker import Settings

    # A negative growth replaces the actor after every pair but its first (whose memory is
    # the reference): the second pair's actor is replaced, the third runs on the new one.
    monkeypatch.setattr(ray_engine, "RECYCLE_GROWTH", -1.0)
    contents, styles = pictures
    pairs = [Pair(str(contents / f"c{i}.png"), str(styles / "s0.png"),
                  str(tmp_path / "out" / f"c{i}.png"), {"iterations": 1, "height": 24 + 8 * i})
             for i in range(3)]
    records, notes = [], []
    ray_engine.run_on_ray(pairs, Settings(weights="random", seed=1), lambda p, r: records.append(r),
                          address=ray_address, workers=1, notes=notes.append)
    assert [r["status"] for r in records] == ["done"] * 3, records
    replaced = [n for n in notes if "replaced after it grew" in n]
    assert len(replaced) == 1, notes
    assert replaced[0].startswith("styleflow batch: a Ray actor replaced after it grew to")
    assert all((tmp_path / "out" / f"c{i}.png").stat().st_size > 0 for i in range(3))
