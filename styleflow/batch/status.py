"""The batch's status log: JSON Lines, one record per pair per run, appended and flushed to
disk as each pair ends, so a batch killed at any moment leaves a log the next run can extend.
Each record carries its time and the run that wrote it, so runs can be told apart, and the
options the pair ran with, so a later run can tell whether an output was made with others."""

from __future__ import annotations

import errno
import json
import os
import time
import uuid
from pathlib import Path

from ..errors import StyleflowError, os_error
from ..io.files import prepare_output_dir, regular_file

FIELDS = ("time", "run", "content", "style", "output", "status", "seconds", "loss", "error",
          "note", "options")


def new_run_id() -> str:
    """A short id for one run of a batch, different for every run."""
    return uuid.uuid4().hex[:12]


class StatusLog:
    """Appends records to `path` (created if needed), stamped with the time and `run`; `what`
    names the log in errors (the option that chose it)."""

    def __init__(self, path: str | os.PathLike, run: str | None = None, what: str = "--status"):
        self.path = Path(path)
        self.run = run or new_run_id()
        self.what = what
        prepare_output_dir(self.path, what)  # a folder that can be made and written
        regular_file(self.path, what)  # appended to and read back: no device, pipe or folder
        try:
            self._handle = open(self.path, "a+", encoding="utf-8")
            # A run killed mid-line leaves no newline: start on a fresh line.
            self._handle.seek(0, os.SEEK_END)
            if self._handle.tell() > 0:
                self._handle.seek(self._handle.tell() - 1)
                if self._handle.read(1) != "\n":
                    self._handle.write("\n")
        except OSError as exc:
            raise os_error(what, path, exc) from None

    def write(self, record: dict) -> None:
        """Append one record and push it to the disk."""
        stamped = dict(record, time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       run=self.run)
        line = json.dumps({k: stamped.get(k) for k in FIELDS}) + "\n"
        try:
            self._handle.write(line)
            self._handle.flush()
            try:
                os.fsync(self._handle.fileno())
            except OSError as exc:  # EINVAL: the null device, which keeps nothing to sync
                if exc.errno != errno.EINVAL:
                    raise
        except OSError as exc:
            raise os_error(self.what, self.path, exc) from None

    def close(self) -> None:
        try:
            self._handle.close()
        except OSError:  # every record was flushed and said as it was written
            pass


def read_status(path: str | os.PathLike, what: str = "--status") -> list[dict]:
    """The records of a status log (a line torn by a killed run is skipped); none where there
    is no log yet. A path that is no regular file, or a file that is not a status log (which
    the batch would append to), is a StyleflowError naming `what`."""
    if regular_file(path, what, "use") is None:  # read, then appended to
        return []
    records = []
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    record = None
                if isinstance(record, dict) and "status" in record and "output" in record:
                    records.append(record)
                elif line.strip() and not line.startswith('{"time": '):  # nor a torn record
                    raise StyleflowError(f"{what} '{path}': not a status log (line {number} "
                                         "is not a batch record); name another file")
    except UnicodeDecodeError:
        raise StyleflowError(f"{what} '{path}': not a status log (it is not UTF-8 text); "
                             "name another file") from None
    return records
