"""Watching and keeping a run: progress bar vs lines, --quiet, --log, --plot, --gif, --seed,
SIGTERM, resuming with --init / --initial."""

import io
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, assert_clean_error, call_cli, child, cli_env, default_signals, make_image
from styleflow.cli.recorder import BAR, RunRecorder
from styleflow.report.plot import SERIES
from styleflow.report.runlog import read_log

TRANSFER = "neural_style_transfer.py"
STYLE = "neural_style.py"


def printed_totals(stdout):
    return [float(v) for v in re.findall(r"iteration \d+/\d+: loss (\S+)", stdout)]


@pytest.mark.slow
def test_transfer_log_plot_and_gif(tiny, tmp_path):
    base, style = tiny
    prefix = tmp_path / "r"
    proc = call_cli(TRANSFER, base, style, prefix, "--weights", "random", "--iter", "3",
                   "--height", "32", "--log", tmp_path / "run.csv", "--plot",
                   tmp_path / "loss.png", "--gif", tmp_path / "run.gif")
    assert proc.returncode == 0, proc.stderr
    rows = read_log(tmp_path / "run.csv")
    assert [r["iteration"] for r in rows] == [1, 2, 3]
    assert [r["evaluations"] for r in rows] == [20, 40, 60]
    # The log holds what was printed, and its parts add up.
    np.testing.assert_allclose([r["total"] for r in rows], printed_totals(proc.stdout), rtol=1e-4)
    for r in rows:
        assert r["image"].endswith(f"r_at_iteration_{r['iteration'] - 1:02d}.png")
    with Image.open(tmp_path / "loss.png") as img:
        assert img.format == "PNG" and img.size == (800, 500)
        pixels = np.asarray(img.convert("RGB"), np.int16)
    # Every loss part the run has is drawn as a curve in its own colour (text and axes are
    # grey/black); the parts it has not (photo, temporal) are not.
    for name, colour in SERIES:
        rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
        near = np.abs(pixels - rgb).max(axis=2) < 12
        if name in rows[0]:
            assert near.sum() > 300, f"no {name} curve"
        else:
            assert near.sum() < 30, f"a {name} curve the run has no part for"
    with Image.open(tmp_path / "run.gif") as gif:
        assert gif.size == (48, 32) and gif.n_frames == 3 and gif.info.get("loop") == 0
        gif.seek(2)
        last = np.asarray(gif.convert("RGB"), np.int16)
    saved = np.asarray(Image.open(f"{prefix}_at_iteration_02.png"), np.int16)
    assert np.abs(last - saved).mean() < 12  # the GIF's last frame is the last image (palette)
    assert f"wrote {tmp_path / 'run.gif'}" in proc.stdout
    # A log is written anew: the same command again replaces its own log, but a file that
    # is not a run's log (a mask image, notes) is refused before any work, unchanged.
    again = call_cli(TRANSFER, base, style, prefix, "--weights", "random", "--iter", "1",
                     "--height", "32", "--log", tmp_path / "run.csv")
    assert again.returncode == 0, again.stderr
    assert [r["iteration"] for r in read_log(tmp_path / "run.csv")] == [1]
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me\n")
    mask = make_image(tmp_path / "mask.png", (16, 16), 5)
    for kept in (notes, mask):
        before = kept.read_bytes()
        refused = call_cli(TRANSFER, base, style, tmp_path / "q", "--weights", "random",
                           "--iter", "1", "--height", "32", "--log", kept)
        assert_clean_error(refused, "--log", str(kept), "is not a run's log")
        assert kept.read_bytes() == before and not list(tmp_path.glob("q_*"))


@pytest.mark.slow
def test_adam_jsonl_log_every_step_and_quiet(tiny, tmp_path):
    content, style = tiny
    out = tmp_path / "o.png"
    proc = call_cli(STYLE, "--content", content, "--styles", style, "--output", out,
                   "--iterations", "5", "--network", "random", "--log", tmp_path / "run.jsonl",
                   "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""
    rows = read_log(tmp_path / "run.jsonl")
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[-1]["total"] < rows[0]["total"]
    assert out.exists()


@pytest.mark.slow
def test_progress_bar_on_a_terminal_lines_otherwise(tiny, tmp_path):
    content, style = tiny
    args = [sys.executable, str(ROOT / STYLE), "--content", str(content), "--styles", str(style),
            "--output", str(tmp_path / "o.png"), "--iterations", "6", "--network", "random",
            "--print-iterations", "3"]
    pid, fd = pty.fork()
    if pid == 0:  # child: run the CLI on the pseudo-terminal
        try:
            os.chdir(ROOT)
            default_signals()
            os.execve(args[0], args, cli_env())
        finally:
            os._exit(127)
    chunks = []
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if not ready:
                continue
            try:
                data = os.read(fd, 4096)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
    finally:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == 0:  # still running: the test failed or timed out; never leave it behind
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
        os.close(fd)
    tty_out = b"".join(chunks).decode()
    assert os.waitstatus_to_exitcode(status) == 0, tty_out
    # The bar itself, redrawn in place: percentage, bar, count and unit, elapsed and ETA.
    assert re.search(r"\r100%\|[^|\r\n]*\| 6/6 steps \[\d+:\d+ elapsed, ETA \d+:\d+", tty_out), tty_out
    assert "iteration 3/6: loss" in tty_out

    piped = call_cli(STYLE, *args[2:], "--overwrite")
    assert piped.returncode == 0, piped.stderr
    assert "\r" not in piped.stdout and "ETA" not in piped.stdout and "6/6 steps" not in piped.stdout
    assert len(printed_totals(piped.stdout)) == 2


def test_progress_bar_text():
    stream = io.StringIO()
    recorder = RunRecorder(200, "evaluations", stream=stream, mode=BAR)
    recorder.step(50, 1234.5)
    recorder.line("iteration 1/10: a line above the bar")
    recorder.close()
    text = stream.getvalue()
    assert re.search(r" 25%\|[^|]*\| 50/200 evaluations \[", text), text
    assert "loss 1.2345e+03" in text and "ETA" in text
    assert "iteration 1/10: a line above the bar\n" in text


@pytest.mark.slow
def test_same_seed_same_files_other_seed_other_files(tiny, tmp_path):
    """Adam: the seed sets the start noise. With the shipped weights (which do not depend on
    the seed) another seed must still give another picture."""
    content, style = tiny
    outputs = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        out = tmp_path / f"{name}.png"
        proc = call_cli(STYLE, "--content", content, "--styles", style, "--output", out,
                        "--iterations", "3", "--network", "lite", "--seed", seed, "--quiet")
        assert proc.returncode == 0, proc.stderr
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
    assert outputs[0] != outputs[2]


@pytest.mark.slow
def test_lbfgs_seed_repeats_images_and_log_but_seconds(tiny, tmp_path):
    """L-BFGS with --seed: identical images and logs, except the logs' seconds columns."""
    content, style = tiny
    logs = []
    for name in ("a", "b"):
        proc = call_cli(TRANSFER, content, style, tmp_path / name, "--weights", "random",
                        "--seed", "5", "--iter", "2", "--height", "32", "--log",
                        tmp_path / f"{name}.jsonl", "--quiet")
        assert proc.returncode == 0, proc.stderr
        logs.append([{k: v for k, v in row.items() if k not in ("seconds", "elapsed", "image")}
                     for row in read_log(tmp_path / f"{name}.jsonl")])
    for i in (0, 1):
        assert (tmp_path / f"a_at_iteration_{i:02d}.png").read_bytes() == \
            (tmp_path / f"b_at_iteration_{i:02d}.png").read_bytes()
    assert logs[0] == logs[1] and len(logs[0]) == 2


@pytest.mark.slow
def test_sigterm_keeps_image_and_log_then_resume(tmp_path):
    content = make_image(tmp_path / "c.png", (48, 32), 1)
    style = make_image(tmp_path / "s.png", (48, 32), 2)
    log = tmp_path / "run.csv"
    with child([sys.executable, str(ROOT / STYLE), "--content", str(content), "--styles",
                str(style), "--output", str(tmp_path / "o.png"), "--iterations", "100000",
                "--jit", "off", "--network", "random", "--log", str(log)],
               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and \
                (not log.exists() or len(log.read_text().splitlines()) < 30):
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    interrupted = tmp_path / "o_interrupted.png"
    assert str(interrupted) in err and str(log) in err
    assert not (tmp_path / "o.png").exists()
    rows = read_log(log)
    assert len(rows) >= 29
    reached = min(r["total"] for r in rows)

    # Resuming from the interrupted image starts near where the run stopped, far below a
    # fresh start from noise.
    resumed = call_cli(STYLE, "--content", content, "--styles", style, "--output",
                      tmp_path / "o.png", "--iterations", "1", "--network", "random",
                      "--initial", interrupted, "--log", tmp_path / "resumed.csv")
    assert resumed.returncode == 0, resumed.stderr
    first = read_log(tmp_path / "resumed.csv")[0]["total"]
    assert first < rows[0]["total"] / 2
    assert first < reached * 1.5


@pytest.mark.slow
def test_transfer_resume_with_init(tiny, tmp_path):
    base, style = tiny
    first = call_cli(TRANSFER, base, style, tmp_path / "a", "--weights", "random", "--iter", "2",
                    "--height", "32")
    assert first.returncode == 0, first.stderr
    resumed = call_cli(TRANSFER, base, style, tmp_path / "b", "--weights", "random", "--iter", "1",
                      "--height", "32", "--init", tmp_path / "a_at_iteration_01.png")
    assert resumed.returncode == 0, resumed.stderr
    # One more iteration from the earlier result beats the earlier result's loss.
    assert printed_totals(resumed.stdout)[0] < printed_totals(first.stdout)[-1] * 1.01
    assert printed_totals(resumed.stdout)[0] < printed_totals(first.stdout)[0]


@pytest.mark.parametrize("option", ["--log", "--plot", "--gif"])
def test_run_outputs_never_overwrite_inputs(tiny, tmp_path, option):
    base, style = tiny
    target = tmp_path / "style.gif"
    Image.open(style).save(target)
    if option == "--plot":
        target = style
    before = target.read_bytes()
    proc = call_cli(TRANSFER, base, target if option != "--plot" else style, tmp_path / "r",
                   "--weights", "random", "--iter", "1", option, target)
    assert_clean_error(proc, "input")
    assert target.read_bytes() == before
    assert not list(tmp_path.glob("r_*"))


def test_outputs_get_ordinary_file_permissions(tmp_path):
    from styleflow.io.images import save_image

    old = os.umask(0o022)
    try:
        save_image(tmp_path / "o.png", np.zeros((8, 8, 3), np.uint8))
    finally:
        os.umask(old)
    # Written through a private temporary file, but readable like any other output.
    assert (tmp_path / "o.png").stat().st_mode & 0o777 == 0o644
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_failed_write_is_one_clear_error_and_leaves_the_old_file(tmp_path, monkeypatch):
    import errno

    from PIL import Image as PILImage

    from styleflow.errors import StyleflowError
    from styleflow.io.images import save_image

    target = tmp_path / "o.png"
    save_image(target, np.zeros((8, 8, 3), np.uint8))
    before = target.read_bytes()

    def disk_full(self, fp, *args, **kwargs):
        fp.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(PILImage.Image, "save", disk_full)
    with pytest.raises(StyleflowError, match="cannot write .*o.png.*No space left"):
        save_image(target, np.full((8, 8, 3), 255, np.uint8))
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["o.png"]
