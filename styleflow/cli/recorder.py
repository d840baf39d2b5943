"""What a command-line run leaves besides its images: the progress display (a tqdm bar on a
terminal, plain lines otherwise, nothing with --quiet), the loss log, the loss plot and the GIF.
`finish` is called on success and on interruption.

The log, plot, GIF and checkpoints are secondary: when one cannot be written (a full disk, a
read-only folder) mid-run or at the end, the recorder says so in one line through `warn`, goes
on without that file, and lists it in `failed`, so the command still writes its images and then
exits non-zero. A log that cannot be opened at the start stops the run before any work."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable, TextIO

import numpy as np

from ..report.animation import gif_frame, write_gif
from ..report.plot import plot_losses
from ..errors import StyleflowError, os_error
from ..report.runlog import RunLog

BAR = "bar"
LINES = "lines"
QUIET = "quiet"
# A terminal redraw costs little, but a 1000-step Adam run must not redraw 1000 times a second.
REDRAW_SECONDS = 0.2
# Off a terminal (a file, a pipe) a progress line at least this often between the run's own
# lines, so a long run shows it is alive without a line per step.
PROGRESS_SECONDS = 10.0
# tqdm's own layout, with the unit after the count and the remaining time labelled.
BAR_FORMAT = ("{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit} "
              "[{elapsed} elapsed, ETA {remaining}{postfix}]")


def format_duration(seconds: float) -> str:
    """'1:02:03' or '2:03'."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def choose_mode(quiet: bool, stream: TextIO) -> str:
    """QUIET when asked, BAR on a terminal, LINES otherwise (files, pipes, shell loops)."""
    if quiet:
        return QUIET
    isatty = getattr(stream, "isatty", None)
    return BAR if isatty is not None and isatty() else LINES


def _columns(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 0


def terminal_bar(total: int, unit: str, stream: TextIO, bar_format: str):
    """A tqdm bar on `stream` following the terminal's width, unless the terminal reports
    none (a fresh pseudo-terminal says 0x0, where tqdm would draw nothing)."""
    from tqdm import tqdm

    sized = _columns(stream) > 0
    return tqdm(total=max(1, int(total)), unit=unit, file=stream, dynamic_ncols=sized,
                ncols=None if sized else 100, nrows=None if sized else 24,
                mininterval=REDRAW_SECONDS, bar_format=bar_format)


class RunRecorder:
    """Progress of `total` `unit`s plus the optional --log, --plot and --gif outputs."""

    def __init__(self, total: int, unit: str, *, quiet: bool = False, log: str | None = None,
                 plot: str | None = None, gif: str | None = None, title: str = "loss",
                 stream: TextIO | None = None, mode: str | None = None,
                 clock=time.perf_counter, warn: Callable[[str], None] | None = None,
                 parts: tuple = ()):
        self.stream = stream or sys.stdout
        self.warn = warn or (lambda text: print(text, file=sys.stderr, flush=True))
        self.failed: list[str] = []  # one-line messages of the files that could not be written
        self.total = max(1, int(total))
        self.unit = unit
        self.clock = clock
        self.mode = mode or choose_mode(quiet, self.stream)
        self.bar = None
        if self.mode == BAR:
            self.bar = terminal_bar(total, unit, self.stream, BAR_FORMAT)
        self.plot_path = Path(plot) if plot else None
        self.gif_path = Path(gif) if gif else None
        self.title = title
        self.history: list[dict] = []
        self.frames = []
        self.log = RunLog(log, "--log", parts) if log else None
        self.began = self.last_line = clock()

    @property
    def wants_frames(self) -> bool:
        return self.gif_path is not None

    def step(self, done: int, loss: float | None = None) -> None:
        """`done` evaluations or steps are finished: drives the bar, or off a terminal prints a
        progress line when none was printed for PROGRESS_SECONDS."""
        if self.bar is None:
            if self.mode == LINES and self.clock() - self.last_line >= PROGRESS_SECONDS:
                elapsed = self.clock() - self.began
                left = elapsed * (self.total - done) / done if done else 0.0
                self.line(f"progress: {done}/{self.total} {self.unit}"
                          + (f", loss {loss:.4e}" if loss is not None else "")
                          + f", {format_duration(elapsed)} elapsed, about "
                            f"{format_duration(left)} left")
            return
        if loss is not None:
            self.bar.set_postfix_str(f"loss {loss:.4e}", refresh=False)
        self.bar.update(done - self.bar.n)

    def status(self, text: str) -> None:
        """What the current unit is doing (e.g. a video frame's evaluations): beside the bar
        on a terminal, nothing otherwise."""
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.refresh()

    def iteration(self, iteration: int, parts, seconds: float, evaluations: int,
                  text: str | None = None, image: np.ndarray | None = None,
                  image_path: str | Path | None = None) -> None:
        """Record one iteration (`parts`: its loss Parts): a log row, a plot point, a GIF frame
        (from the uint8 RGB `image`, when a GIF is asked for) and, when given, a line of text
        for the user."""
        row = dict(iteration=iteration, evaluations=evaluations, **parts.as_dict(),
                   seconds=round(seconds, 4), elapsed=round(self.clock() - self.began, 4),
                   image=str(image_path) if image_path else None)
        self.history.append(row)
        if self.log is not None:
            try:
                self.log.write(row)
            except StyleflowError as exc:
                self.log = None
                self._failed(exc, "the run goes on without it")
        if self.wants_frames and image is not None:
            self.frames.append(gif_frame(image))
        if text:
            self.line(text)

    def finish(self) -> None:
        """Close the log, draw the plot, write the GIF and say where they are."""
        if self.log is not None:
            try:
                self.log.close()
            except StyleflowError as exc:
                self._failed(exc)
            self.log = None
        written = []
        if self.plot_path is not None and self.history:
            if self.attempt("--plot", self.plot_path, lambda: plot_losses(
                    self.plot_path, self.history, title=self.title, what="--plot")):
                written.append(self.plot_path)
        if self.gif_path is not None and self.frames:
            if self.attempt("--gif", self.gif_path,
                             lambda: write_gif(self.gif_path, self.frames, what="--gif")):
                written.append(self.gif_path)
        for path in written:
            self.line(f"wrote {path}")
        self.close()

    def attempt(self, what: str, path: Path, write: Callable[[], None],
                then: str | None = None) -> bool:
        """Write a secondary file (`what` names it); False when the system refuses, said in
        one line through `warn` (with `then`, what the run does next) and kept in `failed`."""
        try:
            write()
        except StyleflowError as exc:
            self._failed(exc, then)
            return False
        except OSError as exc:  # not worded on the way: word it here
            self._failed(os_error(what, path, exc), then)
            return False
        return True

    def _failed(self, exc: StyleflowError, then: str | None = None) -> None:
        message = " ".join(str(exc).split()) + (f"; {then}" if then else "")
        self.failed.append(message)
        if self.bar is not None:
            self.bar.clear()
        self.warn(message)

    def close(self) -> None:
        """Leave the terminal on a fresh line after the bar."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def line(self, text: str) -> None:
        """Print a line for the user (not when quiet), above the bar on a terminal."""
        if self.mode == QUIET:
            return
        self.last_line = self.clock()
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)
