"""Files the tools write: atomically (a temporary beside the target, then a rename), checked
before any work (a writable folder, never an input), and the leftovers of killed processes
cleared. The operating system's refusals are worded by errors.os_error."""

from __future__ import annotations

import collections
import errno
import os
import re
import stat
import tempfile
from pathlib import Path

from ..errors import OS_REASONS, StyleflowError, os_error, os_reason  # noqa: F401 - re-exported
from ..system import left_behind, machine_id, sync_folder


def resolved(path: str | os.PathLike) -> Path:
    """Path(path).resolve(), or the absolute path where it cannot be resolved (a symlink loop,
    a name too long): such a path names no file, so it cannot be another file either."""
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):
        return Path(os.path.abspath(path))
    except ValueError:  # a NUL character: no file has that name
        return Path(os.path.abspath(str(path).replace("\x00", "?")))


def file_identity(path: str | os.PathLike) -> tuple[int, int] | None:
    """(device, inode) of the regular file at `path`, or None (nothing there, or not a
    regular file): the same for every hard link to one file."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return (info.st_dev, info.st_ino) if stat.S_ISREG(info.st_mode) else None


def exists(path: str | os.PathLike) -> bool:
    """Path(path).exists(), but False where the system cannot tell (a name too long, no
    permission to look): writing there then fails with the reason, worded."""
    try:
        return Path(path).exists()
    except OSError:
        return False


def look(path: str | os.PathLike, what: str, doing: str = "read") -> os.stat_result | None:
    """os.stat(path), None where nothing is there; where the system cannot look (a symlink
    loop, a name too long, a file used as a folder, no permission) a StyleflowError naming
    `what` (the file's role) and the reason it gives for `doing`."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise os_error(what, path, exc, doing) from None


def regular_file(path: str | os.PathLike, what: str,
                 doing: str = "read") -> os.stat_result | None:
    """The stat of `path` where it is a regular file, None where nothing is there. A
    StyleflowError naming `what` (the file's role) where the system cannot look (a symlink
    loop, a name too long, a file used as a folder) or the path is a folder, a device or a pipe:
    a file the tools read whole or append to would never end (/dev/zero, /dev/full) or would
    wait for a writer (a pipe). The null device passes, as an empty file that takes any
    write (a way to keep no log)."""
    info = look(path, what, doing)
    if info is None:
        return None
    if stat.S_ISDIR(info.st_mode):
        raise StyleflowError(f"{what} '{path}': is a directory, not a file")
    if not stat.S_ISREG(info.st_mode) and not _is_null(info):
        raise StyleflowError(f"{what} '{path}': not a regular file (a device or a pipe)")
    return info


def _is_null(info: os.stat_result) -> bool:
    try:
        return os.path.samestat(info, os.stat(os.devnull))
    except OSError:
        return False


def _is_special(path: Path) -> bool:
    """True for an existing target that is not a regular file (a device such as /dev/null or
    /dev/full, a named pipe): written straight into, as there is no file to replace."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def write_atomically(path: str | os.PathLike, write, what: str | None = None) -> None:
    """Call `write(binary file)` on a temporary file beside `path`, push it to the disk, then
    rename it to `path` (and push the rename too).

    A reader never sees a half-written file, a failed write leaves the old one, and a power cut
    leaves the old file or the whole new one, never an empty one; an OSError
    (disk full, a folder removed meanwhile) becomes a one-line StyleflowError naming `what`
    (the file's role, e.g. '--plot') when given. A target that is a device or a pipe
    (/dev/null, /dev/full) is written straight into: it cannot be replaced, nor should be.
    """
    path = Path(path)

    def failed(exc: BaseException) -> StyleflowError:
        if what:
            return os_error(what, path, exc)
        reason = os_reason(exc)
        return StyleflowError(f"cannot write '{path}': {reason}", reason=reason)

    if _is_special(path):
        try:
            with open(path, "wb") as handle:
                write(handle)
                handle.flush()
        except OSError as exc:
            raise failed(exc) from None
        return
    try:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError:  # the folder's name is a file's: say that, not "exists"
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)) from None
        # The name is shortened in the temporary's: a name near the limit must still fit.
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:80]}.{_owner()}-", suffix=".tmp",
                                   dir=path.parent)
    except OSError as exc:
        raise failed(exc) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())  # on the disk before the rename makes it the file
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
        sync_folder(path.parent)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise failed(exc) from None
        raise


# Temporary names carry the machine (system.machine_id) and process id, so a later run can tell
# the leftovers of a process killed with SIGKILL (which no handler sees) from files another live
# process is writing.
_TEMPORARY = re.compile(r"^\..*\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)-[^/]*$")
_MACHINE = re.compile(r"[0-9a-f]{16}")  # a system.machine_id()


def _owner() -> str:
    return f"{machine_id()}.{os.getpid()}"  # at call time: a forked child is its own owner


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the leftover temporaries (from write_atomically or the writability probe) in
    `folder`, as `system.left_behind` judges them: this machine's whose process no longer
    exists, another machine's (another container, or this one before a reboot) untouched for a
    day; return what was removed."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if not match or not entry.is_file(follow_symlinks=False):
            continue
        if not (entry.name.endswith(".tmp") or entry.name.startswith(".styleflow-check.")):
            continue
        # Without a machine id, a user's file of that shape.
        if not _MACHINE.fullmatch(match["host"]) or \
                not left_behind(match["host"], match["pid"], entry.path):
            continue
        try:
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def prepare_output_dir(path: str | os.PathLike, what: str = "output") -> Path:
    """Create the folder that will hold `path` and check that files can be written there (and
    that `path` itself is no folder)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    _make_folder(folder, f"{what} '{path}'", f" '{folder}'")
    if os.path.isdir(path):  # no file can replace it: say so before any work
        raise StyleflowError(f"{what} '{path}': is a directory, not a file")
    _check_name(path, folder, what)
    return path


def prepare_output_folder(path: str | os.PathLike, what: str = "output") -> Path:
    """Create the folder `path` (an output that is a folder of files) and check that files
    can be written in it."""
    path = Path(path)
    _check_name(path, path.parent if str(path.parent) else Path("."), what)
    _make_folder(path, f"{what} '{path}'", "")
    return path


# Folders this process made for its outputs, newest last (a command that then fails removes
# those left empty: `remove_new_empty_folders`); a long-lived process keeps only the latest.
_MADE: collections.deque[Path] = collections.deque(maxlen=64)


def remove_new_empty_folders() -> None:
    """Remove the folders `prepare_output_dir` and `prepare_output_folder` made in this
    process that are still empty, deepest first: a command refused after it made them leaves
    no trace."""
    while _MADE:
        try:
            _MADE.pop().rmdir()
        except OSError:  # not empty, or gone: left as it is
            pass


def _make_folder(folder: Path, label: str, named: str) -> None:
    """Create `folder` (with its parents) and check that files can be written in it; the
    errors start with `label` and call the folder 'folder' + `named`."""
    missing = []
    for ancestor in [folder, *folder.parents]:
        if exists(ancestor) or os.path.islink(ancestor):
            break
        missing.append(ancestor)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _MADE.extend(reversed(missing))  # parents first: popped deepest first
    except OSError as exc:
        reason = os_reason(exc)
        if exc.errno == errno.EEXIST:  # there, but no folder: a file, or a symlink loop
            try:
                os.stat(folder)
                reason = "it is a file, not a folder"
            except OSError as inner:
                reason = os_reason(inner)
        raise StyleflowError(f"{label}: cannot create folder{named} ({reason})",
                             reason=reason) from None
    try:
        is_folder = folder.is_dir()
    except OSError as exc:
        reason = os_reason(exc)
        raise StyleflowError(f"{label}: cannot write ({reason})", reason=reason) from None
    if not is_folder:
        raise StyleflowError(f"{label}:{named or ' it'} is not a folder")
    remove_stale_temporaries(folder)
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".styleflow-check.{_owner()}-"):
            pass
    except OSError as exc:
        reason = os_reason(exc)
        raise StyleflowError(f"{label}: folder{named} is not writable ({reason})",
                             reason=reason) from None


def name_limit(folder: str | os.PathLike) -> int | None:
    """The longest file name, in bytes, the file system of `folder` takes; None where it does
    not say."""
    try:
        limit = os.pathconf(folder if str(folder) else ".", "PC_NAME_MAX")
    except (OSError, ValueError):
        return None
    return limit if limit > 0 else None


def _check_name(path: Path, folder: Path, what: str) -> None:
    # A name longer than the file system takes fails only at the first write: say it now.
    limit = name_limit(folder)
    if limit and len(os.fsencode(path.name)) > limit:
        raise StyleflowError(f"{what} '{path}': cannot write ({OS_REASONS[errno.ENAMETOOLONG]}: "
                             f"{len(os.fsencode(path.name))} bytes, the limit is {limit})")


def interrupted_name(base: str, suffix: str,
                     inputs: list[str | os.PathLike | None]) -> Path:
    """Where an interrupted run writes its latest image: BASE_interrupted.SUFFIX, or
    BASE_interrupted2.SUFFIX, ... when that is an input (a run resumed from an interruption);
    BASE's name is cut short where the whole would be too long for its folder.

    BASE is joined as text, so a folder prefix 'out/' gives 'out/_interrupted.png'."""
    taken = {resolved(p) for p in inputs if p}
    for n in range(1, len(taken) + 2):
        path = _fitted(Path(f"{base}_interrupted{n if n > 1 else ''}{suffix}"),
                       f"_interrupted{n if n > 1 else ''}{suffix}")
        if resolved(path) not in taken:
            return path
    raise AssertionError("unreachable: more candidates than inputs")


def _fitted(path: Path, tail: str) -> Path:
    """`path`, its name cut short before `tail` where it is longer than its folder takes: an
    output name near the limit must not cost the interrupted run its image."""
    limit = name_limit(path.parent)
    name = os.fsencode(path.name)
    if limit is None or len(name) <= limit:
        return path
    head = name[:len(name) - len(os.fsencode(tail))][:limit - len(os.fsencode(tail))]
    return path.with_name(head.decode(errors="ignore") + tail)


def refuse_overwriting_inputs(outputs: list[Path], inputs: list[str | os.PathLike]) -> None:
    """Raise if any output path names the same file as an input (inputs are never modified)."""
    names = {resolved(p): str(p) for p in inputs if p}
    for out in outputs:
        if resolved(out) in names:
            given = names[resolved(out)]
            raise StyleflowError(
                f"output '{out}' is the input {'folder' if Path(given).is_dir() else 'file'} "
                f"'{given}'; choose another output name")
