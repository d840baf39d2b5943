"""The persistent XLA compilation cache: compiled Winograd transforms (and XLA-compiled losses)
kept on disk, so that a new process (a shell loop's next run, a batch or web worker replacing
another) loads them instead of compiling again.

TensorFlow keeps such a cache itself (`TF_XLA_FLAGS=--tf_xla_persistent_cache_directory`), keyed
by the function's signature and a hash of its HLO, so a different program is a miss, never a
wrong hit. Used as is, though, a half-written entry (two processes compiling the same size at
once, a process killed or a disk filling while TensorFlow writes) is read back as a broken
entry and fails every later run. So each process gives TensorFlow a private folder of its own,
filled with hard links to the shared entries, and publishes the entries it wrote into the shared
folder only once they are complete (written at least PUBLISH_AGE seconds ago, fsynced, linked in
under their final name). Entries are compiled for one CPU and one TensorFlow: the shared folder
is one per TensorFlow version, CPU flags and XLA settings. It is bounded (LIMIT_BYTES, oldest
entries dropped first). TensorFlow fails a compilation whose entry it cannot write, so where
the shared folder is short of space (MIN_FREE_BYTES) or no private folder can be made there (a
read-only file system), TensorFlow only reads the shared entries; should a write still fail
(the disk filled up since), the run ends in one line (`failure`). Any other OS error here only
costs the cache, never the run.

`STYLEFLOW_XLA_CACHE`: unset for the default folder (`$XDG_CACHE_HOME/styleflow/xla`, else
`~/.cache/styleflow/xla`), a folder to use instead, or `off` (also 0, no, false, empty).
"""

from __future__ import annotations

import atexit
import hashlib
import os
import platform
import re
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

from ..errors import StyleflowError, explain_with
from .machine import cpu_flags

VARIABLE = "STYLEFLOW_XLA_CACHE"
FLAGS_VARIABLE = "TF_XLA_FLAGS"
FLAG = "--tf_xla_persistent_cache_directory"
READ_ONLY_FLAG = "--tf_xla_persistent_cache_read_only"
ADDED_VARIABLE = "STYLEFLOW_XLA_FLAGS_ADDED"  # what this process added to TF_XLA_FLAGS
OFF = ("off", "0", "no", "false", "")
LIMIT_BYTES = 256 * 2**20  # about 120 image sizes' transforms (about 2 MB a size)
MIN_FREE_BYTES = 2**30  # below this, TensorFlow only reads the shared entries
PUBLISH_AGE = 1.0  # seconds since TensorFlow last wrote an entry before it counts as complete
WORK_PREFIX = ".work-"
STALE_SECONDS = 24 * 3600  # another host's (or an unknown) work folder left this long is removed


class _Session:
    """This process's private folder and the shared folder it publishes to."""

    def __init__(self, shared: Path, private: Path, names: set[str]):
        self.shared = shared
        self.private = private
        self.shared_names = names  # entries linked from or published to the shared folder
        self.pid = os.getpid()  # a forked child inherits the session, not the folder


_session: _Session | None = None
_given: Path | None = None  # the folder TensorFlow was given: the private one, or the shared


def default_root(environ=os.environ) -> Path | None:
    """The folder the shared caches live under, from STYLEFLOW_XLA_CACHE (None when off)."""
    value = environ.get(VARIABLE)
    if value is not None:
        if value.strip().lower() in OFF:
            return None
        # Absolute: TensorFlow is handed a folder inside it, and the process may change folder.
        return Path(os.path.abspath(os.path.expanduser(value)))
    base = environ.get("XDG_CACHE_HOME")
    if not base:
        home = os.path.expanduser("~")
        if home.startswith("~"):  # no home folder known: no cache rather than one in "./~"
            return None
        base = os.path.join(home, ".cache")
    return Path(os.path.abspath(base)) / "styleflow" / "xla"


def tag(environ=os.environ) -> str:
    """The shared folder's name: compiled code is only valid for the TensorFlow, the CPU and
    the XLA settings it was compiled with."""
    from importlib import metadata

    version = "unknown"
    for distribution in ("tensorflow", "tensorflow-cpu", "tf-nightly"):
        try:
            version = metadata.version(distribution)
            break
        except metadata.PackageNotFoundError:
            continue
    settings = "\n".join([platform.machine(), " ".join(sorted(cpu_flags())),
                          environ.get("XLA_FLAGS", ""), environ.get(FLAGS_VARIABLE, "")])
    return f"tf-{version}-{hashlib.sha256(settings.encode()).hexdigest()[:12]}"


def share_compilations(environ=os.environ) -> Path | None:
    """Point TensorFlow's persistent XLA cache at a private folder filled from the shared one
    (see the module's docstring), unless TensorFlow is already imported (it reads its flags
    once), the user set the flag in TF_XLA_FLAGS or turned the cache off. Where the shared
    folder has less than MIN_FREE_BYTES free, or no private folder can be made in it (a
    read-only file system), TensorFlow reads the shared entries and writes none: it fails a
    run whose entry it cannot write. Returns the folder TensorFlow was given, or None."""
    global _session, _given
    if _session is not None:
        return _session.private
    if "tensorflow" in sys.modules:
        return None
    # A child process inherits what its parent added: it makes its own.
    inherited = environ.pop(ADDED_VARIABLE, "").split()
    flags = [flag for flag in environ.get(FLAGS_VARIABLE, "").split() if flag not in inherited]
    if flags:
        environ[FLAGS_VARIABLE] = " ".join(flags)
    else:
        environ.pop(FLAGS_VARIABLE, None)
    root = default_root(environ)
    if root is None or any(flag.startswith(FLAG) for flag in flags):
        return None
    shared = root / tag(environ)
    if any(c.isspace() for c in str(shared)):  # TF_XLA_FLAGS is split at white space
        return None
    try:
        shared.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass
    if not shared.is_dir():
        return None
    try:
        if shutil.disk_usage(shared).free < MIN_FREE_BYTES:
            raise OSError("too little space to write")
        _remove_stale_work(shared)
        private = Path(tempfile.mkdtemp(prefix=_work_prefix(), dir=shared))
    except OSError:
        added = [f"{FLAG}={shared}", f"{READ_ONLY_FLAG}=true"]
        private = shared
    else:
        names = {entry.name for entry in _entries(shared) if _link(entry, private / entry.name)}
        added = [f"{FLAG}={private}"]
        _session = _Session(shared, private, names)
        atexit.register(_close)
    _given = private
    explain_with(failure)
    environ[FLAGS_VARIABLE] = " ".join([*flags, *added])
    environ[ADDED_VARIABLE] = " ".join(added)
    return private


def failure(exc: BaseException) -> StyleflowError | None:
    """The one-line StyleflowError for TensorFlow failing on the cache folder it was given:
    an entry it cannot write (the disk filled up after the process started, the folder was
    replaced by a file) or one gone as it read it. None for any other exception."""
    folder = _given
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # Keras' bold type
    if folder is None or str(folder) not in text:
        return None
    # What TensorFlow said after the folder (and the entry's name), before its op's name.
    said = text.rsplit(str(folder), 1)[1].split("[Op:")[0].splitlines()[0]
    said = " ".join(re.sub(r"^/\S*", "", said).strip(" ;:,").split()) or "cannot use it"
    return StyleflowError(f"cannot keep compiled code in the XLA cache folder '{folder}' "
                          f"({said}); free some space there or set {VARIABLE}=off",
                          params=(VARIABLE,))


def publish(age: float = PUBLISH_AGE) -> int:
    """Publish this process's complete new entries into the shared folder and keep it within
    LIMIT_BYTES; the number published. Called when a process meets a new image size and when
    it exits. A no-op without the cache."""
    session = _session
    if session is None or session.pid != os.getpid():
        return 0
    published = 0
    try:
        now = time.time()
        for entry in _entries(session.private):
            if entry.name in session.shared_names or now - entry.stat().st_mtime < age:
                continue  # shared already, or perhaps still being written
            with open(entry, "rb") as handle:
                os.fsync(handle.fileno())
            session.shared_names.add(entry.name)
            if _link(entry, session.shared / entry.name):  # else another process's copy
                published += 1
        if published:
            _sync_folder(session.shared)
            prune(session.shared)
    except OSError:
        pass
    return published


def prune(shared: Path, limit: int = LIMIT_BYTES) -> list[Path]:
    """Remove the oldest entries of `shared` until the rest fit in `limit` bytes; the removed
    entries. Processes holding a link to one keep using their copy."""
    entries = []
    for entry in _entries(shared):
        try:
            stat = entry.stat()
        except OSError:
            continue
        entries.append((stat.st_mtime, stat.st_size, entry))
    entries.sort(key=lambda item: item[0])
    total = sum(size for _, size, _ in entries)
    removed = []
    for _, size, entry in entries:
        if total <= limit:
            break
        try:
            entry.unlink()
        except OSError:
            continue
        total -= size
        removed.append(entry)
    return removed


def _close() -> None:
    """At exit: publish what is complete, then remove the private folder."""
    global _session
    session = _session
    if session is None or session.pid != os.getpid():
        return
    publish()
    shutil.rmtree(session.private, ignore_errors=True)
    _session = None


def _entries(folder: Path) -> list[Path]:
    return [entry for entry in folder.iterdir()
            if entry.suffix == ".pb" and not entry.name.startswith(".") and entry.is_file()]


def _link(source: Path, target: Path) -> bool:
    """Hard-link `source` as `target` (atomic: the name appears with the whole file behind it);
    False where it exists or linking fails (another file system, no hard links)."""
    try:
        os.link(source, target)
        return True
    except OSError:
        return False


def _sync_folder(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _work_prefix() -> str:
    return f"{WORK_PREFIX}{socket.gethostname()}-{os.getpid()}-"


def _remove_stale_work(shared: Path) -> None:
    """Remove the private folders of processes that ended without cleaning up (killed): this
    host's whose process is gone, and any not touched for STALE_SECONDS."""
    host = f"{WORK_PREFIX}{socket.gethostname()}-"
    now = time.time()
    for folder in shared.iterdir():
        if not folder.name.startswith(WORK_PREFIX) or not folder.is_dir():
            continue
        stale = False
        if folder.name.startswith(host):
            pid = folder.name[len(host):].split("-", 1)[0]
            stale = pid.isdigit() and not _alive(int(pid))
        try:
            stale = stale or now - folder.stat().st_mtime > STALE_SECONDS
        except OSError:
            continue
        if stale:
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's process (permission denied): alive
        return True
    return True
