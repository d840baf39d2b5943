"""Loss curves drawn with matplotlib: one line per loss part on a log scale, against iterations
(bottom axis) and elapsed seconds (top axis)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

from ..errors import StyleflowError
from ..io.files import write_atomically

SERIES = (("total", "#141414"), ("content", "#1f77b4"), ("style", "#d62728"), ("tv", "#2ca02c"),
          ("photo", "#9467bd"), ("temporal", "#ff7f0e"))
# What matplotlib's Agg canvas writes, by extension (checked before a run starts).
PLOT_FORMATS = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg", ".pdf": "pdf", ".svg": "svg",
                ".tif": "tif", ".tiff": "tif", ".webp": "webp"}
SIZE_INCHES = (8, 5)
DPI = 100


def check_plot_extension(path: str | os.PathLike, what: str = "plot") -> str:
    """matplotlib's format for the file's extension; StyleflowError for one it cannot write."""
    suffix = Path(path).suffix.lower()
    if suffix not in PLOT_FORMATS:
        kind = f"'{suffix}' files" if suffix else "a name without an extension"
        raise StyleflowError(f"{what} '{path}': cannot draw plots to {kind}; use one of "
                             f"{', '.join(sorted(PLOT_FORMATS))}")
    return PLOT_FORMATS[suffix]


def plot_losses(path: str | os.PathLike, rows: Sequence[dict], title: str = "loss",
                unit: str = "iteration", what: str = "plot") -> None:
    """Draw `rows` (dicts with iteration, elapsed, total, content, style, tv) to `path`.

    Parts that are zero or negative throughout (e.g. a zero weight) are left out: a log scale
    cannot show them. Written atomically; `what` names the file in messages.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed or wanted
    from matplotlib.figure import Figure
    from matplotlib.ticker import LogLocator

    fmt = check_plot_extension(path, what)
    xs = [float(row["iteration"]) for row in rows]
    fig = Figure(figsize=SIZE_INCHES, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    drawn = 0
    for name, colour in SERIES:
        points = [(x, float(row[name])) for x, row in zip(xs, rows)
                  if row.get(name) is not None
                  and math.isfinite(float(row[name])) and float(row[name]) > 0]
        if points:
            ax.plot(*zip(*points), color=colour, label=name, linewidth=2,
                    marker="o" if len(points) < 30 else None, markersize=3)
            drawn += 1
    if drawn:
        ax.set_yscale("log")
        ax.yaxis.set_minor_locator(LogLocator(subs="all"))
        ax.legend(loc="upper right")
    else:
        ax.text(0.5, 0.5, "no positive loss values to plot", ha="center",
                transform=ax.transAxes)
    ax.grid(True, which="major", color="#dddddd")
    ax.grid(True, which="minor", color="#f0f0f0")
    ax.set_xlabel(unit)
    ax.set_ylabel("loss (log scale)")
    ax.set_title(title)
    # Seconds on the top axis, interpolated between the recorded iterations (the run starts
    # at iteration 0, second 0).
    its = [0.0] + xs
    elapsed = [0.0] + [float(row.get("elapsed") or 0.0) for row in rows]
    if all(b > a for a, b in zip(its, its[1:])) and \
            all(b > a for a, b in zip(elapsed, elapsed[1:])):
        import numpy as np

        # Beyond the last iteration, the run's average pace: margins get honest ticks.
        its.append(its[-1] * 10)
        elapsed.append(elapsed[-1] * 10)
        top = ax.secondary_xaxis("top", functions=(lambda x: np.interp(x, its, elapsed),
                                                   lambda s: np.interp(s, elapsed, its)))
        top.set_xlabel("seconds")
    write_atomically(path, lambda handle: fig.savefig(handle, format=fmt), what)
