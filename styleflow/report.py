"""What a run leaves besides its images: the progress display, the loss log, the loss plot and
the GIF. Both CLIs feed one RunRecorder; `finish` is called on success and on interruption."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, TextIO

import numpy as np

from . import progress as progress_mod
from .animation import gif_frame, write_gif
from .objective import Parts
from .plot import plot_losses
from .runlog import RunLog


class RunRecorder:
    """Progress of `total` `unit`s plus the optional --log, --plot and --gif outputs."""

    def __init__(self, total: int, unit: str, *, quiet: bool = False, log: str | None = None,
                 plot: str | None = None, gif: str | None = None, title: str = "loss",
                 stream: TextIO | None = None):
        stream = stream or sys.stdout
        self.progress = progress_mod.Progress(total, unit, progress_mod.choose_mode(quiet, stream),
                                              stream)
        self.plot_path = Path(plot) if plot else None
        self.gif_path = Path(gif) if gif else None
        self.title = title
        self.history: list[dict] = []
        self.frames = []
        self.log = RunLog(log) if log else None
        self.began = time.perf_counter()

    @property
    def wants_frames(self) -> bool:
        return self.gif_path is not None

    def step(self, done: int, loss: Callable[[], float] | float | None = None) -> None:
        """One more evaluation or step is done (drives the progress bar)."""
        self.progress.update(done, loss)

    def iteration(self, iteration: int, parts: Parts, seconds: float, evaluations: int,
                  text: str | None = None, image: np.ndarray | None = None,
                  image_path: str | Path | None = None) -> None:
        """Record one iteration: a log row, a plot point, a GIF frame (from the uint8 RGB
        `image`, when a GIF is asked for) and, when given, a line of text for the user."""
        row = dict(iteration=iteration, evaluations=evaluations, **parts.as_dict(),
                   seconds=round(seconds, 4), elapsed=round(time.perf_counter() - self.began, 4),
                   image=str(image_path) if image_path else None)
        self.history.append(row)
        if self.log is not None:
            self.log.write(row)
        if self.wants_frames and image is not None:
            self.frames.append(gif_frame(image))
        if text:
            self.progress.line(text)

    def finish(self) -> None:
        """Close the log, draw the plot, write the GIF and say where they are."""
        if self.log is not None:
            self.log.close()
        written = []
        if self.plot_path is not None and self.history:
            plot_losses(self.plot_path, self.history, title=self.title)
            written.append(self.plot_path)
        if self.gif_path is not None and self.frames:
            write_gif(self.gif_path, self.frames)
            written.append(self.gif_path)
        for path in written:
            self.progress.line(f"wrote {path}")
        self.progress.close()

    def line(self, text: str) -> None:
        """Print a line for the user (not when quiet)."""
        self.progress.line(text)
