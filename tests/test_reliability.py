"""Defects found in review, each with a test that failed before its fix."""

import contextlib
import hashlib
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import (EMPTY_KERAS_HOME, LITE_H5, ROOT, assert_clean_error, call_cli, child,
                      default_signals, make_image)
from styleflow import Stylizer, StyleflowError
from styleflow.model import weights as weights_mod
from styleflow.io.images import load_image
from styleflow.report.runlog import read_log
from styleflow.system import OTHER_MACHINE_IDLE_SECONDS, machine_id

TRANSFER = "neural_style_transfer.py"
STYLE = "neural_style.py"


@pytest.fixture
def damaged_cache(tmp_path, monkeypatch):
    """KERAS_HOME holding the first 100 kB of an .h5 file under the ImageNet file's name."""
    home = tmp_path / "keras"
    (home / "models").mkdir(parents=True)
    bad = home / "models" / weights_mod.IMAGENET_FILE
    bad.write_bytes(LITE_H5.read_bytes()[:100_000])
    monkeypatch.setenv("KERAS_HOME", str(home))
    return bad


def test_damaged_cached_imagenet_file_auto_falls_back_in_one_line(damaged_cache, tiny, tmp_path):
    base, style = tiny
    proc = call_cli(TRANSFER, base, style, tmp_path / "r", "--iter", "1", "--height", "32")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(damaged_cache) in lines[0] and "delete it" in lines[0] and "lite" in lines[0]
    assert "weights lite" in proc.stdout


def test_damaged_cached_imagenet_file_imagenet_names_it(damaged_cache, tiny, tmp_path):
    base, style = tiny
    proc = call_cli(TRANSFER, base, style, tmp_path / "r", "--iter", "1", "--weights", "imagenet")
    assert_clean_error(proc, str(damaged_cache), "damaged", "delete it")


def test_damaged_cached_imagenet_file_is_replaced_by_a_good_download(damaged_cache, tmp_path,
                                                                     monkeypatch):
    good = tmp_path / "mirror.h5"
    good.write_bytes(LITE_H5.read_bytes())
    monkeypatch.setattr(weights_mod, "IMAGENET_MD5", hashlib.md5(good.read_bytes()).hexdigest())
    monkeypatch.setenv("STYLEFLOW_IMAGENET_URL", good.as_uri())
    loaded = weights_mod.resolve_weights("imagenet")
    assert loaded.source == "imagenet" and "block1_conv1" in loaded.layers
    assert damaged_cache.read_bytes() == good.read_bytes()
    assert os.listdir(damaged_cache.parent) == [damaged_cache.name]  # no temporary left


def test_offline_auto_note_is_one_line(tiny, tmp_path):
    assert not (Path(EMPTY_KERAS_HOME) / "models" / weights_mod.IMAGENET_FILE).exists()
    base, style = tiny
    proc = call_cli(TRANSFER, base, style, tmp_path / "r", "--iter", "1", "--height", "32")
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.parametrize("script,args,needle", [
    (STYLE, ["--content-layers", ""], "content layers"),
    (STYLE, ["--content-layers", "", "--style-layers", ""], "content layers"),
    (TRANSFER, ["--style_layers", ""], "style layers"),
])
def test_empty_layer_lists_are_refused(script, args, needle, tiny, tmp_path):
    base, style = tiny
    common = ([base, style, tmp_path / "r", "--iter", "1", "--weights", "random"]
              if script == TRANSFER else
              ["--content", base, "--styles", style, "--output", tmp_path / "o.png",
               "--iterations", "1", "--network", "random"])
    proc = call_cli(script, *common, *args)
    assert_clean_error(proc, needle, "empty")
    assert not list(tmp_path.glob("r_*")) and not (tmp_path / "o.png").exists()


@pytest.mark.slow
def test_huge_style_layer_weight_exponent(tiny, tmp_path):
    base, style = tiny
    proc = call_cli(STYLE, "--content", base, "--styles", style, "--output", tmp_path / "o.png",
                    "--iterations", "1", "--network", "random", "--style-layer-weight-exp",
                    "1e100")
    assert proc.returncode == 0, proc.stderr
    run = Stylizer("random").iter_stylize(str(base), str(style), style_layer_weight_exp=1e100,
                                          iterations=1)
    weights = run.problem.objective.style_layers
    # All the weight goes to the deepest layer; the weights still average 1.
    assert list(weights.values())[-1] == pytest.approx(len(weights))


def test_transparent_colour_in_rgb_and_grey_png_becomes_white(tmp_path):
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:, :8] = (10, 20, 30)
    Image.fromarray(rgb).save(tmp_path / "rgb.png", transparency=(10, 20, 30))
    loaded = load_image(tmp_path / "rgb.png")
    assert (loaded[:, :8] == 255).all() and (loaded[:, 8:] == 0).all()
    grey = np.zeros((16, 16), np.uint8)
    grey[:8] = 40
    Image.fromarray(grey).save(tmp_path / "grey.png", transparency=40)
    loaded = load_image(tmp_path / "grey.png")
    assert (loaded[:8] == 255).all() and (loaded[8:] == 0).all()


def test_float_tiff_in_0_to_1_is_scaled(tmp_path):
    data = np.full((16, 16), 0.5, np.float32)
    data[:4] = 1.0
    Image.fromarray(data, "F").save(tmp_path / "f.tif")
    loaded = load_image(tmp_path / "f.tif")
    assert loaded[8, 8, 0] == 128 and loaded[0, 0, 0] == 255


def test_rgba_and_16_bit_rgb_inputs(tmp_path):
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :8, 3] = 255  # left opaque red, right transparent
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    loaded = load_image(tmp_path / "rgba.png")
    assert tuple(loaded[0, 0]) == (200, 0, 0) and tuple(loaded[0, 15]) == (255, 255, 255)
    # 16-bit RGB PNG, mid-grey: scaled (128), not clipped (255).
    pixels = np.full((16, 16, 3), 128 * 257, ">u2")
    raw = b"".join(b"\0" + row.tobytes() for row in pixels)

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    (tmp_path / "rgb16.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 16, 16, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    loaded = load_image(tmp_path / "rgb16.png")
    assert loaded.shape == (16, 16, 3) and (loaded == 128).all()


@pytest.mark.parametrize("name", ["o.h5", "o.emf", "o.xbm", "o.blp", "o.ico", "o.msp", "o"])
def test_unusable_output_extensions_refused_before_any_work(name, tiny, tmp_path):
    base, style = tiny
    proc = call_cli(STYLE, "--content", base, "--styles", style, "--output", tmp_path / name,
                    "--iterations", "1", "--network", "random")
    assert_clean_error(proc, "--output", "cannot write images with extension" if "." in name
                       else "the name has no extension")
    assert not any(tmp_path.glob("o*"))
    proc = call_cli(TRANSFER, base, style, tmp_path / "r", "--iter", "1", "--weights",
                    "random", "--plot", tmp_path / name)
    assert_clean_error(proc, "--plot")


def test_adam_interrupted_before_its_first_step_writes_nothing(tiny, tmp_path, monkeypatch):
    from styleflow.api import runs as api

    def interrupted(self):
        raise KeyboardInterrupt
    monkeypatch.setattr(api.AdamLoop, "step", interrupted)
    base, style = tiny
    proc = call_cli(STYLE, "--content", base, "--styles", style, "--output", tmp_path / "o.png",
                    "--iterations", "5", "--network", "random")
    assert proc.returncode == 130
    assert "before the first step; nothing written" in proc.stderr
    assert not list(tmp_path.glob("o*"))


@pytest.mark.slow
def test_interrupt_with_a_failing_plot_still_writes_the_image(tiny, tmp_path, monkeypatch):
    from styleflow.cli import recorder

    def fail(*args, **kwargs):
        raise StyleflowError("--plot: disk full")
    monkeypatch.setattr(recorder, "plot_losses", fail)
    calls = []

    def interrupt(self, count, loss):  # Ctrl-C during the second iteration
        calls.append(count)
        if count == 30:
            raise KeyboardInterrupt
    monkeypatch.setattr(recorder.RunRecorder, "step", interrupt)
    base, style = tiny
    proc = call_cli(TRANSFER, base, style, tmp_path / "r", "--iter", "5", "--height", "32",
                    "--weights", "random", "--plot", tmp_path / "p.png")
    assert proc.returncode == 1 and "disk full" in proc.stderr
    with Image.open(tmp_path / "r_interrupted.png") as img:
        assert img.size == (48, 32)


@pytest.mark.slow
def test_interrupted2_when_resuming_from_the_interrupted_file(tiny, tmp_path):
    base, style = tiny
    first = tmp_path / "r_interrupted.png"
    make_image(first, (48, 32), 9)
    before = first.read_bytes()
    proc = subprocess.run(
        [sys.executable, "-c",
         "import sys, signal; from styleflow.cli.transfer import main\n"
         "from styleflow.cli import recorder\n"
         "def stop(self, n, loss):\n"
         "    if n == 25: raise KeyboardInterrupt\n"
         "recorder.RunRecorder.step = stop\n"
         f"sys.exit(main([{str(base)!r}, {str(style)!r}, {str(tmp_path / 'r')!r}, '--iter', '3',"
         f" '--height', '32', '--weights', 'random', '--init', {str(first)!r}]))"],
        capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 130, proc.stderr
    assert first.read_bytes() == before  # the input is untouched
    assert (tmp_path / "r_interrupted2.png").exists()


@pytest.mark.slow
def test_sigterm_on_lbfgs_and_sigint_on_adam(tiny, tmp_path):
    base, style = tiny
    runs = [([sys.executable, str(ROOT / TRANSFER), str(base), str(style), str(tmp_path / "t"),
              "--weights", "random", "--iter", "1000", "--height", "32", "--jit",
              "off"],
             tmp_path / "t_at_iteration_00.png", signal.SIGTERM, 143, tmp_path / "t_interrupted.png"),
            ([sys.executable, str(ROOT / STYLE), "--content", str(base), "--styles", str(style),
              "--output", str(tmp_path / "a.png"), "--iterations", "100000", "--jit",
              "off", "--network",
              "random", "--checkpoint-output", str(tmp_path / "a%s.png"),
              "--checkpoint-iterations", "5"],
             tmp_path / "a5.png", signal.SIGINT, 130, tmp_path / "a_interrupted.png")]
    with contextlib.ExitStack() as stack:  # both at once: the test takes one run's time
        procs = [stack.enter_context(child(args, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, text=True))
                 for args, *_ in runs]
        for proc, (_, started, sig, code, kept) in zip(procs, runs):
            deadline = time.time() + 120
            while not started.exists() and time.time() < deadline and proc.poll() is None:
                time.sleep(0.2)
            proc.send_signal(sig)
        for proc, (_, started, sig, code, kept) in zip(procs, runs):
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == code, err
            assert "Traceback" not in err and str(kept) in err
            with Image.open(kept) as img:
                assert img.size == (48, 32)


@pytest.mark.slow
def test_a_log_that_fails_mid_run_is_one_error_line(tiny, tmp_path, monkeypatch):
    import csv

    original = csv.DictWriter.writerow
    rows = []

    def writerow(self, row):  # the disk fills up at the second row (after the header)
        rows.append(row)
        if len(rows) == 3:
            raise OSError(28, "No space left on device")
        return original(self, row)
    monkeypatch.setattr(csv.DictWriter, "writerow", writerow)
    base, style = tiny
    proc = call_cli(TRANSFER, base, style, tmp_path / "r", "--iter", "3", "--height", "32",
                    "--weights", "random", "--log", tmp_path / "run.csv")
    assert_clean_error(proc, "--log", "No space left")
    monkeypatch.undo()
    assert len(read_log(tmp_path / "run.csv")) == 1


def test_a_machine_names_its_leftovers_alike_in_every_process_and_apart_from_another_namespace():
    # Temporaries and XLA work folders are swept by process number only where this id
    # matches: the same in another process here; another for a process in another PID
    # namespace (a container beside this one, host name and volume shared), whose process
    # numbers are not ours.
    code = "from styleflow.system import machine_id; print(machine_id())"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, cwd=ROOT).stdout.strip()
    assert other == machine_id()
    try:
        # --kill-child: should unshare be killed (the timeout), its child goes with it.
        apart = subprocess.run(["unshare", "--pid", "--kill-child", sys.executable, "-c", code],
                               capture_output=True, text=True, cwd=ROOT, timeout=60,
                               stdin=subprocess.DEVNULL, preexec_fn=default_signals)
    except FileNotFoundError:
        pytest.skip("no unshare command to start a process in another PID namespace")
    if apart.returncode != 0:
        pytest.skip(f"cannot make a PID namespace here: {apart.stderr.strip()[-200:]}")
    assert len(apart.stdout.strip()) == 16 and apart.stdout.strip() != machine_id()


def test_leftovers_of_a_killed_writer_are_removed_but_a_live_writers_are_kept(tmp_path):
    from styleflow.io import files
    # A process that has ended: its pid is free (checked right after it exits).
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    host = machine_id()
    # Another machine's (another container's, this one's before a reboot): its processes
    # cannot be asked, so it counts as left over once untouched for a day.
    elsewhere = "0123456789abcdef"
    stale = [tmp_path / f".out.png.{host}.{dead}-abc.tmp",
             tmp_path / f".styleflow-check.{host}.{dead}-xyz",
             tmp_path / f".out.png.{elsewhere}.{dead}-old.tmp"]
    live = tmp_path / f".out.png.{host}.{os.getpid()}-def.tmp"  # this process: alive
    recent = tmp_path / f".out.png.{elsewhere}.{dead}-ghi.tmp"  # maybe alive over there
    # A user's file of the same shape but no machine id, however old, is not ours.
    user_files = [tmp_path / ".hidden.tmp", tmp_path / f".notes.v2.{dead}-draft.tmp"]
    for path in [*stale, live, recent, *user_files]:
        path.write_bytes(b"x")
    long_ago = time.time() - OTHER_MACHINE_IDLE_SECONDS - 60
    for path in [stale[2], user_files[1]]:
        os.utime(path, (long_ago, long_ago))
    files.prepare_output_dir(tmp_path / "out.png")
    assert not any(p.exists() for p in stale)
    assert live.exists() and recent.exists() and all(p.exists() for p in user_files)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in [live, recent, *user_files])  # the probe left nothing either
    # And a writer names its temporaries so: this machine's id and its process number.
    seen = []
    files.write_atomically(tmp_path / "new.png",
                           lambda handle: seen.extend(p.name for p in tmp_path.glob(".new.png.*")))
    assert len(seen) == 1 and seen[0].startswith(f".new.png.{host}.{os.getpid()}-")
