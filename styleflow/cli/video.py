"""`styleflow video`: a video (or a folder of frames) stylised with temporal consistency (Ruder
et al. 2016), resumable: finished frames go to a work folder beside the output as they come,
and the same command after a crash or Ctrl-C continues from the first missing frame."""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import sys
import time
from pathlib import Path
from typing import Sequence

from ..errors import StyleflowError, os_error
from . import common as cc

PROG = "styleflow video"
ENGINES = ("local", "ray")
# The work folder's record of the run that fills it (a rerun must be the same run).
SETTINGS_FILE = ".styleflow-video.json"
# Options that do not change a single frame: they may differ between a run and its resumption.
NOT_RECORDED = {"quiet", "overwrite", "engine", "address", "workers", "keep_frames"}
SEGMENT = re.compile(r"segment_[0-9]{4,}")  # batch.video.segment_folder's names
WORK_SUFFIX = ".frames"


def build_parser(prog: str = PROG) -> cc.ArgumentParser:
    """The command line of `styleflow video`."""
    from ..defaults import POOLINGS, STYLIZE_DEFAULTS, VIDEO_DEFAULTS, VIDEO_METHODS

    p = cc.ArgumentParser(
        prog=prog,
        description="Stylise a video with temporal consistency (Ruder et al. 2016): the first "
                    "frame fully, each next one from the previous output warped by the optical "
                    "flow, with a loss that keeps it there. Finished frames are kept in "
                    "OUTPUT's work folder (OUTPUT.frames) until the video is written; rerun "
                    "the same command to resume.")
    p.add_argument("input", help="a video file (mp4, mov, webm, mkv, gif, ...) or a folder of "
                                 "frame images")
    p.add_argument("style", help="the style image")
    p.add_argument("output", help="a video file (.mp4: H.264 at the input's frame rate with "
                                  "its audio; .m4v, .mov, .mkv, .webm, .gif) or a folder of "
                                  "PNGs (a name without an extension)")
    p.add_argument("--method", choices=VIDEO_METHODS, default="lbfgs",
                   help="lbfgs: the Keras example's problem (styleflow transfer); adam: "
                        "neural-style's (styleflow style) (default: %(default)s)")
    p.add_argument("--iterations", type=cc.positive_int, default=None,
                   help="of the first frame (and the first after a scene cut): L-BFGS "
                        "iterations of 20 evaluations, or Adam steps (default: "
                        f"{VIDEO_DEFAULTS['lbfgs']['iterations']} for lbfgs, "
                        f"{VIDEO_DEFAULTS['adam']['iterations']} for adam)")
    p.add_argument("--frame-iterations", type=cc.positive_int, default=None,
                   help="of every other frame (default: half of --iterations)")
    p.add_argument("--temporal-weight", type=cc.nonnegative_float, default=None, metavar="W",
                   help="weight of the temporal term (default: "
                        f"{VIDEO_DEFAULTS['lbfgs']['temporal_weight']:g} for lbfgs, "
                        f"{VIDEO_DEFAULTS['adam']['temporal_weight']:g} for adam)")
    p.add_argument("--long-term", action="store_true",
                   help="also hold each frame to frames t-2 and t-4 where t-1 does not see it")
    p.add_argument("--independent", action="store_true",
                   help="stylise every frame on its own with --iterations (the baseline: what "
                        "a shell loop over frames gives)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--width", type=cc.positive_int, help="output width in pixels")
    size.add_argument("--height", type=cc.positive_int,
                      help="output height in pixels (default: 200 for lbfgs, the input's "
                           "size for adam)")
    p.add_argument("--content-weight", type=cc.nonnegative_float, default=None,
                   help="(default: the method's)")
    p.add_argument("--style-weight", type=cc.nonnegative_float, default=None,
                   help="(default: the method's)")
    p.add_argument("--tv-weight", type=cc.nonnegative_float, default=None,
                   help="(default: the method's)")
    p.add_argument("--learning-rate", type=cc.positive_float, default=None,
                   help=f"Adam's (default: {STYLIZE_DEFAULTS['learning_rate']:g})")
    p.add_argument("--content-layers", nargs="+", metavar="LAYER",
                   help="(default: the method's; one layer for lbfgs)")
    p.add_argument("--style-layers", nargs="+", metavar="LAYER", help="(default: the method's)")
    p.add_argument("--weights", default="auto", metavar="auto|imagenet|lite|random|PATH",
                   help="VGG19 weights, as `styleflow transfer` takes them (default: "
                        "%(default)s)")
    p.add_argument("--pooling", choices=POOLINGS, default="max", help="(default: %(default)s)")
    cc.add_engine_options(p, prog, jit_help=(  # `parse` turns auto into off
        "XLA compilation of the loss: on or off; auto is off here (each frame's run is too "
        "short to time both ways) (default: %(default)s)"))
    p.add_argument("--max-memory", type=cc.positive_float, metavar="GB", default=None,
                   help="memory budget for the process; frames larger than fits in one pass "
                        "are computed exactly in tiles (default: the memory available)")
    p.add_argument("--seed", type=cc.nonnegative_int, default=None,
                   help="seed for random weights; the same command and seed give the same "
                        "frames (default: 0)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output, and start over instead of resuming")
    p.add_argument("--keep-frames", action="store_true",
                   help="keep the work folder of frames after the video is written")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    engine = p.add_argument_group("engine")
    engine.add_argument("--engine", choices=ENGINES, default="local",
                        help="local: this process; ray: segments of the video on Ray actors "
                             "(default: %(default)s)")
    engine.add_argument("--address", metavar="ADDR",
                        help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    engine.add_argument("--workers", type=cc.positive_int, metavar="N",
                        help="Ray CPU actors (default: one per GPU, else half the CPUs)")
    engine.add_argument("--segment-length", type=cc.positive_int, metavar="FRAMES",
                        default=None,
                        help="frames per segment with --engine ray (default: the frames "
                             "shared out evenly over the workers); scene cuts always split")
    engine.add_argument("--overlap", type=cc.nonnegative_int, metavar="FRAMES", default=2,
                        help="frames two segments share and cross-fade (default: %(default)s)")
    return p


def parse(argv: Sequence[str] | None = None, prog: str = PROG):
    """Parse and check the command line (usage errors exit with status 2, as argparse)."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.engine != "ray" and (args.address or args.workers or args.segment_length):
        parser.error("arguments --address/--workers/--segment-length: only with --engine ray")
    if args.method == "lbfgs" and args.learning_rate is not None:
        parser.error("argument --learning-rate: only with --method adam")
    args.content_layers = cc.split_list(args.content_layers)
    args.style_layers = cc.split_list(args.style_layers)
    args.jit = "off" if args.jit == "auto" else args.jit  # per-frame runs are short
    return args


def flag_names(prog: str = PROG) -> dict[str, str]:
    """The library's parameter names as this command spells them (for its messages)."""
    return cc.flag_names(build_parser(prog))


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Run the CLI; returns the exit status."""
    args = parse(argv, prog)
    names = flag_names(prog)
    return cc.run_cli(prog, lambda: _run(args, prog, names), names)


def api_options(args) -> dict:
    """Stylizer.iter_video's keyword arguments from the parsed options."""
    return dict(method=args.method, iterations=args.iterations,
                frame_iterations=args.frame_iterations, temporal_weight=args.temporal_weight,
                long_term=args.long_term, independent=args.independent,
                content_weight=args.content_weight, style_weight=args.style_weight,
                tv_weight=args.tv_weight, learning_rate=args.learning_rate, height=args.height,
                width=args.width, content_layers=args.content_layers,
                style_layers=args.style_layers, max_memory=args.max_memory)


def work_folder(output: Path, kind: str) -> Path:
    """Where finished frames wait: the output folder itself, or OUTPUT.frames beside a file."""
    return output if kind == "folder" else output.with_name(output.name + WORK_SUFFIX)


def _recorded(args) -> dict:
    settings = {k: v for k, v in vars(args).items() if k not in NOT_RECORDED}
    for key in ("input", "style"):
        settings[key] = str(Path(settings[key]).resolve())
        # What the file holds, not only its name: a style or video replaced under the same
        # name resumed into a video of two halves.
        settings[f"{key} content"] = _digest(Path(settings[key]), key)
    settings.pop("output", None)
    return json.loads(json.dumps(settings, default=str))


def _digest(path: Path, what: str) -> str:
    """SHA-256 of a file's bytes, or of a folder's files (names and bytes, in name order)."""
    import hashlib

    digest = hashlib.sha256()
    try:
        if path.is_dir():
            for entry in sorted(path.iterdir()):
                if entry.is_file():
                    digest.update(entry.name.encode("utf-8", "surrogateescape") + b"\0")
                    with open(entry, "rb") as handle:
                        digest.update(hashlib.file_digest(handle, "sha256").digest())
        else:
            with open(path, "rb") as handle:
                digest.update(hashlib.file_digest(handle, "sha256").digest())
    except OSError as exc:
        raise os_error(what, path, exc, "read") from None
    return digest.hexdigest()


def _holds_frames(work: Path) -> bool:
    """Whether `work` holds finished frames, its own or its Ray segments'."""
    from ..io import video

    return bool(video.finished_frames(work)) or any(
        video.finished_frames(sub) for sub in _segments(work))


def _segments(work: Path) -> list[Path]:
    return [sub for sub in work.glob("segment_*")
            if SEGMENT.fullmatch(sub.name) and sub.is_dir() and not sub.is_symlink()]


def _clear(work: Path, frames: bool = True, folder: bool = True) -> None:
    """Remove what this command writes in `work` (its `frames`, Ray segments and record),
    then, with `folder`, the folder itself if nothing else is left in it: a folder holding
    other files, the input's frames say, keeps them."""
    for sub in _segments(work):
        _clear_frames(sub)
        _remove_if_empty(sub)
    if frames:
        _clear_frames(work)
    (work / SETTINGS_FILE).unlink(missing_ok=True)
    if folder:
        _remove_if_empty(work)


def _clear_frames(folder: Path) -> None:
    """Remove the frames this command wrote in `folder`, and its half-written ones."""
    from ..io import files, video

    for index in video.finished_frames(folder):
        video.frame_path(folder, index).unlink(missing_ok=True)
    files.remove_stale_temporaries(folder)


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty (or gone): what else is there stays
        pass


def _claim(work: Path, args, overwrite: bool) -> None:
    """Make `work` this run's: new, or holding frames of the same command (resumed), or
    cleared with --overwrite; a work folder of another run is refused. A record without
    frames (a run stopped before its first frame) binds nothing."""
    from ..io import files

    record = work / SETTINGS_FILE
    mine = _recorded(args)
    files.remove_stale_temporaries(work)  # a killed run's half-written frames
    if record.exists() and not overwrite and _holds_frames(work):
        try:
            theirs = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            theirs = None
        if theirs != mine:
            differ = sorted(k for k in set(mine) | set(theirs or {})
                            if (theirs or {}).get(k) != mine.get(k))
            raise StyleflowError(
                f"work folder '{work}' holds frames of another run (it differs in "
                f"{', '.join(differ) or 'its record'}); rerun that command, or pass "
                "--overwrite to start over")
    elif overwrite and work.exists():
        _clear(work, folder=False)
    elif not record.exists() and work.exists() and _holds_frames(work):
        raise StyleflowError(f"output folder '{work}' already holds frames; pass --overwrite "
                             "to replace them")
    files.write_atomically(record, lambda h: h.write(json.dumps(mine, indent=1).encode()))


def _run(args, prog: str, names: dict[str, str]) -> int:
    from ..io import files, images, video

    output = Path(args.output)
    kind = video.output_kind(output, "output")
    there = files.look(output, "output", "write")
    if kind != "folder" and there is not None and not args.overwrite:
        raise StyleflowError(f"output '{output}' exists; pass --overwrite to replace it")
    if kind != "folder" and there is not None and stat.S_ISDIR(there.st_mode):
        raise StyleflowError(f"output '{output}': is a folder; a video output needs a file name")
    files.refuse_overwriting_inputs([output], [args.input, args.style])
    fresh = not files.exists(work_folder(output, kind))  # this run makes it
    if kind == "folder":
        files.prepare_output_folder(output, "output")
    else:
        files.prepare_output_dir(output, "output")
    work = work_folder(output, kind)
    if kind != "folder":
        _check_work_folder(output, work)
    cc.check_weights(args.weights)
    # Inputs are read before TensorFlow loads: a bad one is one line at once.
    clip = video.read_clip(args.input, "input")
    style = images.load_image(args.style, "style image")
    if files.resolved(work) == files.resolved(args.input):
        raise StyleflowError(
            f"output '{output}' is the input folder; choose another output" if kind == "folder"
            else f"output '{output}': its work folder '{work}' is the input folder; choose "
                 "another output name")
    try:
        _claim(work, args, args.overwrite)  # a full disk may refuse its record
        began = time.perf_counter()
        if args.engine == "ray":
            stats = _run_ray(args, prog, clip, work)
        else:
            stats = _run_local(args, prog, clip, style, work,
                               cc.make_stylizer(args, args.weights, names))
    except BaseException:
        _forget(work, fresh)
        raise
    if isinstance(stats, int):  # interrupted: the exit status
        _forget(work, fresh)
        return stats
    frames = [images.load_image(video.frame_path(work, i), "finished frame")
              for i in range(len(clip.frames))]
    if kind != "folder":
        video.write_video(output, frames, clip.fps, clip.audio_from)
        if not args.keep_frames:
            _clear(work)
    elapsed = time.perf_counter() - began
    if not args.quiet:
        slowed = kind == "gif" and clip.fps > video.GIF_MAX_FPS
        print(f"{len(frames)} frames at {float(clip.fps):g} fps"
              f"{f' (played at {video.GIF_MAX_FPS}, the most a GIF plays)' if slowed else ''}"
              f"{' with audio' if clip.audio_from and kind == 'video' else ''} -> {output} "
              f"({elapsed:.1f}s{stats})", flush=True)
    return 0


def _forget(work: Path, fresh: bool) -> None:
    """After a run that ended before its first frame: no record is left (and the work
    folder goes too where the run made it). A failure here must not hide the run's own."""
    if not _holds_frames(work):
        with contextlib.suppress(OSError):
            _clear(work, frames=False, folder=fresh)


def _check_work_folder(output: Path, work: Path) -> None:
    """One line, before any work, where OUTPUT.frames (beside a video output) cannot be the
    work folder: its name too long, a symbolic link loop, a file of that name."""
    from ..io import files

    limit = files.name_limit(work.parent)
    if limit and len(os.fsencode(work.name)) > limit:
        raise StyleflowError(
            f"output '{output}': name too long for its work folder '{work.name}' (at most "
            f"{limit - len(WORK_SUFFIX)} bytes, as the folder's name adds '{WORK_SUFFIX}')")
    info = files.look(work, f"output '{output}': work folder", "use")
    if info is not None and not stat.S_ISDIR(info.st_mode):
        raise StyleflowError(f"output '{output}': its work folder '{work}' is a file; move it "
                             "away or choose another output name")


def _run_local(args, prog: str, clip, style, work: Path, stylizer):
    """Stylise every missing frame in this process; a summary string, or the exit status
    after an interruption."""
    from ..io import images, video
    from .recorder import RunRecorder, format_duration

    have = video.finished_frames(work)

    def finished(index: int):
        if index not in have:
            return None
        return images.load_image(video.frame_path(work, index), "finished frame")

    recorder = None
    run = stylizer.iter_video(
        clip, style, **api_options(args), finished=finished,
        on_evaluation=lambda n, loss: recorder.status(
            f"frame {run.current + 1}: {min(n, run.current_units)}/{run.current_units} "
            f"{'evaluations' if args.method == 'lbfgs' else 'steps'}, loss {loss:.3e}"))
    count = len(clip.frames)
    recorder = RunRecorder(count, "frames", quiet=args.quiet, title="video")
    h, w = run.size
    recorder.line(f"{count} frames, {w}x{h} px, weights {stylizer.weights.source}, "
                  f"{args.method}, {'independent frames' if args.independent else 'temporal'}"
                  + (f"; resuming: {len(have)} frames done in {work}" if have else ""))
    computed = seconds = flow = 0.0
    try:
        for frame in run:
            if not frame.resumed:
                try:
                    video.write_frame(work, frame.index, frame.array)
                except StyleflowError as exc:  # worded for the file alone: say what it is
                    raise StyleflowError(f"output: {exc}") from None
                computed += 1
                seconds += frame.seconds
                flow += frame.flow_seconds
                how = ("from the content" if frame.restarted
                       else f"warped, {frame.trusted:.0%} of pixels carried")
                recorder.line(f"frame {frame.index + 1}/{count}: {how}, "
                              f"{cc.format_parts(frame.parts)} {frame.seconds:.1f}s")
            recorder.step(frame.index + 1)
    except KeyboardInterrupt as exc:
        recorder.close()
        done = len(video.finished_frames(work))
        print(f"{prog}: interrupted; {done} of {count} frames are finished in {work}; run "
              "the same command to resume" if done else
              f"{prog}: interrupted before the first frame was finished; nothing was kept",
              file=sys.stderr)
        return cc.interrupt_code(exc)
    except StyleflowError as exc:  # a frame that cannot be written (a full disk), say
        recorder.close()
        done = len(video.finished_frames(work))
        if not done:
            raise
        raise StyleflowError(f"{exc}; {done} of {count} frames are kept in {work}: run the "
                             "same command to resume") from None
    recorder.close()
    if not computed:
        return ""
    return (f", {seconds / computed:.2f}s a frame stylising, {flow / computed:.3f}s a frame "
            f"of optical flow over {int(computed)} frames; {format_duration(seconds)} in all")


def _run_ray(args, prog: str, clip, work: Path):
    """Stylise the video's segments on Ray actors; a summary string, or the exit status after
    an interruption."""
    from ..api.video import crossfade, plan_segments, scene_cuts
    from ..batch.video import SegmentSettings, run_segments_on_ray, segment_folder
    from ..io import images, video

    count = len(clip.frames)
    h, w = clip.size
    probe = images.fit_size((h, w), 128, None)
    cuts = scene_cuts(clip.frames, probe)
    length = args.segment_length or max(1, -(-count // (args.workers or 2)))
    segments = plan_segments(count, length, args.overlap, cuts)
    settings = SegmentSettings(
        source=str(Path(args.input).resolve()), style=str(Path(args.style).resolve()),
        work=str(work.resolve()),
        stylizer=dict(weights=args.weights, precision=args.precision, pooling=args.pooling,
                      seed=args.seed, deterministic=args.seed is not None, jit=args.jit),
        options=api_options(args))
    say = (lambda text: None) if args.quiet else (lambda text: print(text, flush=True))
    say(f"{count} frames in {len(segments)} segments"
        + (f" (scene cuts before frames {', '.join(str(c + 1) for c in cuts)})" if cuts else "")
        + f", overlaps of {args.overlap} frames cross-faded")
    failures = []

    def finished(segment, record):
        if record.get("status") != "done":
            failures.append(f"segment {segment.index + 1}: {record.get('error')}")
        say(f"segment {segment.index + 1}/{len(segments)} (frames {segment.start + 1}-"
            f"{segment.stop}): {record.get('status')}"
            + (f", {record.get('computed')} frames in {record.get('seconds')}s"
               if record.get("status") == "done" else f": {record.get('error')}"))
    try:
        run_segments_on_ray(segments, settings, finished, address=args.address,
                            workers=args.workers, notes=say)
    except KeyboardInterrupt as exc:
        print(f"{prog}: interrupted; finished frames are kept in {work}; run the "
              "same command to resume", file=sys.stderr)
        return cc.interrupt_code(exc)
    if failures:
        raise StyleflowError(f"{len(failures)} segment(s) failed; {failures[0]}")
    cache: dict[tuple[int, int], object] = {}

    def outputs(segment_index: int, index: int):
        key = (segment_index, index)
        if key not in cache:
            cache[key] = images.load_image(video.frame_path(
                segment_folder(work, segment_index), index), "segment frame")
        return cache[key]

    for index in range(count):
        video.write_frame(work, index, crossfade(segments, outputs, index))
    if not args.keep_frames:
        for segment in segments:
            _clear_frames(segment_folder(work, segment.index))
            _remove_if_empty(segment_folder(work, segment.index))
    return f", {len(segments)} segments on Ray"
