"""Synthetic video clips for the video benchmark and tests: a camera pan over a photograph with
an object (a disc) moving across it faster than the pan, written with PyAV, optionally with a
sine-wave audio track."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
# The shared photographs (beside the checkout), else the repository's own.
PHOTOS = [ROOT.parent / "shared" / "images", ROOT / "images"]


def photo(name: str = "base1.jpg") -> Path:
    """A photograph by name from the shared images, else from images/."""
    for folder in PHOTOS:
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(name)


def pan_frames(count: int, size: tuple[int, int], source: str | Path | None = None,
               pan: float = 0.25, disc: bool = True) -> list[np.ndarray]:
    """`count` uint8 RGB frames of `size` (w, h): a window sliding right across the photo by
    `pan` of its width over the clip, and a red disc crossing the frame left to right."""
    w, h = size
    with Image.open(source or photo()) as img:
        img = img.convert("RGB")
        scale = h / img.height
        wide = img.resize((max(int(img.width * scale), int(w * (1 + pan)) + 2), h),
                          Image.Resampling.LANCZOS)
    frames = []
    for t in range(count):
        x = pan * w * t / max(1, count - 1)
        # Sub-pixel pan: an affine crop, so motion is smooth at any frame count.
        frame = wide.transform((w, h), Image.Transform.AFFINE, (1, 0, x, 0, 1, 0),
                               resample=Image.Resampling.BILINEAR)
        if disc:
            draw = ImageDraw.Draw(frame)
            r = max(3, h // 8)
            cx = -r + (w + 2 * r) * t / max(1, count - 1)
            cy = h // 2
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(220, 40, 40))
        frames.append(np.asarray(frame))
    return frames


def write_clip(path: str | Path, frames, fps=12, audio: bool = False,
               codec: str = "libx264") -> Path:
    """Encode `frames` to `path` with PyAV at `fps`, with a 440 Hz sine track when `audio`."""
    import av

    fps = Fraction(fps)
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=fps)
        video.height, video.width = frames[0].shape[0] & ~1, frames[0].shape[1] & ~1
        video.pix_fmt = "yuv420p"
        sound = out.add_stream("aac", rate=44100) if audio else None
        for i, f in enumerate(frames):
            picture = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(f[:video.height, :video.width]), format="rgb24")
            picture.pts = i
            out.mux(video.encode(picture))
        out.mux(video.encode())
        if sound is not None:
            seconds = len(frames) / float(fps)
            t = np.arange(int(44100 * seconds)) / 44100
            wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
            frame = av.AudioFrame.from_ndarray(wave, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44100, 0
            out.mux(sound.encode(frame))
            out.mux(sound.encode())
    return Path(path)
