"""Files the tools write: atomically (a temporary beside the target, then a rename), checked
before any work (a writable folder, never an input), and the leftovers of killed processes
cleared."""

from __future__ import annotations

import os
import re
import socket
import tempfile
from pathlib import Path

from ..errors import StyleflowError


def write_atomically(path: str | os.PathLike, write) -> None:
    """Call `write(binary file)` on a temporary file beside `path`, push it to the disk, then
    rename it to `path` (and push the rename too).

    A reader never sees a half-written file, a failed write leaves the old one, and a power cut
    leaves the old file or the whole new one, never an empty one; an OSError
    (disk full, a folder removed meanwhile) becomes a one-line StyleflowError.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_OWNER}-", suffix=".tmp",
                                   dir=path.parent)
    except OSError as exc:
        raise StyleflowError(f"cannot write '{path}': {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())  # on the disk before the rename makes it the file
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
        _sync_folder(path.parent)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise StyleflowError(f"cannot write '{path}': {exc.strerror or exc}") from None
        raise


# Temporary names carry host and process id, so a later run can tell the leftovers of a process
# killed with SIGKILL (which no handler sees) from files another live process is writing.
_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"
_OWNER = f"{_HOST}.{os.getpid()}"
_TEMPORARY = re.compile(r"^\..*\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)-[^/]*$")


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete this host's temporaries (from write_atomically or the writability probe) in
    `folder` whose process no longer exists; return what was removed."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if not match or match["host"] != _HOST or not entry.is_file(follow_symlinks=False):
            continue
        if not (entry.name.endswith(".tmp") or entry.name.startswith(".styleflow-check.")):
            continue
        if _alive(int(match["pid"])):
            continue
        try:
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _sync_folder(folder: Path) -> None:
    """Push a rename in `folder` to the disk (best effort: not every system can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def prepare_output_dir(path: str | os.PathLike, what: str = "output") -> Path:
    """Create the folder that will hold `path` and check that files can be written there."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StyleflowError(f"{what} '{path}': cannot create folder '{folder}' "
                             f"({exc.strerror or exc})") from None
    if not folder.is_dir():
        raise StyleflowError(f"{what} '{path}': '{folder}' is not a folder")
    remove_stale_temporaries(folder)
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".styleflow-check.{_OWNER}-"):
            pass
    except OSError as exc:
        raise StyleflowError(f"{what} '{path}': folder '{folder}' is not writable "
                             f"({exc.strerror or exc})") from None
    return path


def interrupted_name(base: str, suffix: str,
                     inputs: list[str | os.PathLike | None]) -> Path:
    """Where an interrupted run writes its latest image: BASE_interrupted.SUFFIX, or
    BASE_interrupted2.SUFFIX, ... when that is an input (a run resumed from an interruption).

    BASE is joined as text, so a folder prefix 'out/' gives 'out/_interrupted.png'."""
    taken = {Path(p).resolve() for p in inputs if p}
    for n in range(1, len(taken) + 2):
        path = Path(f"{base}_interrupted{n if n > 1 else ''}{suffix}")
        if path.resolve() not in taken:
            return path
    raise AssertionError("unreachable: more candidates than inputs")


def refuse_overwriting_inputs(outputs: list[Path], inputs: list[str | os.PathLike]) -> None:
    """Raise if any output path names the same file as an input (inputs are never modified)."""
    resolved = {Path(p).resolve(): str(p) for p in inputs if p}
    for out in outputs:
        if Path(out).resolve() in resolved:
            raise StyleflowError(
                f"output '{out}' is the input file '{resolved[Path(out).resolve()]}'; "
                "choose another output name")
