"""What the operating system says about processes and folders, for the modules that leave files
behind a process may not clean up (io.files' temporaries, model.xla_cache's work folders)."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def sync_folder(folder: str | os.PathLike) -> None:
    """Push a rename or link in `folder` to the disk (best effort: not every system can open a
    folder)."""
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
