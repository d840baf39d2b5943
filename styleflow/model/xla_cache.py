"""The persistent XLA compilation cache: compiled Winograd transforms (and XLA-compiled losses)
kept on disk, so that a new process (a shell loop's next run, a batch or web worker replacing
another) loads them instead of compiling again.

TensorFlow keeps such a cache itself (`TF_XLA_FLAGS=--tf_xla_persistent_cache_directory`), keyed
by the function's signature and a hash of its HLO, so a different program is a miss, never a
wrong hit. Used as is, though, an entry that is broken when read (half-written: two processes
compiling the same size at once, a kill or a full disk mid-write) fails every later run. So
each process gives TensorFlow a private folder of its own, filled with hard links to the shared
entries, and publishes an entry it wrote into the shared folder only once it is whole (its
protocol-buffer fields all there, `_whole`), fsynced, and linked in under its final name.
Entries are compiled for one CPU and one TensorFlow: the shared folder is one per TensorFlow
version, CPU flags and XLA settings, kept within LIMIT_BYTES (oldest entries dropped first;
running processes keep their links to dropped ones until they end).

TensorFlow also fails a compilation whose entry it cannot write. So where the shared folder is
short of space (MIN_FREE_BYTES), TensorFlow is told to only read its private folder; on a
read-only file system, the shared folder itself. Should a write still fail (the disk filled up
since), the run ends in one line (`failure`). Any other OS error here only costs the cache.

TensorFlow takes the folder from TF_XLA_FLAGS, which it reads once, when it first needs XLA.
Once styleflow has imported TensorFlow (`runtime.quiet_tensorflow`), `settle` has it read them
then and puts TF_XLA_FLAGS back as the user set it, so that child processes started from then
on do not see this process's folder (a forked one shares TensorFlow's flags as read, and so the
folder; `_Session.pid` keeps it from publishing or removing it). A child started before
inherits the flags: one that imports styleflow makes its own private folder (ADDED_VARIABLE
names what to drop); one that starts TensorFlow without styleflow shares its parent's, whose
entries are checked like the parent's before they are published, and TensorFlow remakes the
folder should the parent remove it. A TF_XLA_FLAGS naming a file of flags is left alone.

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
import sys
import tempfile
import time
from pathlib import Path

from ..errors import StyleflowError, explain_with
from ..system import left_behind, machine_id, sync_folder
from .machine import cpu_flags

VARIABLE = "STYLEFLOW_XLA_CACHE"
FLAGS_VARIABLE = "TF_XLA_FLAGS"
FLAG = "--tf_xla_persistent_cache_directory"
READ_ONLY_FLAG = "--tf_xla_persistent_cache_read_only"
ADDED_VARIABLE = "STYLEFLOW_XLA_FLAGS_ADDED"  # what this process added to TF_XLA_FLAGS
OFF = ("off", "0", "no", "false", "")
LIMIT_BYTES = 256 * 2**20  # about 120 image sizes' transforms (about 2 MB a size)
MIN_FREE_BYTES = 2**30  # below this, TensorFlow only reads the shared entries
WORK_PREFIX = ".work-"
STALE_ENTRY_SECONDS = 60  # an entry still not whole this long after its last write is a leftover


class _Session:
    """This process's private folder and the shared folder it publishes to."""

    def __init__(self, shared: Path, private: Path, names: set[str]):
        self.shared = shared
        self.private = private
        self.shared_names = names  # entries linked from or published to the shared folder
        self.pid = os.getpid()  # a forked child inherits the session, not the folder


_session: _Session | None = None
_given: Path | None = None  # the folder TensorFlow was given: the private one, or the shared
# TF_XLA_FLAGS as it stands once the user's own value is put back (None: unset), and this
# process's value, while what share_compilations added is still in the environment.
_restore: tuple[str | None, str] | None = None


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
    once), the user set the flag in TF_XLA_FLAGS or turned the cache off. TensorFlow fails a
    run whose entry it cannot write, so it is told to only read: its private folder where the
    shared one has less than MIN_FREE_BYTES free, the shared folder itself where no private
    folder can be made (a read-only file system). Returns the folder TensorFlow was given, or
    None."""
    global _session, _given, _restore
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
    # A value not starting with "-" names a file of flags for TensorFlow: left to the user.
    if root is None or any(flag.startswith(FLAG) for flag in flags) or (
            flags and not flags[0].startswith("-")):
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
        _remove_stale_work(shared)
        private = Path(tempfile.mkdtemp(prefix=_work_prefix(), dir=shared))
    except OSError:  # a read-only file system, where no one can remove an entry either
        added = [f"{FLAG}={shared}", f"{READ_ONLY_FLAG}=true"]
        private = shared
    else:
        names = {entry.name for entry in _entries(shared) if _link(entry, private / entry.name)}
        added = [f"{FLAG}={private}"]
        try:
            short = shutil.disk_usage(shared).free < MIN_FREE_BYTES
        except OSError:
            short = True
        if short:
            added.append(f"{READ_ONLY_FLAG}=true")
        _session = _Session(shared, private, names)
        atexit.register(_close)
    _given = private
    explain_with(failure)
    environ[FLAGS_VARIABLE] = " ".join([*flags, *added])
    environ[ADDED_VARIABLE] = " ".join(added)
    _restore = (" ".join(flags) or None, environ[FLAGS_VARIABLE])
    return private


def settle(environ=os.environ) -> bool:
    """Once TensorFlow is imported: have it read its XLA flags now (it reads them once, at
    first need) and put TF_XLA_FLAGS back as the user set it, so that child processes started
    from here on, which read the environment afresh, never see this process's private folder.
    Left as it is if the user changed TF_XLA_FLAGS meanwhile or TensorFlow offers no way to
    make it read its flags. Returns whether the environment was put back."""
    global _restore
    if _restore is None or "tensorflow" not in sys.modules:
        return False
    user, ours = _restore
    try:
        # Any getter of TensorFlow's XLA flags parses all of them (none in its public API).
        from tensorflow.python.client import pywrap_tf_session

        pywrap_tf_session.TF_GetXlaConstantFoldingDisabled()
    except Exception:  # noqa: BLE001 - another TensorFlow: children inherit, as documented
        return False
    _restore = None
    if environ.get(FLAGS_VARIABLE) != ours:
        return False
    if user is None:
        environ.pop(FLAGS_VARIABLE, None)
    else:
        environ[FLAGS_VARIABLE] = user
    environ.pop(ADDED_VARIABLE, None)
    return True


def failure(exc: BaseException) -> StyleflowError | None:
    """The one-line StyleflowError for TensorFlow failing on the cache folder it was given:
    an entry it cannot write (the disk filled up after the process started, the folder was
    replaced by a file) or one gone as it read it. None for any other exception."""
    folder = _given
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # Keras' bold type
    if folder is None or str(folder) not in text:
        return None
    # What TensorFlow said after the folder (and the entry's name), before its op's name.
    said = (text.rsplit(str(folder), 1)[1].split("[Op:")[0].splitlines() or [""])[0]
    said = " ".join(re.sub(r"^/\S*", "", said).strip(" ;:,").split()) or "cannot use it"
    return StyleflowError(f"cannot keep compiled code in the XLA cache folder '{folder}' "
                          f"({said}); free some space there or set {VARIABLE}=off",
                          params=(VARIABLE,))


def publish() -> int:
    """Publish this process's whole new entries into the shared folder and keep it within
    LIMIT_BYTES; the number published. Called when a process meets a new image size and when
    it exits. A no-op without the cache."""
    session = _session
    if session is None or session.pid != os.getpid():
        return 0
    published = 0
    try:
        os.utime(session.private)  # in use: not stale for other machines' processes
        for entry in _entries(session.private):
            if entry.name in session.shared_names:
                continue
            with open(entry, "rb") as handle:
                whole = _whole(handle.read())
                if whole:
                    os.fsync(handle.fileno())
            if not whole:  # being written, or left half-written by a failed write
                if time.time() - entry.stat().st_mtime > STALE_ENTRY_SECONDS:
                    entry.unlink()
                continue
            session.shared_names.add(entry.name)
            if _link(entry, session.shared / entry.name):  # else another process's copy
                published += 1
        if published:
            sync_folder(session.shared)
            prune(session.shared)
    except OSError:
        pass
    return published


def _whole(data: bytes) -> bool:
    """Whether `data` is a whole serialized cache entry: its top-level protocol-buffer fields
    (key 1, program 2, executable 3, each length-delimited, written in that order) read to the
    last byte, with a non-empty executable. A file cut short anywhere fails: inside a field its
    length overruns, between fields the executable is missing."""
    seen, i = {}, 0
    try:
        while i < len(data):
            tag, i = _varint(data, i)
            if tag & 7 != 2:
                return False
            length, i = _varint(data, i)
            if i + length > len(data):
                return False
            seen[tag >> 3] = length
            i += length
    except IndexError:
        return False
    return {1, 2, 3} <= set(seen) and seen[3] > 0


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


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


def _work_prefix() -> str:
    return f"{WORK_PREFIX}{machine_id()}-{os.getpid()}-"


def _remove_stale_work(shared: Path) -> None:
    """Remove the private folders of processes that ended without cleaning up (killed):
    `system.left_behind` judges them by the machine and process in their names."""
    for folder in shared.iterdir():
        if not folder.name.startswith(WORK_PREFIX) or not folder.is_dir():
            continue
        machine, _, rest = folder.name[len(WORK_PREFIX):].partition("-")
        if left_behind(machine, rest.partition("-")[0], folder):
            shutil.rmtree(folder, ignore_errors=True)
