"""When the operating system says no: every file the tools touch (inputs, outputs, --log, --plot,
--gif, the batch's status log and manifest, the weights file) can be refused at the start or
mid-run, and each refusal ends in one line naming the file and the reason, a non-zero exit and
no traceback. A log, plot or GIF refused mid-run does not lose the images.

One errno kind per test group, made for real where the test can (a symlink loop, a 300-byte
name, a file used as a folder, /dev/full, a read-only tmpfs, a non-root child on a 0o500
folder) and by a patched low-level call for EIO."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from PIL import Image

from conftest import (ROOT, assert_clean_error, call_cli, cli_env, default_signals, make_image,
                      run_cli, tmpfs)
from styleflow.errors import StyleflowError
from styleflow.io import files

TRANSFER = "neural_style_transfer.py"
STYLE = "neural_style.py"
LONG = "x" * 300


def transfer(base, style, prefix, *extra):
    return call_cli(TRANSFER, base, style, prefix, "--iter", "1", "--width", "32",
                    "--weights", "random", "--jit", "off", *extra)


def stylize(base, style, output, *extra):
    return call_cli(STYLE, "--content", base, "--styles", style, "--output", output,
                    "--iterations", "2", "--width", "32", "--network", "random", "--jit", "off",
                    *extra)


def batch(*extra):
    return call_cli("styleflow", "batch", "--weights", "random", "--iter", "1", "--width", "32",
                    *extra)


def assert_image(path: Path) -> None:
    with Image.open(path) as img:
        img.load()
        assert img.size[0] == 32


def assert_warned_but_kept(proc, option: str, path: Path, reason: str) -> None:
    """A secondary file refused: one line naming it and why, exit 1, no traceback."""
    assert_clean_error(proc, option, str(path), reason)
    assert proc.returncode == 1


# ELOOP: a symlink pointing to itself, as an input and as a folder of an output.

@pytest.fixture
def loop(tmp_path):
    link = tmp_path / "loop"
    os.symlink(link, link)
    return link


@pytest.mark.parametrize("role", ["base image", "--weights", "--init"])
def test_symlink_loop_as_an_input(role, loop, tiny, tmp_path):
    base, style = tiny
    extra = {"--weights": ["--weights", loop], "--init": ["--init", loop]}.get(role, [])
    proc = call_cli(TRANSFER, loop if role == "base image" else base, style, tmp_path / "r",
                    "--iter", "1", "--width", "32", *extra,
                    *([] if role == "--weights" else ["--weights", "random"]))
    assert_clean_error(proc, str(loop), "symbolic link loop")
    assert not list(tmp_path.glob("r_*"))


@pytest.mark.parametrize("option", ["prefix", "--log", "--plot", "--gif"])
def test_symlink_loop_as_an_output_folder(option, loop, tiny, tmp_path):
    base, style = tiny
    target = loop / {"prefix": "r", "--log": "l.csv", "--plot": "p.png", "--gif": "g.gif"}[option]
    prefix = target if option == "prefix" else tmp_path / "r"
    proc = transfer(base, style, prefix, *([] if option == "prefix" else [option, target]))
    assert_clean_error(proc, option, str(loop), "symbolic link loop")


# ENAMETOOLONG: a 300-byte name (the usual limit is 255).

@pytest.mark.parametrize("role", ["content image", "--output", "--log", "--plot", "--gif"])
def test_name_too_long(role, tiny, tmp_path):
    base, style = tiny
    long = {"content image": tmp_path / f"{LONG}.png", "--output": tmp_path / f"{LONG}.png",
            "--log": tmp_path / f"{LONG}.csv", "--plot": tmp_path / f"{LONG}.png",
            "--gif": tmp_path / f"{LONG}.gif"}[role]
    if role == "content image":
        proc = stylize(long, style, tmp_path / "o.png")
    elif role == "--output":
        proc = stylize(base, style, long)
    else:
        proc = stylize(base, style, tmp_path / "o.png", role, long)
    assert_clean_error(proc, role, LONG, "file name too long")
    assert not (tmp_path / "o.png").exists()  # refused before any work


@pytest.mark.parametrize("option", ["--contents", "--manifest", "--status"])
def test_name_too_long_in_a_batch(option, tiny, tmp_path):
    base, style = tiny
    long = tmp_path / f"{LONG}.{'csv' if option == '--manifest' else 'png'}"
    if option == "--manifest":
        proc = batch("--manifest", long)
    else:
        proc = batch("--contents", long if option == "--contents" else base, "--styles", style,
                     "--out", tmp_path / "b",
                     *(["--status", tmp_path / f"{LONG}.jsonl"] if option == "--status" else []))
    assert_clean_error(proc, option, LONG, "file name too long")


# ENOTDIR: a path under a regular file.

@pytest.mark.parametrize("role", ["base image", "--weights", "prefix", "--gif", "--status",
                                  "--manifest"])
def test_a_file_used_as_a_folder(role, tiny, tmp_path):
    base, style = tiny
    plain = tmp_path / "file.txt"
    plain.write_text("x")
    under = plain / "o.png"
    if role in ("--status", "--manifest"):
        extra = (["--manifest", plain / "m.csv"] if role == "--manifest" else
                 ["--contents", base, "--styles", style, "--out", tmp_path / "b",
                  "--status", plain / "s.jsonl"])
        proc = batch(*extra)
        reason = "is a file, not a folder"
    else:
        proc = call_cli(TRANSFER, under if role == "base image" else base, style,
                        under.with_suffix("") if role == "prefix" else tmp_path / "r",
                        "--iter", "1", "--width", "32",
                        "--weights", under if role == "--weights" else "random",
                        *(["--gif", plain / "g.gif"] if role == "--gif" else []))
        reason = "is a file, not a folder"
    assert_clean_error(proc, role, str(plain), reason)
    assert plain.read_text() == "x"


# EROFS: a read-only tmpfs mounted for the test (root only).

@pytest.fixture
def read_only(tmp_path):
    with tmpfs(tmp_path / "ro", "ro,size=1m") as folder:
        yield folder


@pytest.mark.parametrize("role", ["prefix", "--log", "--plot", "--gif", "--status"])
def test_read_only_file_system(role, read_only, tiny, tmp_path):
    base, style = tiny
    if role == "--status":
        proc = batch("--contents", base, "--styles", style, "--out", tmp_path / "b",
                     "--status", read_only / "s.jsonl")
    else:
        name = {"prefix": "r", "--log": "l.csv", "--plot": "p.png", "--gif": "g.gif"}[role]
        prefix = read_only / name if role == "prefix" else tmp_path / "r"
        proc = transfer(base, style, prefix,
                        *([] if role == "prefix" else [role, read_only / name]))
    assert_clean_error(proc, role, str(read_only), "read-only file system")
    assert not list(tmp_path.glob("r_*"))  # refused at the start


# ENOSPC: /dev/full, itself or through a symlink.

@pytest.fixture
def dev_full():
    if not os.path.exists("/dev/full") or not stat.S_ISCHR(os.stat("/dev/full").st_mode):
        pytest.skip("no /dev/full here")
    yield Path("/dev/full")
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)  # written into, never replaced


def test_a_refused_write_says_the_reason_apart_from_the_path(dev_full, tmp_path):
    from styleflow.errors import StyleflowError
    from styleflow.io.files import prepare_output_dir, write_atomically

    with pytest.raises(StyleflowError) as refused:
        write_atomically(dev_full, lambda handle: handle.write(b"x" * 2**16))
    assert refused.value.reason == "No space left on device", refused.value
    (tmp_path / "file").write_text("")
    with pytest.raises(StyleflowError) as refused:
        prepare_output_dir(tmp_path / "file" / "out.png")
    assert "'out.png'" not in refused.value.reason and "folder" in refused.value.reason


@pytest.mark.slow
@pytest.mark.parametrize("option", ["--plot", "--gif"])
def test_plot_or_gif_on_a_full_disk_keeps_the_images(option, dev_full, tiny, tmp_path):
    base, style = tiny
    target = tmp_path / ("full.png" if option == "--plot" else "full.gif")
    os.symlink(dev_full, target)  # the extension tells the format
    proc = transfer(base, style, tmp_path / "r", option, target)
    assert_warned_but_kept(proc, option, target, "no space left on device")
    assert_image(tmp_path / "r_at_iteration_00.png")


@pytest.mark.slow
def test_a_log_on_a_full_disk_mid_run_keeps_the_image(dev_full, tiny, tmp_path):
    base, style = tiny
    log = tmp_path / "run.jsonl"  # JSON Lines: no header, so the first row is refused mid-run
    os.symlink(dev_full, log)
    proc = stylize(base, style, tmp_path / "o.png", "--log", log)
    assert_warned_but_kept(proc, "--log", log, "no space left on device")
    assert "goes on without it" in proc.stderr
    assert_image(tmp_path / "o.png")


@pytest.mark.slow
def test_a_csv_log_on_a_full_disk_is_refused_at_the_start(dev_full, tiny, tmp_path):
    base, style = tiny
    proc = transfer(base, style, tmp_path / "r", "--log", dev_full)
    assert_clean_error(proc, "--log", "/dev/full", "no space left on device")
    assert not list(tmp_path.glob("r_*"))


@pytest.mark.slow
def test_an_output_image_on_a_full_disk(dev_full, tiny, tmp_path):
    base, style = tiny
    os.symlink(dev_full, tmp_path / "r_at_iteration_00.png")
    proc = transfer(base, style, tmp_path / "r")
    assert_clean_error(proc, "prefix: cannot write", "r_at_iteration_00.png",
                       "no space left on device")
    # The output of styleflow photo and style is named by its role too.
    for command, role in (("photo", "output"), ("style", "--output")):
        output = tmp_path / f"out-{command}.png"
        os.symlink(dev_full, output)
        args = ((base, style, output, "--weights") if command == "photo" else
                ("--content", base, "--styles", style, "--output", output, "--network"))
        proc = call_cli("styleflow", command, *args, "random", "--iterations", "1",
                        "--width", "32", "--jit", "off", "--overwrite")
        assert_clean_error(proc, f"{role}: cannot write", str(output),
                           "no space left on device")


@pytest.mark.slow
def test_a_checkpoint_on_a_full_disk_keeps_the_output(dev_full, tiny, tmp_path):
    base, style = tiny
    os.symlink(dev_full, tmp_path / "ck_1.png")
    proc = stylize(base, style, tmp_path / "o.png", "--checkpoint-output",
                   tmp_path / "ck_%s.png", "--checkpoint-iterations", "1")
    assert_warned_but_kept(proc, "--checkpoint-output", tmp_path / "ck_1.png",
                           "no space left on device")
    assert "goes on without checkpoints" in proc.stderr
    assert_image(tmp_path / "o.png")
    assert not (tmp_path / "ck_2.png").exists()  # no further checkpoints


@pytest.mark.parametrize("option", ["--output", "--checkpoint-output"])
def test_a_folder_at_an_output_is_refused_before_any_work(option, tiny, tmp_path):
    base, style = tiny
    (tmp_path / "o.png").mkdir()
    (tmp_path / "ck_2.png").mkdir()
    extra = (["--overwrite"] if option == "--output" else
             ["--checkpoint-output", tmp_path / "ck_%s.png", "--checkpoint-iterations", "2"])
    proc = stylize(base, style, tmp_path / ("o.png" if option == "--output" else "p.png"),
                   *extra)
    assert_clean_error(proc, option, "is a directory, not a file")
    assert (tmp_path / "o.png").is_dir() and not (tmp_path / "p.png").exists()


# A device or a pipe where a file is read whole or appended to: /dev/zero and /dev/full read
# without end, a pipe waits for a writer.

def test_devices_and_pipes_are_no_regular_files(tmp_path):
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    for device in [pipe, *(d for d in ("/dev/zero", "/dev/full") if os.path.exists(d))]:
        with pytest.raises(StyleflowError, match=r"--status '.*': not a regular file"):
            files.regular_file(device, "--status")
    with pytest.raises(StyleflowError, match="is a directory, not a file"):
        files.regular_file(tmp_path, "--manifest")
    assert files.regular_file(tmp_path / "none.jsonl", "--status") is None
    assert files.regular_file(os.devnull, "--status") is not None  # a way to keep no log
    (tmp_path / "log.jsonl").write_text("{}\n")
    assert files.regular_file(tmp_path / "log.jsonl", "--status").st_size == 3


@pytest.mark.parametrize("option", ["--status", "--manifest"])
def test_a_pipe_as_status_log_or_manifest_is_refused_without_waiting(option, tiny, tmp_path):
    base, style = tiny
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    args = (["--manifest", pipe] if option == "--manifest" else
            ["--contents", base, "--styles", style, "--out", tmp_path / "b", "--status", pipe])
    proc = run_cli("styleflow", "batch", "--weights", "random", "--iter", "1", "--width", "32",
                   *args, timeout=120)  # a child: were it to wait on the pipe, it is killed
    assert_clean_error(proc, option, str(pipe), "not a regular file")
    assert not list(tmp_path.glob("b/*.png"))


@pytest.mark.slow
def test_the_null_device_as_status_log_keeps_no_log(tiny, tmp_path):
    base, style = tiny
    for _ in range(2):  # the second run reads it back: nothing done, so the pair runs again
        proc = batch("--contents", base, "--styles", style, "--out", tmp_path / "b",
                     "--status", os.devnull, "--overwrite")
        assert proc.returncode == 0, proc.stderr
        assert_image(tmp_path / "b" / "base_style.png")


def test_an_unusable_out_folder_is_named_as_out(loop, tiny, tmp_path):
    base, style = tiny
    proc = batch("--contents", base, "--styles", style, "--out", loop / "b")
    assert_clean_error(proc, "--out's status log", str(loop), "symbolic link loop")
    assert "--status" not in proc.stderr  # not given, so not named


# EACCES: a child that is not root (root passes every permission check).

@pytest.fixture
def shared_folder():
    """A folder a non-root child can reach (pytest's own are private to root)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to start a child as another user")
    folder = Path(tempfile.mkdtemp(prefix="styleflow-eacces-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        for path in folder.rglob("*"):
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        shutil.rmtree(folder)


@pytest.mark.slow
@pytest.mark.parametrize("role", ["base image", "prefix", "--weights"])
def test_permission_denied_for_a_non_root_user(role, shared_folder):
    base = make_image(shared_folder / "base.png", (48, 32), 1)
    style = make_image(shared_folder / "style.png", (40, 40), 2)
    locked = shared_folder / "locked"
    locked.mkdir()
    weights = "random"
    if role == "base image":
        base = make_image(locked / "base.png", (48, 32), 1)
        locked.chmod(0o000)  # cannot even look inside
    elif role == "--weights":
        weights = locked / "vgg19.h5"
        weights.write_bytes(b"\x89HDF\r\n\x1a\n")
        weights.chmod(0o000)  # can see it, cannot read it
    else:
        locked.chmod(0o500)  # can look, cannot write
    open_to_all = shared_folder / "open"
    open_to_all.mkdir()
    open_to_all.chmod(0o777)
    prefix = (locked if role == "prefix" else open_to_all) / "r"
    # The interpreter lives where only root may look (~root/.pyenv): the child starts as root,
    # imports what the checks use, then becomes nobody for good before the command runs.
    argv = [str(base), str(style), str(prefix), "--iter", "1", "--width", "32",
            "--weights", str(weights)]
    code = ("import os, sys\n"
            "import locale, gettext, argparse, tempfile, difflib, PIL.Image, PIL.PngImagePlugin\n"
            "import styleflow.cli.transfer as t, styleflow.cli.common, styleflow.io.images, "
            "styleflow.io.files, styleflow.model.weights, styleflow.report.plot, "
            "styleflow.report.runlog\n"
            "t.build_parser()\n"
            "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
            f"sys.exit(t.main({argv!r}))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=shared_folder,
                          env=cli_env(TMPDIR=str(shared_folder), HOME=str(shared_folder)),
                          stdin=subprocess.DEVNULL, preexec_fn=default_signals)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert_clean_error(proc, role, str(locked), "permission denied")


# EIO: hard to cause for real; the low-level calls are made to fail.

def test_an_io_error_reading_an_input(tiny, tmp_path, monkeypatch):
    from PIL import Image as PILImage

    def failing_open(*args, **kwargs):
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    monkeypatch.setattr(PILImage, "open", failing_open)
    base, style = tiny
    proc = transfer(base, style, tmp_path / "r")
    assert_clean_error(proc, "base image", str(base), "input/output error")


@pytest.mark.slow
def test_an_io_error_writing_the_output_image(tiny, tmp_path, monkeypatch):
    from styleflow.io import files

    def failing_fsync(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    monkeypatch.setattr(files.os, "fsync", failing_fsync)
    base, style = tiny
    proc = stylize(base, style, tmp_path / "o.png")
    assert_clean_error(proc, str(tmp_path / "o.png"), "input/output error")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".o.png")] == []


@pytest.mark.slow
def test_an_io_error_in_the_log_mid_run_keeps_the_images(tiny, tmp_path, monkeypatch):
    import csv

    original = csv.DictWriter.writerow
    rows = []

    def writerow(self, row):  # the header, then the first row is refused
        rows.append(row)
        if len(rows) == 2:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return original(self, row)
    monkeypatch.setattr(csv.DictWriter, "writerow", writerow)
    base, style = tiny
    proc = call_cli(TRANSFER, base, style, tmp_path / "r", "--iter", "2", "--width", "32",
                    "--weights", "random", "--jit", "off", "--log", tmp_path / "run.csv")
    assert_warned_but_kept(proc, "--log", tmp_path / "run.csv", "input/output error")
    assert_image(tmp_path / "r_at_iteration_00.png")
    assert_image(tmp_path / "r_at_iteration_01.png")


# The wording and the last resort.

@pytest.mark.parametrize("code, reason", [
    (errno.ENOSPC, "No space left on device"), (errno.ELOOP, "symbolic link loop"),
    (errno.ENAMETOOLONG, "file name too long"), (errno.ENOTDIR, "is a file, not a folder"),
    (errno.EROFS, "Read-only file system"), (errno.EACCES, "Permission denied"),
    (errno.EIO, "Input/output error")])
def test_one_wording_for_every_kind(code, reason):
    from styleflow.errors import os_error

    error = os_error("--log", "out/run.csv", OSError(code, os.strerror(code)))
    message = str(error)
    assert message.startswith("--log 'out/run.csv': cannot write (")
    assert reason.lower() in message.lower() and "\n" not in message
    # The refusal alone, for a front end that must not show the path (web.job.storage_error).
    assert reason.lower() in error.reason.lower() and "run.csv" not in error.reason
    assert message.endswith(f"({error.reason})")


def test_an_unworded_os_error_is_still_one_line():
    from styleflow.cli import common

    def body():
        raise OSError(errno.EIO, os.strerror(errno.EIO), "/some/file")
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = common.run_cli("prog", body)
    assert code == 1
    assert err.getvalue() == "prog: error: '/some/file': Input/output error\n"
