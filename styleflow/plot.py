"""Loss curves drawn with Pillow: one line per loss part on a log scale (no matplotlib needed)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from .images import check_image_extension, save_pil_atomically

SERIES = (("total", (20, 20, 20)), ("content", (31, 119, 180)), ("style", (214, 39, 40)),
          ("tv", (44, 160, 44)))
SIZE = (800, 500)
MARGIN = dict(left=80, right=120, top=40, bottom=50)


def _font(size: int):
    try:
        return ImageFont.load_default(size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def plot_losses(path: str | os.PathLike, rows: Sequence[dict], x_key: str = "iteration",
                title: str = "loss") -> None:
    """Draw `rows` (dicts with x_key, total, content, style, tv) to an image file at `path`.

    Parts that are zero or negative throughout (e.g. a zero weight) are left out: a log scale
    cannot show them.
    """
    fmt = check_image_extension(path, "--plot")
    xs = [float(row[x_key]) for row in rows]
    series = [(name, colour, [(x, float(row[name])) for x, row in zip(xs, rows)
                              if float(row[name]) > 0 and math.isfinite(float(row[name]))])
              for name, colour in SERIES]
    series = [s for s in series if s[2]]
    img = Image.new("RGB", SIZE, "white")
    draw = ImageDraw.Draw(img)
    font, small = _font(16), _font(12)
    left, top = MARGIN["left"], MARGIN["top"]
    right, bottom = SIZE[0] - MARGIN["right"], SIZE[1] - MARGIN["bottom"]
    draw.text((left, 10), title, fill="black", font=font)
    draw.rectangle((left, top, right, bottom), outline="black")
    if not series:
        draw.text((left + 10, top + 10), "no positive loss values to plot", fill="black", font=font)
        save_pil_atomically(Path(path), img, fmt)
        return

    values = [v for _, _, pts in series for _, v in pts]
    lo, hi = math.floor(math.log10(min(values))), math.ceil(math.log10(max(values)))
    hi = max(hi, lo + 1)
    x0, x1 = min(xs), max(xs)
    x1 = x1 if x1 > x0 else x0 + 1

    def to_px(x: float, v: float) -> tuple[float, float]:
        px = left + (x - x0) / (x1 - x0) * (right - left)
        py = bottom - (math.log10(v) - lo) / (hi - lo) * (bottom - top)
        return px, py

    step = max(1, (hi - lo) // 8)
    for decade in range(lo, hi + 1, step):
        _, y = to_px(x0, 10.0 ** decade)
        draw.line((left, y, right, y), fill=(225, 225, 225))
        draw.text((left - 8, y), f"1e{decade}", fill="black", font=small, anchor="rm")
    for decade in range(lo, hi):
        for m in range(2, 10) if step == 1 else ():
            _, y = to_px(x0, m * 10.0 ** decade)
            draw.line((left, y, right, y), fill=(243, 243, 243))
    for tick in _ticks(x0, x1, whole=all(float(x).is_integer() for x in xs)):
        x, _ = to_px(tick, 10.0 ** lo)
        draw.line((x, bottom, x, bottom + 5), fill="black")
        draw.text((x, bottom + 8), f"{tick:g}", fill="black", font=small, anchor="mt")
    draw.text(((left + right) / 2, SIZE[1] - 18), x_key, fill="black", font=small, anchor="mm")

    for index, (name, colour, pts) in enumerate(series):
        coords = [to_px(x, v) for x, v in pts]
        if len(coords) > 1:
            draw.line(coords, fill=colour, width=2)
        for x, y in coords:
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colour)
        ly = top + 10 + 22 * index
        draw.line((right + 12, ly, right + 36, ly), fill=colour, width=3)
        draw.text((right + 42, ly), name, fill="black", font=small, anchor="lm")
    save_pil_atomically(Path(path), img, fmt)


def _ticks(x0: float, x1: float, count: int = 6, whole: bool = False) -> list[float]:
    """About `count` round tick positions between x0 and x1 (whole numbers if `whole`)."""
    raw = max((x1 - x0) / count, 1.0 if whole else 0.0) or 1.0
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    start = math.ceil(x0 / step) * step
    ticks = []
    value = start
    while value <= x1 + 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks
