"""Per-iteration loss logs: CSV, or JSON Lines for .jsonl/.json/.ndjson, flushed every row so a
killed run keeps everything up to its last iteration."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from ..errors import os_error

FIELDS = ("iteration", "evaluations", "total", "content", "style", "tv", "seconds", "elapsed",
          "image")
# Loss parts only some problems have (photorealism, a video's temporal term), logged after
# "tv" when a run has them.
OPTIONAL_PARTS = ("photo", "temporal")
JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")


def is_json_log(path: str | os.PathLike) -> bool:
    """True when `path` asks for JSON Lines rather than CSV."""
    return Path(path).suffix.lower() in JSON_SUFFIXES


def check_replaceable(path: str | os.PathLike, what: str = "log") -> None:
    """StyleflowError where `path` holds a file that is not a log a run wrote (a CSV log's
    header or a JSON record first): a log is written anew, so a note or an image named by
    mistake would be lost. An empty file, the null device and no file at all pass."""
    path = Path(path)
    try:
        if not path.is_file() or path.stat().st_size == 0:
            return
        with open(path, "rb") as handle:
            first = handle.readline(4096)
    except OSError:  # said when the log is opened, as any other refusal
        return
    if first.startswith((",".join(FIELDS[:3]).encode(), b'{"iteration": ')):
        return
    from ..errors import StyleflowError

    raise StyleflowError(f"{what} '{path}' exists and is not a run's log (which would replace "
                         "it); choose another name")


class RunLog:
    """An open log file taking one row (a dict with FIELDS' keys) per iteration."""

    def __init__(self, path: str | os.PathLike, what: str = "log", parts: tuple = ()):
        """`what` names the file in messages (a command line passes its option); `parts`:
        the OPTIONAL_PARTS this run has, columns after "tv"."""
        self.path = Path(path)
        self.what = what
        at = FIELDS.index("tv") + 1
        self.fields = FIELDS[:at] + tuple(parts) + FIELDS[at:]
        self.json = is_json_log(self.path)
        try:
            self._handle = open(self.path, "w", newline="", encoding="utf-8")
        except OSError as exc:
            raise os_error(what, path, exc) from None
        self._csv = None
        if not self.json:
            self._csv = csv.DictWriter(self._handle, fieldnames=self.fields,
                                       extrasaction="ignore")
            try:
                self._csv.writeheader()
                self._handle.flush()
            except OSError as exc:  # a full disk (or /dev/full) takes the open, not the data
                self._abandon()
                raise os_error(what, path, exc) from None

    def write(self, row: dict) -> None:
        """Append one row and flush it to the operating system; a failing write (disk full)
        is a one-line StyleflowError, the rows before it stay in the file."""
        try:
            if self.json:
                self._handle.write(json.dumps({k: row.get(k) for k in self.fields}) + "\n")
            else:
                self._csv.writerow({k: ("" if row.get(k) is None else row.get(k))
                                    for k in self.fields})
            self._handle.flush()
        except OSError as exc:
            self._abandon()
            raise os_error(self.what, self.path, exc) from None

    def close(self) -> None:
        """Close the file; StyleflowError when its last data cannot be written."""
        try:
            self._handle.close()
        except OSError as exc:
            self._abandon()
            raise os_error(self.what, self.path, exc) from None

    def _abandon(self) -> None:
        """Close the file after a failed write, dropping what the system would not take (a
        second flush would only fail again)."""
        try:
            self._handle.close()
        except OSError:
            pass


def read_log(path: str | os.PathLike) -> list[dict]:
    """Rows of a log written by RunLog, with numbers as floats (for plots and tests)."""
    path = Path(path)
    with open(path, encoding="utf-8", newline="") as handle:
        if is_json_log(path):
            rows = [json.loads(line) for line in handle if line.strip()]
        else:
            rows = list(csv.DictReader(handle))
    numeric = ("total", "content", "style", "tv", "seconds", "elapsed")
    for row in rows:
        for key in numeric:
            row[key] = float(row[key])
        for key in OPTIONAL_PARTS:
            if row.get(key) not in (None, ""):
                row[key] = float(row[key])
        for key in ("iteration", "evaluations"):
            row[key] = int(row[key])
    return rows
