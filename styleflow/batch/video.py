"""A video split into segments, stylised on Ray actors (the batch engine's pattern: one actor
per GPU or --workers CPU actors, each loading the network once, one segment per actor at a
time). Each segment is a VideoRun over its frames, written to its own folder in the work
folder as they finish, so a rerun continues every segment from its first missing frame; the
driver then cross-fades the overlaps into the work folder's frames."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..io import video as _video
from .processes import prepare_tensorflow
from .ray_engine import connect, schedule
from .worker import one_line


@dataclass(frozen=True)
class SegmentSettings:
    """What every segment shares: the input, the style, the Stylizer's options and
    Stylizer.iter_video's options; the work folder on storage every node sees."""

    source: str
    style: str
    work: str
    stylizer: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)


def segment_folder(work: str | os.PathLike, index: int) -> Path:
    """Where segment `index` writes its frames."""
    return Path(work) / f"segment_{index:04d}"


def run_segment(stylizer, settings: SegmentSettings, segment) -> dict:
    """Stylise one segment with `stylizer`, writing its frames to its folder (those already
    there are read back, not redone); a record of what was done."""
    from ..io import images

    folder = segment_folder(settings.work, segment.index)
    began = time.perf_counter()

    def finished(index: int):
        path = _video.frame_path(folder, index)
        return images.load_image(path, "finished frame") if path.exists() else None

    run = stylizer.iter_video(settings.source, settings.style, start=segment.start,
                              stop=segment.stop, finished=finished, **settings.options)
    computed = 0
    for frame in run:
        if not frame.resumed:
            _video.write_frame(folder, frame.index, frame.array)
            computed += 1
    return {"segment": segment.index, "status": "done", "computed": computed,
            "seconds": round(time.perf_counter() - began, 3), "pid": os.getpid()}


class SegmentActor:
    """The actor's body: a Stylizer in its own process, reused for every segment it runs."""

    def __init__(self, settings: SegmentSettings, threads: int | None = None):
        from ..api import Stylizer

        prepare_tensorflow(threads)
        self.settings = settings
        self.stylizer = Stylizer(**settings.stylizer)

    def run(self, segment) -> dict:
        try:
            return run_segment(self.stylizer, self.settings, segment)
        except Exception as exc:  # a record, not a lost actor: the driver reports it
            return {"segment": segment.index, "status": "failed", "error": one_line(exc)[:500]}

    def pid(self) -> int:
        return os.getpid()


def run_segments_on_ray(segments: Sequence, settings: SegmentSettings,
                        finished: Callable[[object, dict], None], *, address: str | None = None,
                        workers: int | None = None, notes: Callable[[str], None] | None = None,
                        on_start: Callable[[object], None] | None = None) -> None:
    """Run `segments` (api.video.Segment) on Ray actors, calling `finished(segment, record)`
    in the driver for each."""
    ray, started = connect(address)
    try:
        schedule(ray, SegmentActor, list(segments), settings, finished, workers, notes,
                 on_start, noun="segment",
                 failed=lambda seg, error: {"segment": seg.index, "status": "failed",
                                            "error": error})
    finally:
        if started:
            ray.shutdown()
