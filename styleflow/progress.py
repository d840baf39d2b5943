"""Showing a run's progress: a live bar on a terminal, plain lines in logs, nothing when quiet."""

from __future__ import annotations

import shutil
import sys
import time
from typing import Callable, TextIO

BAR = "bar"
LINES = "lines"
QUIET = "quiet"
# A terminal redraw costs little, but a 1000-step Adam run must not print 1000 times a second.
REDRAW_SECONDS = 0.2


def choose_mode(quiet: bool, stream: TextIO) -> str:
    """QUIET when asked, BAR on a terminal, LINES otherwise (files, pipes, shell loops)."""
    if quiet:
        return QUIET
    isatty = getattr(stream, "isatty", None)
    return BAR if isatty is not None and isatty() else LINES


def format_duration(seconds: float) -> str:
    """'1:02:03' or '2:03'."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Progress of `total` units of work (L-BFGS evaluations or Adam steps).

    `update` is cheap to call after every unit: in BAR mode it redraws at most every
    REDRAW_SECONDS, and only then asks `loss` for the current value (which may cost a device
    read). `line` prints a per-iteration line: above the bar, or alone in LINES mode.
    """

    def __init__(self, total: int, unit: str, mode: str, stream: TextIO | None = None):
        self.total = max(1, int(total))
        self.unit = unit
        self.mode = mode
        self.stream = stream or sys.stdout
        self.began = time.perf_counter()
        self.done = 0
        self._last_draw = 0.0
        self._bar_shown = False
        self._loss: float | None = None

    def update(self, done: int, loss: Callable[[], float] | float | None = None) -> None:
        """Record that `done` units are finished; redraw the bar when it is due."""
        self.done = done
        if self.mode != BAR:
            return
        now = time.perf_counter()
        if now - self._last_draw < REDRAW_SECONDS and done < self.total:
            return
        if loss is not None:
            self._loss = float(loss() if callable(loss) else loss)
        self._draw(now)

    def line(self, text: str) -> None:
        """Print one line of news (not in QUIET mode), keeping the bar below it."""
        if self.mode == QUIET:
            return
        if self.mode == BAR:
            self._clear()
            print(text, file=self.stream, flush=True)
            self._draw(time.perf_counter())
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        """Leave the terminal on a fresh line after the bar."""
        if self.mode == BAR and self._bar_shown:
            self._draw(time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()
            self._bar_shown = False

    def render(self, now: float, width: int) -> str:
        """The bar's text for a terminal `width` columns wide."""
        elapsed = now - self.began
        fraction = min(1.0, self.done / self.total)
        eta = elapsed / self.done * (self.total - self.done) if self.done else None
        info = f" {self.done}/{self.total} {self.unit}"
        if self._loss is not None:
            info += f"  loss {self._loss:.4e}"
        info += f"  {format_duration(elapsed)} elapsed"
        info += f"  ETA {format_duration(eta)}" if eta is not None else "  ETA --:--"
        cells = max(10, min(40, width - len(info) - 8))
        filled = int(round(cells * fraction))
        text = f"{100 * fraction:3.0f}% [{'#' * filled}{'.' * (cells - filled)}]{info}"
        return text[: max(1, width - 1)]

    def _draw(self, now: float) -> None:
        width = shutil.get_terminal_size((100, 24)).columns
        self.stream.write("\r" + self.render(now, width) + "\x1b[K")
        self.stream.flush()
        self._last_draw = now
        self._bar_shown = True

    def _clear(self) -> None:
        if self._bar_shown:
            self.stream.write("\r\x1b[K")
