"""The persistent XLA compilation cache (styleflow/model/xla_cache.py): a process loads what an
earlier one compiled, publishes only complete entries, cleans up after itself and after killed
processes, stays within its size limit, and never stands in the way of a run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import (ROOT, assert_clean_error, cli_env, default_signals, make_image,
                      run_cli, tmpfs)
from styleflow.model import xla_cache
from styleflow.system import OTHER_MACHINE_IDLE_SECONDS, machine_id

ENTRY = "xla_compile_cache__{}__1__XLA_CPU_JIT.pb"
# A whole entry as TensorFlow writes one: fields 1 (key), 2 (program), 3 (executable).
WHOLE = b"\x0a\x03key\x12\x04hlo!\x1a\x05code!"


def _python(code: str, **env) -> dict:
    """Run `code` in a fresh interpreter (TensorFlow not yet imported, as in a user's process)
    with the given variables; the JSON it prints last."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env=cli_env(**env), stdin=subprocess.DEVNULL,
                          preexec_fn=default_signals)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _shared(root):
    folders = [f for f in root.iterdir() if f.is_dir()]
    assert len(folders) == 1, folders
    return folders[0]


def test_the_cache_folder_follows_the_variable_and_can_be_turned_off(tmp_path):
    assert xla_cache.default_root({"XDG_CACHE_HOME": str(tmp_path)}) == \
        tmp_path / "styleflow" / "xla"
    assert xla_cache.default_root({xla_cache.VARIABLE: str(tmp_path / "c")}) == tmp_path / "c"
    # Absolute, whatever folder the process is in later.
    assert xla_cache.default_root({xla_cache.VARIABLE: "rel"}) == Path.cwd() / "rel"
    for off in ("off", "0", "False", ""):
        assert xla_cache.default_root({xla_cache.VARIABLE: off}) is None
    # Code compiled under other XLA settings lands in another folder.
    assert xla_cache.tag({}) != xla_cache.tag({"XLA_FLAGS": "--xla_cpu_enable_fast_math=true"})


def test_a_process_links_the_shared_entries_and_publishes_only_whole_ones(tmp_path):
    root = tmp_path / "cache"
    flags = "--tf_xla_min_cluster_size=2"  # the user's own, kept
    shared = root / xla_cache.tag({**cli_env(), "TF_XLA_FLAGS": flags})
    shared.mkdir(parents=True)
    (shared / ENTRY.format(1)).write_bytes(WHOLE)
    here = f"{xla_cache.WORK_PREFIX}{machine_id()}"
    dead = shared / f"{here}-999999999-x"  # no such process on this machine
    live = shared / f"{here}-{os.getpid()}-x"  # this test's
    # Another machine's: judged by when it was last used, not by a process number.
    idle, busy = shared / f"{xla_cache.WORK_PREFIX}elsewhere-1-x", \
        shared / f"{xla_cache.WORK_PREFIX}elsewhere-2-x"
    for folder in (dead, live, idle, busy):
        folder.mkdir()
    long_ago = time.time() - OTHER_MACHINE_IDLE_SECONDS - 60
    os.utime(idle, (long_ago, long_ago))
    out = _python(f"""
import json, os, time
import styleflow
from styleflow.model import xla_cache
private = xla_cache._session.private
linked = (private / {ENTRY.format(1)!r}).read_bytes() == {WHOLE!r}
whole, cut = private / {ENTRY.format(2)!r}, private / {ENTRY.format(3)!r}
whole.write_bytes({WHOLE!r})
cut.write_bytes({WHOLE[:-2]!r})  # being written, or left so by a failed write
first = xla_cache.publish()
kept = cut.exists()
old = time.time() - xla_cache.STALE_ENTRY_SECONDS - 5
os.utime(cut, (old, old))
again = xla_cache.publish()
print(json.dumps(dict(flags=os.environ["TF_XLA_FLAGS"], private=str(private), linked=linked,
                      first=first, kept=kept, again=again, removed=not cut.exists())))
""", STYLEFLOW_XLA_CACHE=str(root), TF_XLA_FLAGS=flags)
    assert out["flags"] == f"{flags} {xla_cache.FLAG}={out['private']}"
    assert out["linked"]
    # The whole entry published once; the cut one never, and dropped once clearly left over.
    assert (out["first"], out["kept"], out["again"], out["removed"]) == (1, True, 0, True)
    assert (shared / ENTRY.format(2)).read_bytes() == WHOLE
    assert not (shared / ENTRY.format(3)).exists()
    # The process removed its own folder at exit; at start, the dead process's and the idle
    # one of another machine.
    assert not os.path.exists(out["private"])
    assert (dead.exists(), live.exists(), idle.exists(), busy.exists()) == \
        (False, True, False, True)


def test_once_tensorflow_has_its_flags_children_get_the_users_own(tmp_path):
    # TensorFlow reads TF_XLA_FLAGS once; after styleflow's import of it the variable is put
    # back, so a child that starts TensorFlow without styleflow never uses this process's
    # private folder, and TensorFlow here still compiles into it.
    own = "--tf_xla_min_cluster_size=2"
    out = _python("""
import json, os, subprocess, sys
import styleflow
from styleflow.model import xla_cache
private = xla_cache._session.private
import styleflow.api  # imports TensorFlow
import tensorflow as tf


def double(x):
    return 2.0 * x + 1.0


tf.function(double, jit_compile=True)(tf.ones(3))
child = subprocess.run([sys.executable, "-c", "import json, os; print(json.dumps("
                        "[os.environ.get(v) for v in ('TF_XLA_FLAGS', 'STYLEFLOW_XLA_FLAGS_ADDED')]))"],
                       capture_output=True, text=True, check=True).stdout
print(json.dumps(dict(child=json.loads(child), here=os.environ.get("TF_XLA_FLAGS"),
                      compiled=len(list(private.glob("*.pb"))))))
""", STYLEFLOW_XLA_CACHE=str(tmp_path / "c"), TF_XLA_FLAGS=own)
    assert out["child"] == [own, None] and out["here"] == own
    assert out["compiled"] >= 1


def test_only_whole_entries_count_as_whole():
    assert xla_cache._whole(WHOLE)
    assert not any(xla_cache._whole(WHOLE[:n]) for n in range(len(WHOLE)))
    assert not xla_cache._whole(WHOLE[:-3] + b"\x1a\x00")  # an empty executable


def test_a_message_ending_at_the_folder_is_still_worded(tmp_path, monkeypatch):
    monkeypatch.setattr(xla_cache, "_given", tmp_path)
    error = xla_cache.failure(RuntimeError(f"cannot open {tmp_path}"))
    assert str(tmp_path) in str(error) and "STYLEFLOW_XLA_CACHE=off" in str(error)
    assert xla_cache.failure(RuntimeError("something else")) is None


def test_the_users_own_setting_and_an_unusable_folder_leave_tensorflow_alone(tmp_path):
    code = """
import json, os
import styleflow
from styleflow.model import xla_cache
print(json.dumps([os.environ.get("TF_XLA_FLAGS"), xla_cache._session is None]))
"""
    own = f"{xla_cache.FLAG}={tmp_path}"
    assert _python(code, STYLEFLOW_XLA_CACHE=str(tmp_path / "c"), TF_XLA_FLAGS=own) == [own, True]
    assert _python(code, STYLEFLOW_XLA_CACHE="off") == [None, True]
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert _python(code, STYLEFLOW_XLA_CACHE=str(blocker / "c")) == [None, True]
    # A value not starting with "-" names a file of flags, which TensorFlow reads whole: a
    # flag added after its name would make it a file that does not exist.
    flags_file = tmp_path / "xla-flags"
    flags_file.write_text("--tf_xla_min_cluster_size=2\n")
    assert _python(code, STYLEFLOW_XLA_CACHE=str(tmp_path / "c"),
                   TF_XLA_FLAGS=str(flags_file)) == [str(flags_file), True]


def test_pruning_drops_the_oldest_entries_first(tmp_path):
    for i, size in enumerate((400, 300, 200, 100)):
        entry = tmp_path / ENTRY.format(i)
        entry.write_bytes(b"x" * size)
        os.utime(entry, (1000 + i, 1000 + i))
    (tmp_path / "other.txt").write_bytes(b"x" * 5000)  # not an entry: left alone
    removed = xla_cache.prune(tmp_path, limit=350)
    assert [p.name for p in removed] == [ENTRY.format(0), ENTRY.format(1)]
    assert sorted(p.name for p in xla_cache._entries(tmp_path)) == [ENTRY.format(2),
                                                                   ENTRY.format(3)]


def test_a_second_run_loads_what_the_first_compiled(tmp_path):
    base = make_image(tmp_path / "base.png", (96, 72), seed=1)
    ref = make_image(tmp_path / "ref.png", (96, 72), seed=2)
    root = tmp_path / "cache"
    listings, images, loaded = [], [], []
    for run in ("first", "second"):
        # TensorFlow says which compilations it loaded from the cache at this verbosity.
        proc = run_cli("neural_style_transfer.py", base, ref, tmp_path / run, "--iter", "1",
                       "--weights", "lite", "--seed", "3", STYLEFLOW_XLA_CACHE=str(root),
                       TF_CPP_MIN_LOG_LEVEL="0", TF_CPP_VMODULE="device_executable_persistor=1")
        assert proc.returncode == 0, proc.stderr[-2000:]
        loaded.append(proc.stderr.count("Loading cached entry"))
        shared = _shared(root)
        listings.append(sorted(p.name for p in shared.iterdir()))
        images.append((tmp_path / f"{run}_at_iteration_00.png").read_bytes())
    # Winograd's transforms were compiled and shared; the second run loaded every one of them,
    # compiled nothing new (it would have published it), left no folder behind, and wrote the
    # same image.
    assert len(listings[0]) > 0
    assert loaded == [0, len(listings[0])]
    assert listings[1] == listings[0]
    assert not any(name.startswith(".") for name in listings[1])
    assert images[1] == images[0]


def test_a_forked_child_leaves_its_parents_folder_alone(tmp_path, monkeypatch):
    shared, private = tmp_path / "shared", tmp_path / ".work-parent"
    shared.mkdir()
    private.mkdir()
    (private / ENTRY.format(1)).write_bytes(WHOLE)
    session = xla_cache._Session(shared, private, set())
    session.pid = os.getpid() + 1  # as a fork sees its parent's session
    monkeypatch.setattr(xla_cache, "_session", session)
    assert xla_cache.publish() == 0
    xla_cache._close()
    assert (private / ENTRY.format(1)).exists() and not any(shared.iterdir())


def test_a_write_failing_mid_run_ends_in_one_line(tmp_path):
    base = make_image(tmp_path / "base.png", (96, 72), seed=1)
    ref = make_image(tmp_path / "ref.png", (96, 72), seed=2)
    # The private folder replaced by a file once the process has started: TensorFlow cannot
    # write what it compiles (as with a disk filled up since the start).
    code = f"""
import shutil, sys
import styleflow
from styleflow.model import xla_cache
private = xla_cache._session.private
shutil.rmtree(private)
private.write_text("not a folder")
from styleflow.cli import transfer
sys.exit(transfer.main([{str(base)!r}, {str(ref)!r}, {str(tmp_path / "out")!r}, "--iter", "1",
                        "--weights", "lite"]))
"""
    env = cli_env(STYLEFLOW_XLA_CACHE=str(tmp_path / "c"))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                          preexec_fn=default_signals)
    assert_clean_error(proc, "XLA cache folder", "is not a directory", "STYLEFLOW_XLA_CACHE=off")


@pytest.fixture
def small_file_system(tmp_path):
    """A 64 MB tmpfs (root only): less free space than the cache writes into."""
    with tmpfs(tmp_path / "small", "size=64m") as folder:
        yield folder


def test_short_of_space_or_read_only_a_process_only_reads(tmp_path, small_file_system):
    base = make_image(tmp_path / "base.png", (96, 72), seed=1)
    ref = make_image(tmp_path / "ref.png", (96, 72), seed=2)

    def run(name, root, base=base):
        proc = run_cli("neural_style_transfer.py", base, ref, tmp_path / name, "--iter", "1",
                       "--weights", "lite", "--seed", "3", STYLEFLOW_XLA_CACHE=str(root),
                       TF_CPP_MIN_LOG_LEVEL="0", TF_CPP_VMODULE="device_executable_persistor=1")
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stderr.count("Loading cached entry")

    assert run("first", tmp_path / "big") == 0
    filled = _shared(tmp_path / "big")
    shutil.copytree(filled, small_file_system / filled.name)
    before = sorted(p.name for p in (small_file_system / filled.name).iterdir())
    # Too little space to write: TensorFlow reads the shared folder itself, read-only. It
    # loads what is there, and what it compiles for another size it keeps to itself.
    assert run("second", small_file_system) == len(before) > 0
    assert (tmp_path / "second_at_iteration_00.png").read_bytes() == \
        (tmp_path / "first_at_iteration_00.png").read_bytes()
    other = make_image(tmp_path / "other.png", (96, 96), seed=1)  # another aspect: size
    assert run("third", small_file_system, other) == 0
    assert sorted(p.name for p in (small_file_system / filled.name).iterdir()) == before
    # On a read-only file system (no private folder possible) it reads the shared one.
    subprocess.run(["mount", "-o", "remount,ro", str(small_file_system)], check=True)
    assert run("fourth", small_file_system) == len(before)
    assert (tmp_path / "fourth_at_iteration_00.png").read_bytes() == \
        (tmp_path / "first_at_iteration_00.png").read_bytes()
