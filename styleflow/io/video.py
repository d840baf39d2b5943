"""Video in and out: a video file decoded with PyAV (the FFmpeg libraries shipped in its wheel,
no system ffmpeg), or a folder of frame images; a video file encoded with PyAV (H.264 in MP4 /
MOV / MKV, VP9 in WebM) with the input's audio stream copied, an animated GIF (Pillow), or a
folder of PNGs. Every file is written atomically (io.files)."""

from __future__ import annotations

import io
import os
import re
import stat
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from ..errors import StyleflowError
from . import images
from .files import look, write_atomically

# Output containers by extension: (PyAV format, video codec, pixel format). GIF goes through
# Pillow (its palette is far better than FFmpeg's default one); a name without an extension
# is a folder of PNGs.
VIDEO_FORMATS = {".mp4": ("mp4", "libx264", "yuv420p"), ".m4v": ("mp4", "libx264", "yuv420p"),
                 ".mov": ("mov", "libx264", "yuv420p"), ".mkv": ("matroska", "libx264", "yuv420p"),
                 ".webm": ("webm", "libvpx-vp9", "yuv420p")}
VIDEO_FORMATS_BY_NAME = {fmt: codec for fmt, codec, _ in VIDEO_FORMATS.values()}
GIF = ".gif"
OUTPUT_EXTENSIONS = tuple(VIDEO_FORMATS) + (GIF,)
# Audio codecs to re-encode to when a container cannot take the input's audio as it is.
AUDIO_FALLBACK = {"mp4": "aac", "mov": "aac", "matroska": "aac", "webm": "libopus"}
# H.264 quality: constant rate factor 18 is visually lossless for most material.
H264_OPTIONS = {"crf": "18", "preset": "medium"}
# A folder of frames has no frame rate of its own.
FOLDER_FPS = Fraction(25)
FRAME_NAME = "frame_{:06d}.png"
_FRAME_PATTERN = re.compile(r"^frame_(\d{6})\.png$")
_NUMBERS = re.compile(r"(\d+)")


@dataclass
class Clip:
    """A decoded video: its frames as uint8 RGB arrays (h, w, 3), the frame rate, and the file
    whose audio stream the output copies (None for a folder, or a file without audio)."""

    frames: list[np.ndarray]
    fps: Fraction
    source: str
    audio_from: str | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of every frame."""
        return self.frames[0].shape[:2]


def _av():
    try:
        import av
    except ImportError:
        raise StyleflowError("video needs PyAV, which is not installed: pip install "
                             "'styleflow[video]' (or pip install -r requirements-video.txt)"
                             ) from None
    return av


def read_clip(path: str | os.PathLike, what: str = "video") -> Clip:
    """Decode a video file (anything FFmpeg reads: MP4, MOV, WebM, MKV, animated GIF, ...)
    or read a folder of frame images (sorted by the numbers in their names; all the same
    size). Any problem is a StyleflowError naming `what` and the path."""
    p = Path(path)
    label = f"{what} '{path}'"
    info = look(p, what)
    if info is None:
        raise StyleflowError(f"{label}: not found")
    if stat.S_ISDIR(info.st_mode):
        return _read_folder(p, label)
    if not stat.S_ISREG(info.st_mode):  # FFmpeg would read /dev/zero or wait on a pipe
        raise StyleflowError(f"{label}: not a regular file (a device or a pipe)")
    if info.st_size == 0:
        raise StyleflowError(f"{label}: file is empty")
    av = _av()
    try:
        container = av.open(str(p))
    except av.error.FFmpegError as exc:
        raise StyleflowError(f"{label}: not a video FFmpeg can read ({_reason(exc)})") from None
    with container:
        if not container.streams.video:
            raise StyleflowError(f"{label}: has no video stream")
        stream = container.streams.video[0]
        if stream.codec_context is None or not getattr(stream.codec_context, "name", None):
            raise StyleflowError(f"{label}: its video codec cannot be decoded")
        stream.thread_type = "AUTO"
        fps = stream.average_rate or stream.guessed_rate or FOLDER_FPS
        frames = []
        try:
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
        except av.error.FFmpegError as exc:
            if not frames:
                raise StyleflowError(f"{label}: cannot decode its video "
                                     f"({_reason(exc)})") from None
            # A truncated file: the frames before the damage are the video.
        audio = str(p) if container.streams.audio else None
    if not frames:
        raise StyleflowError(f"{label}: has no frames")
    if Path(p).suffix.lower() == GIF:
        fps = _gif_rate(p, fps)
    return Clip(frames, Fraction(fps).limit_denominator(100000), str(p), audio)


def _gif_rate(path: Path, fallback) -> Fraction:
    """An animated GIF's frame rate from its frames' durations, on average (FFmpeg's guess for
    GIFs is its 100 fps time base; a GIF's durations step by 10 ms, so a 29.97 fps GIF written
    here alternates 30 and 40 ms)."""
    total = count = 0
    try:
        with Image.open(path) as img:
            for index in range(getattr(img, "n_frames", 1)):
                img.seek(index)
                total += int(img.info.get("duration") or 0)
                count += 1
    except (OSError, ValueError, EOFError):
        total = 0
    return Fraction(1000 * count, total) if total else Fraction(fallback)


def _read_folder(folder: Path, label: str) -> Clip:
    names = []
    for e in folder.iterdir():
        if e.name.startswith(".") or e.suffix.lower() not in images.OUTPUT_FORMATS:
            continue
        # A frame that cannot be read is an error, not a shorter video: a broken or looping
        # symbolic link, a pipe, a device.
        info = look(e, f"{label}: frame")
        if info is None:
            raise StyleflowError(f"{label}: frame '{e.name}' is a broken symbolic link")
        if stat.S_ISDIR(info.st_mode):
            continue
        if not stat.S_ISREG(info.st_mode):
            raise StyleflowError(f"{label}: frame '{e.name}' is not a regular file (a device "
                                 "or a pipe)")
        names.append(e)
    names.sort(key=lambda e: [int(t) if t.isdigit() else t for t in _NUMBERS.split(e.name)])
    if not names:
        raise StyleflowError(f"{label}: the folder holds no frame images (.png, .jpg, ...)")
    frames = []
    for e in names:
        frame = images.load_image(e, "frame")
        if frames and frame.shape != frames[0].shape:
            raise StyleflowError(
                f"{label}: frames differ in size: '{names[0].name}' is "
                f"{frames[0].shape[1]}x{frames[0].shape[0]}, '{e.name}' "
                f"{frame.shape[1]}x{frame.shape[0]}; resize them to one size")
        frames.append(frame)
    return Clip(frames, FOLDER_FPS, str(folder), None)


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(text).split())[:160]


def output_kind(path: str | os.PathLike, what: str = "output") -> str:
    """'folder' (no extension: a folder of PNGs), 'gif' or 'video'; StyleflowError for an
    extension no writer here supports."""
    suffix = Path(path).suffix.lower()
    if not suffix:
        return "folder"
    if suffix == GIF:
        return "gif"
    if suffix in VIDEO_FORMATS:
        return "video"
    raise StyleflowError(f"{what} '{path}': cannot write '{suffix}' videos; use one of "
                         f"{', '.join(OUTPUT_EXTENSIONS)}, or a name without an extension "
                         "for a folder of PNG frames")


def frame_path(folder: str | os.PathLike, index: int) -> Path:
    """The file of frame `index` (from 0) in a folder of frames."""
    return Path(folder) / FRAME_NAME.format(index + 1)


def finished_frames(folder: str | os.PathLike) -> set[int]:
    """Indices (from 0) of the frames written to `folder` (complete files only: they are
    written atomically)."""
    try:
        entries = os.listdir(folder)
    except OSError:
        return set()
    return {int(m[1]) - 1 for m in map(_FRAME_PATTERN.match, entries) if m}


def write_frame(folder: str | os.PathLike, index: int, rgb: np.ndarray) -> Path:
    """Write frame `index` as a PNG in `folder`, atomically."""
    path = frame_path(folder, index)
    images.save_image(path, rgb)
    return path


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps,
                audio_from: str | None = None) -> None:
    """Write uint8 RGB frames as the video `path` asks for by its extension (see
    OUTPUT_EXTENSIONS) at `fps`, atomically, with the audio stream of `audio_from` copied
    (re-encoded when the container cannot hold it as it is; GIFs have none). H.264 and VP9
    need even sides: an odd last row or column is dropped."""
    path = Path(path)
    fps = Fraction(fps).limit_denominator(100000)
    kind = output_kind(path)
    if kind == "folder":
        for i, frame in enumerate(frames):
            write_frame(path, i, frame)
        return
    if kind == "gif":
        pictures = [Image.fromarray(np.asarray(f, np.uint8)) for f in frames]
        durations = gif_durations(len(pictures), fps)
        write_atomically(path, lambda handle: pictures[0].save(
            handle, format="GIF", save_all=True, append_images=pictures[1:],
            duration=durations, loop=0, optimize=False))
        return
    write_atomically(path, lambda handle: _encode(handle, path, frames, fps, audio_from))


GIF_MAX_FPS = 50  # browsers play a frame shown less than 20 ms for 100 ms


def gif_durations(count: int, fps) -> list[int]:
    """Each frame's time in ms for a GIF at `fps`: GIFs count in hundredths of a second, so
    frame i ends at i+1 frames' time rounded to 10 ms (29.97 fps gives 30, 40, 30, ... ms and
    keeps time with the input, where one 33 ms step would play 30 ms frames, at 33 fps). At most
    GIF_MAX_FPS."""
    step = 1000 / min(float(fps), GIF_MAX_FPS)
    ends = [10 * round((i + 1) * step / 10) for i in range(count)]
    return [max(20, end - start) for start, end in zip([0] + ends[:-1], ends)]


def _encode(handle, path: Path, frames: Iterable[np.ndarray], fps: Fraction,
            audio_from: str | None) -> None:
    av = _av()
    fmt, codec, pix_fmt = VIDEO_FORMATS[path.suffix.lower()]
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise StyleflowError(f"output '{path}': no frames to write")
    try:
        _mux(av, handle, fmt, codec, pix_fmt, first, frames, fps, audio_from)
    except av.error.FFmpegError as exc:  # the last resort: _audio_streams tries the muxer first
        raise StyleflowError(f"output '{path}': FFmpeg cannot write it ({_reason(exc)})"
                             ) from None


def _mux(av, handle, fmt, codec, pix_fmt, first, frames, fps, audio_from) -> None:
    with av.open(handle, "w", format=fmt) as out:
        h, w = first.shape[0] & ~1, first.shape[1] & ~1
        video = out.add_stream(codec, rate=fps)
        video.width, video.height, video.pix_fmt = w, h, pix_fmt
        video.time_base = 1 / fps
        if codec == "libx264":
            video.options = dict(H264_OPTIONS)
        audio = _audio_streams(av, out, fmt, audio_from)  # after the video: stream 0 is video
        for i, frame in enumerate(_chain(first, frames)):
            frame = np.asarray(frame, np.uint8)
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[:h, :w]),
                                                 format="rgb24")
            picture.pts = i
            picture.time_base = video.time_base
            out.mux(video.encode(picture))
        out.mux(video.encode())
        if audio is not None:
            audio()


def _chain(first, rest):
    yield first
    yield from rest


def _audio_streams(av, out, fmt: str, audio_from: str | None):
    """Add the audio stream of `audio_from` to `out` (copied, or re-encoded when the
    container refuses its codec); returns the function that moves its packets, or None."""
    if audio_from is None:
        return None
    source = av.open(audio_from)
    if not source.streams.audio:
        source.close()
        return None
    stream = source.streams.audio[0]
    if _copies(av, fmt, audio_from):
        target = out.add_stream_from_template(stream)

        def move():
            with source:
                for packet in source.demux(stream):
                    if packet.dts is None:
                        continue
                    packet.stream = target
                    out.mux(packet)
        return move
    codec = AUDIO_FALLBACK[fmt]
    rate = 48000 if codec == "libopus" else stream.codec_context.sample_rate
    target = out.add_stream(codec, rate=rate)
    resample = av.AudioResampler(format=target.codec_context.format,
                                 layout=stream.codec_context.layout, rate=rate)

    def transcode():
        with source:
            for frame in source.decode(stream):
                frame.pts = None
                for piece in resample.resample(frame):
                    out.mux(target.encode(piece))
            for piece in resample.resample(None):
                out.mux(target.encode(piece))
            out.mux(target.encode())
    return transcode


def _copies(av, fmt: str, audio_from: str) -> bool:
    """Whether a `fmt` container takes the audio stream of `audio_from` as it is. Its list of
    supported codecs is not enough (PCM in MP4, FLAC or Opus in MOV pass it, and the muxer
    refuses their first packet), so a few packets are tried in a throwaway container."""
    try:
        with av.open(audio_from) as source, av.open(io.BytesIO(), "w", format=fmt) as trial:
            stream = source.streams.audio[0]
            picture = trial.add_stream(VIDEO_FORMATS_BY_NAME[fmt], rate=25)
            picture.width, picture.height, picture.pix_fmt = 16, 16, "yuv420p"
            target = trial.add_stream_from_template(stream)
            trial.start_encoding()
            for count, packet in enumerate(source.demux(stream)):
                if packet.dts is not None:
                    packet.stream = target
                    trial.mux(packet)
                if count >= 4:
                    break
    except (av.error.FFmpegError, ValueError):  # ValueError: a codec the format lists not
        return False
    return True


def check_frame_sizes(frames: Sequence[np.ndarray], what: str) -> None:
    """StyleflowError when the frames are not all one size."""
    for i, frame in enumerate(frames):
        if frame.shape != frames[0].shape:
            raise StyleflowError(f"{what}: frame {i + 1} is {frame.shape[1]}x{frame.shape[0]}, "
                                 f"frame 1 {frames[0].shape[1]}x{frames[0].shape[0]}; frames "
                                 "must all be one size")
