"""What the operating system says about processes and folders, for the modules that leave files
behind a process may not clean up (io.files' temporaries, model.xla_cache's work folders)."""

from __future__ import annotations

import functools
import hashlib
import os
import socket
import time


# What another machine (or container, or this machine before a reboot) left behind, untouched
# this long, is taken for a leftover: its processes cannot be asked whether they live.
OTHER_MACHINE_IDLE_SECONDS = 24 * 3600


def alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def left_behind(machine: str, pid: str, path: str | os.PathLike) -> bool:
    """Whether `path`, named as its own by process `pid` of `machine` (a `machine_id`), is left
    over: this machine's once that process is gone; another machine's (another container, or
    this one before a reboot), whose processes cannot be asked, once untouched for
    OTHER_MACHINE_IDLE_SECONDS."""
    if machine == machine_id():
        return pid.isdigit() and not alive(int(pid))
    try:
        return time.time() - os.stat(path).st_mtime > OTHER_MACHINE_IDLE_SECONDS
    except OSError:
        return False


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


@functools.cache
def machine_id() -> str:
    """This machine and PID namespace as 16 hex digits, for names that tell one process's
    leftovers from another's: host name, boot id and PID namespace, so that containers sharing
    a host name and a volume, or a machine rebooted, do not read each other's process ids as
    their own."""
    parts = [socket.gethostname()]
    try:
        with open("/proc/sys/kernel/random/boot_id") as boot:
            parts.append(boot.read().strip())
    except OSError:
        parts.append("")
    try:
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    except OSError:
        parts.append("")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
