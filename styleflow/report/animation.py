"""An animated GIF of a run's saved images, written with Pillow (no ImageMagick)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ..io.images import save_pil_atomically

# GIFs of large outputs get huge and slow to show; frames are shrunk to this width at most.
MAX_GIF_WIDTH = 512


def gif_frame(rgb: np.ndarray) -> Image.Image:
    """A uint8 RGB image as a GIF frame: at most MAX_GIF_WIDTH wide, adaptive palette."""
    img = Image.fromarray(np.asarray(rgb, np.uint8))
    if img.width > MAX_GIF_WIDTH:
        height = max(1, round(img.height * MAX_GIF_WIDTH / img.width))
        img = img.resize((MAX_GIF_WIDTH, height), Image.Resampling.LANCZOS)
    return img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)


def write_gif(path: str | os.PathLike, frames: Sequence[Image.Image], frame_ms: int = 300,
              last_ms: int = 1500, what: str | None = None) -> None:
    """Write `frames` (from gif_frame) as a looping GIF, holding the last frame longer;
    `what` names the file in messages."""
    if not frames:
        raise ValueError("no frames")
    durations = [frame_ms] * (len(frames) - 1) + [last_ms]
    save_pil_atomically(Path(path), frames[0], "GIF", save_all=True,
                        append_images=list(frames[1:]), duration=durations, loop=0,
                        optimize=False, what=what)
