"""`styleflow video` and Stylizer.iter_video on clips made here: a camera pan over a photograph
with a disc moving across it, a few frames at small size, lite weights, 1-3 iterations."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.clips import pan_frames, write_clip
from conftest import SESSION_TMP, assert_clean_error, call_cli, child, make_image

av = pytest.importorskip("av")
pytest.importorskip("cv2")

SIZE = (96, 64)
STYLE = Path(__file__).resolve().parents[1] / "images" / "ref7.jpg"
FAST = ["--weights", "lite", "--height", "64", "--quiet"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """An 8-frame pan at 12 fps with a sine track (mp4), a 6-frame GIF, a folder of frames."""
    folder = tmp_path_factory.mktemp("clips")
    frames = pan_frames(8, SIZE)
    mp4 = write_clip(folder / "pan.mp4", frames, 12, audio=True)
    gif = folder / "pan.gif"
    pictures = [Image.fromarray(f) for f in frames[:6]]
    pictures[0].save(gif, save_all=True, append_images=pictures[1:], duration=100, loop=0)
    stills = folder / "stills"
    stills.mkdir()
    for i, f in enumerate(frames[:5]):
        Image.fromarray(f).save(stills / f"shot{i + 1}.png")  # shot10 would sort after shot9
    return {"frames": frames, "mp4": mp4, "gif": gif, "folder": stills}


def streams(path: Path) -> dict:
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        info = {"fps": video.average_rate, "frames": sum(1 for _ in container.decode(video))}
    with av.open(str(path)) as container:
        audio = container.streams.audio
        info["audio"] = None if not audio else (audio[0].codec_context.name,
                                                float(audio[0].duration * audio[0].time_base))
    return info


def test_frame_count_rate_and_audio_are_kept(clips, tmp_path):
    out = tmp_path / "styled.mp4"
    proc = call_cli("styleflow", "video", clips["mp4"], STYLE, out, *FAST, "--iterations", "1",
                    "--frame-iterations", "1")
    assert proc.returncode == 0, proc.stderr
    got, given = streams(out), streams(clips["mp4"])
    assert got["frames"] == given["frames"] == 8
    assert got["fps"] == given["fps"] == 12
    assert given["audio"] is not None and got["audio"] is not None
    assert got["audio"][0] == given["audio"][0]  # copied, not re-encoded
    assert abs(got["audio"][1] - given["audio"][1]) < 0.05
    assert not (tmp_path / "styled.mp4.frames").exists()  # the work folder goes at the end


def test_temporal_consistency_beats_independent_frames(clips):
    """Ruder et al.'s temporal term: the warping error (Lai et al.) of the temporal run is
    well below that of frames stylised on their own, with the same weights and start."""
    from styleflow import Stylizer
    from styleflow.objective.flow import warping_error

    stylizer = Stylizer(weights="lite", seed=0)
    errors, parts = {}, {}
    for independent in (True, False):
        run = stylizer.iter_video(clips["frames"][:6], STYLE, iterations=2, frame_iterations=1,
                                  independent=independent, height=64)
        frames = list(run)
        assert [f.index for f in frames] == list(range(6))
        errors[independent] = warping_error([f.array for f in frames], run.frames)
        parts[independent] = [f.parts.temporal for f in frames]
    assert parts[True] == [None] * 6  # no temporal term when independent
    assert all(p > 0 for p in parts[False][1:])  # the term is part of the optimised loss
    print(f"warping error: temporal {errors[False]:.5f}, independent {errors[True]:.5f}, "
          f"ratio {errors[False] / errors[True]:.2f}")
    assert errors[False] < 0.5 * errors[True]


def test_style_targets_are_computed_once_per_video(clips, monkeypatch):
    from styleflow import Stylizer
    from styleflow.objective.objective import Objective

    grams = []
    original = Objective._style_grams
    monkeypatch.setattr(Objective, "_style_grams",
                        lambda self, style: grams.append(1) or original(self, style))
    stylizer = Stylizer(weights="lite", seed=0)
    list(stylizer.iter_video(clips["frames"][:4], STYLE, iterations=1, height=64))
    assert len(grams) == 1


def _frames_in(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.glob("frame_*.png")}


def _wait_for_frames(proc, folder: Path, count: int, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if len(list(folder.glob("frame_*.png"))) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} frames appeared in {folder}")


@pytest.mark.slow
def test_ctrl_c_and_kill_9_resume_without_redoing_frames(clips, tmp_path):
    out = tmp_path / "styled.mp4"
    work = tmp_path / "styled.mp4.frames"
    args = [sys.executable, "-m", "styleflow", "video", str(clips["mp4"]), str(STYLE), str(out),
            "--weights", "lite", "--height", "64", "--iterations", "3", "--frame-iterations",
            "2"]
    with child(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        _wait_for_frames(proc, work, 2)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "run the same command to resume" in stderr and str(work) in stderr
    kept = _frames_in(work)
    assert len(kept) >= 2 and not out.exists()

    with child(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        _wait_for_frames(proc, work, len(kept) + 1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    killed = _frames_in(work)
    assert len(killed) > len(kept)
    assert {k: killed[k] for k in kept} == kept  # the second run did not redo them

    resumed = call_cli("styleflow", *args[3:], "--keep-frames")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming: {len(killed)} frames done" in resumed.stdout
    finished = _frames_in(work)
    assert {k: finished[k] for k in killed} == killed  # untouched: same inode, same mtime
    assert len(finished) == 8 and streams(out)["frames"] == 8
    assert not list(work.glob(".*.tmp"))  # the killed writer's leftovers were cleared


def test_a_style_or_video_replaced_under_its_name_is_not_resumed(clips, tmp_path):
    """The work folder's record holds what the input and style files hold: another style
    copied over the same name resumed into a video of two halves (the record had names)."""
    import shutil

    from styleflow.cli import video as command
    from styleflow.errors import StyleflowError
    from styleflow.io import video

    style, clip = tmp_path / "style.jpg", tmp_path / "clip.mp4"
    shutil.copy(STYLE, style)
    shutil.copy(clips["mp4"], clip)
    work = tmp_path / "o.gif.frames"
    work.mkdir()
    args = command.parse([str(clip), str(style), str(tmp_path / "o.gif"), *FAST])
    command._claim(work, args, False)
    Image.new("RGB", (8, 8)).save(video.frame_path(work, 0))  # a finished frame
    command._claim(work, args, False)  # the same files: resumed
    for path, other, key in ((style, STYLE.with_name("ref6.jpg"), "style content"),
                             (clip, clips["gif"], "input content")):
        before = path.read_bytes()
        path.write_bytes(other.read_bytes())
        with pytest.raises(StyleflowError, match=f"differs in {key}\\); rerun that command"):
            command._claim(work, args, False)
        path.write_bytes(before)
    command._claim(work, args, False)  # as before: resumed again


def test_a_frame_that_cannot_be_written_keeps_the_others_and_says_how_to_resume(
        clips, tmp_path, monkeypatch, capsys):
    """A full disk mid-run: one line naming the frame as the output's, how many frames are
    kept and that the same command resumes (it said only that the file could not be
    written)."""
    import errno

    from styleflow.cli import video as command
    from styleflow.io import files, video

    real, written = video.write_frame, []

    def filling(folder, index, array):
        if len(written) == 2:
            raise files.os_error("x", "y", OSError(errno.ENOSPC, "No space left on device"))
        written.append(index)
        return real(folder, index, array)

    monkeypatch.setattr(video, "write_frame", filling)
    out = tmp_path / "o.gif"
    code = command.main([str(clips["mp4"]), str(STYLE), str(out), *FAST, "--iterations", "1"])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and not out.exists()
    assert error.startswith("styleflow video: error: output: ") and "No space left" in error
    assert error.endswith(f"2 of 8 frames are kept in {out}.frames: run the same command to "
                          "resume")
    assert len(video.finished_frames(f"{out}.frames")) == 2


def test_a_gif_and_a_folder_of_frames_as_input(clips, tmp_path):
    from styleflow.io.video import read_clip

    folder_out = tmp_path / "from_gif"
    proc = call_cli("styleflow", "video", clips["gif"], STYLE, folder_out, *FAST,
                    "--iterations", "1", "--frame-iterations", "1")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in folder_out.glob("frame_*.png")) == \
        [f"frame_{i:06d}.png" for i in range(1, 7)]
    gif_out = tmp_path / "from_folder.gif"
    proc = call_cli("styleflow", "video", clips["folder"], STYLE, gif_out, *FAST,
                    "--iterations", "1", "--frame-iterations", "1", "--method", "adam")
    assert proc.returncode == 0, proc.stderr
    clip = read_clip(gif_out)
    assert len(clip.frames) == 5 and clip.size == (64, 96)
    assert read_clip(clips["gif"]).fps == 10


def test_bad_input_is_one_line_and_no_output(clips, tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    make_image(mixed / "a1.png", (48, 32))
    make_image(mixed / "a2.png", (40, 32))
    sound = tmp_path / "sound.m4a"
    with av.open(str(sound), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 8000), np.float32), format="fltp",
                                           layout="mono")
        frame.sample_rate, frame.pts = 8000, 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode())
    loop = tmp_path / "loop.mp4"
    os.symlink(loop, loop)
    pipe = tmp_path / "pipe.mp4"
    os.mkfifo(pipe)  # FFmpeg would wait for a writer
    cases = [(text, tmp_path / "o1.mp4", ["not a video"]),
             (empty, tmp_path / "o2.mp4", ["no frame images"]),
             (mixed, tmp_path / "o3.mp4", ["differ in size", "a2.png"]),
             (sound, tmp_path / "o4.mp4", ["no video stream"]),
             (clips["mp4"], tmp_path / "o5.avi", ["cannot write '.avi'"]),
             (loop, tmp_path / "o6.mp4", [str(loop), "symbolic link loop"]),
             (pipe, tmp_path / "o7.mp4", [str(pipe), "not a regular file"]),
             (tmp_path / "none.mp4", tmp_path / "o8.mp4", ["none.mp4", "not found"])]
    for source, out, needles in cases:
        proc = call_cli("styleflow", "video", source, STYLE, out, *FAST)
        assert_clean_error(proc, *needles)
        assert not out.exists() and not Path(f"{out}.frames").exists()


def test_bad_api_values_are_styleflow_errors(clips):
    from styleflow import Stylizer
    from styleflow.errors import StyleflowError

    stylizer = Stylizer(weights="lite")
    frames = clips["frames"][:2]
    cases = [({"iterations": "3"}, "^iterations: must be"),
             ({"height": float("nan")}, "^height: must be a whole number"),
             ({"height": 0}, "^height: must be a whole number greater than zero"),
             ({"width": 2.5}, "^width: must be a whole number"),
             ({"method": "adam", "width": -3}, "^width: must be a whole number"),
             ({"start": "a"}, "^start: must be a whole number zero or more"),
             ({"stop": 1.5}, "^stop: must be a whole number"),
             ({"long_term": "no"}, "^long_term: must be True or False"),
             ({"learning_rate": 5.0}, "^learning_rate: only with method='adam'"),
             ({"finished": lambda index: "x"}, "^finished: frame 1 is not an RGB image"),
             ({"finished": lambda index: np.zeros((64, 96))}, "^finished: frame 1 is not")]
    for options, pattern in cases:
        with pytest.raises(StyleflowError, match=pattern):
            list(stylizer.iter_video(frames, STYLE, **{"iterations": 1, **options}))


def _clip_with_audio(path: Path, codec: str, rate: int = 8000) -> Path:
    """A 5-frame clip in `path` (its container by extension) with a tone in `codec`."""
    frames = pan_frames(5, (32, 32))
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        sound = out.add_stream(codec, rate=rate)
        for i, f in enumerate(frames):
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            picture.pts = i
            out.mux(video.encode(picture))
        out.mux(video.encode())
        samples = (3000 * np.sin(np.arange(rate // 5) * 0.3)).astype(np.int16)[None]
        tone = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        tone.sample_rate, tone.pts = rate, 0
        for piece in av.AudioResampler(format=sound.codec_context.format, layout="mono",
                                       rate=rate).resample(tone):
            out.mux(sound.encode(piece))
        out.mux(sound.encode())
    return path


@pytest.mark.parametrize("source, codec, output", [("pcm.mkv", "pcm_s16le", "out.mp4"),
                                                    ("flac.mkv", "flac", "out.mov"),
                                                    ("pcm.mkv", "pcm_s16le", "kept.mov")])
def test_audio_a_container_refuses_is_re_encoded(source, codec, output, tmp_path):
    """MP4 lists PCM among its codecs and MOV lists FLAC, and their muxers refuse the first
    packet: the audio is re-encoded to AAC instead of ending the video in a traceback."""
    from styleflow.io.video import read_clip, write_video

    clip = read_clip(_clip_with_audio(tmp_path / source, codec))
    out = tmp_path / output
    write_video(out, clip.frames, clip.fps, clip.audio_from)
    got = streams(out)
    assert got["frames"] == 5 and got["audio"] is not None
    # Copied where the container takes it (PCM in MOV), re-encoded where it does not.
    assert got["audio"][0] == (codec if output == "kept.mov" else "aac"), got


def test_a_gif_keeps_time_with_its_input(tmp_path):
    """GIFs count in hundredths of a second: 29.97 fps alternates 30 and 40 ms frames (one
    33 ms step would play 30 ms frames, 11% fast); above 50 fps browsers slow a GIF down."""
    from fractions import Fraction

    from styleflow.io.video import gif_durations, read_clip, write_video

    ntsc = gif_durations(300, Fraction(30000, 1001))
    assert set(ntsc) == {30, 40} and abs(sum(ntsc) - 300 * 1001 / 30) <= 10
    assert gif_durations(4, 60) == [20] * 4 and gif_durations(3, 10) == [100] * 3
    frames = [np.full((8, 8, 3), 8 * i, np.uint8) for i in range(30)]
    write_video(tmp_path / "ntsc.gif", frames, Fraction(30000, 1001))
    assert abs(float(read_clip(tmp_path / "ntsc.gif").fps) - 29.97) < 0.05


def test_the_work_folder_loses_only_what_the_command_wrote(clips, tmp_path):
    out = tmp_path / "styled.mp4"
    work = tmp_path / "styled.mp4.frames"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    frames_in = work / "source"  # the input's frames, inside the work folder
    frames_in.mkdir()
    for i, frame in enumerate(clips["frames"][:3]):
        Image.fromarray(frame).save(frames_in / f"shot{i + 1}.png")
    proc = call_cli("styleflow", "video", frames_in, STYLE, out, *FAST, "--iterations", "1")
    assert proc.returncode == 0, proc.stderr
    assert streams(out)["frames"] == 3
    assert sorted(p.name for p in work.iterdir()) == ["notes.txt", "source"]
    assert len(list(frames_in.iterdir())) == 3


def test_a_run_stopped_before_its_first_frame_leaves_nothing_that_binds(clips, tmp_path):
    out = tmp_path / "styled.mp4"
    work = tmp_path / "styled.mp4.frames"
    proc = call_cli("styleflow", "video", clips["mp4"], STYLE, out, *FAST,
                    "--content-layers", "nosuch")
    assert_clean_error(proc, "nosuch")
    assert not work.exists()
    # A record left by a run killed before its first frame binds nothing either.
    work.mkdir()
    (work / ".styleflow-video.json").write_text('{"iterations": 99}')
    proc = call_cli("styleflow", "video", clips["mp4"], STYLE, out, *FAST, "--iterations", "1",
                    "--frame-iterations", "1")
    assert proc.returncode == 0, proc.stderr
    assert streams(out)["frames"] == 8 and not work.exists()


def test_a_failed_run_leaves_a_users_segment_folder_alone(clips, tmp_path):
    out = tmp_path / "frames_out"  # a folder output: the work folder is the user's folder
    mine = out / "segment_0001"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    proc = call_cli("styleflow", "video", clips["mp4"], STYLE, out, *FAST,
                    "--content-layers", "nosuch")
    assert_clean_error(proc, "nosuch")
    assert (mine / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == ["segment_0001"]  # no record left


def test_a_folder_of_frames_with_a_frame_it_cannot_read_is_refused(clips, tmp_path):
    folder = tmp_path / "shots"
    folder.mkdir()
    Image.fromarray(clips["frames"][0]).save(folder / "shot1.png")
    os.symlink(tmp_path / "gone.png", folder / "shot2.png")
    proc = call_cli("styleflow", "video", folder, STYLE, tmp_path / "o.mp4", *FAST)
    assert_clean_error(proc, "shot2.png", "broken symbolic link")
    (folder / "shot2.png").unlink()
    os.symlink(folder / "shot3.png", folder / "shot3.png")
    proc = call_cli("styleflow", "video", folder, STYLE, tmp_path / "o.mp4", *FAST)
    assert_clean_error(proc, "shot3.png", "symbolic link loop")
    (folder / "shot3.png").unlink()
    os.mkfifo(folder / "shot4.png")
    proc = call_cli("styleflow", "video", folder, STYLE, tmp_path / "o.mp4", *FAST)
    assert_clean_error(proc, "shot4.png", "not a regular file")
    assert not (tmp_path / "o.mp4").exists()


def test_the_work_folders_own_troubles_are_one_line(clips, tmp_path):
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    long = tmp_path / ("a" * (limit - 4) + ".mp4")  # a legal name, its ".frames" too long
    proc = call_cli("styleflow", "video", clips["mp4"], STYLE, long, *FAST)
    assert_clean_error(proc, "name too long for its work folder", f"at most {limit - 7} bytes")
    loop = tmp_path / "loop.mp4"
    os.symlink(tmp_path / "loop.mp4.frames", tmp_path / "loop.mp4.frames")
    proc = call_cli("styleflow", "video", clips["mp4"], STYLE, loop, *FAST)
    assert_clean_error(proc, "loop.mp4.frames", "symbolic link loop")
    folder = tmp_path / "in.mp4.frames"
    folder.mkdir()
    Image.fromarray(clips["frames"][0]).save(folder / "shot1.png")
    proc = call_cli("styleflow", "video", folder, STYLE, tmp_path / "in.mp4", *FAST)
    assert_clean_error(proc, "its work folder", "is the input folder")
    proc = call_cli("styleflow", "video", clips["mp4"], STYLE, "/dev/null/frames", *FAST)
    assert_clean_error(proc, "'/dev/null/frames'", "not a folder")
    assert "/x'" not in proc.stderr


# -- a simulated two-node Ray cluster -------------------------------------------------------


@pytest.fixture(scope="module")
def two_nodes():
    """Two Ray nodes on this machine (ray.cluster_utils.Cluster), one CPU each, reached by
    address like a real cluster; shut down however the tests end."""
    from ray.cluster_utils import Cluster

    # The cluster also records its address in Ray's default folder (/tmp/ray unless
    # RAY_TMPDIR says otherwise), which need not exist: the suite's own folder instead.
    previous = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = str(Path(SESSION_TMP) / "ray-default")
    os.makedirs(os.path.join(os.environ["RAY_TMPDIR"], "ray"), exist_ok=True)
    cluster = None
    try:
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "include_dashboard": False,
            "temp_dir": str(Path(SESSION_TMP) / "ray-cluster")})
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield cluster.address
    finally:
        if cluster is not None:
            cluster.shutdown()
        if previous is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = previous


@pytest.mark.slow
def test_ray_segments_on_two_nodes_give_every_frame_in_order(clips, two_nodes, tmp_path):
    from styleflow.io.video import read_clip
    from styleflow.objective.flow import warping_error

    common = ["--weights", "lite", "--height", "64", "--iterations", "2",
              "--frame-iterations", "1", "--seed", "1"]
    ray_out = tmp_path / "ray"
    proc = call_cli("styleflow", "video", clips["mp4"], STYLE, ray_out, *common, "--engine",
                    "ray", "--workers", "2", "--address", two_nodes, "--segment-length", "4",
                    "--overlap", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "8 frames in 2 segments" in proc.stdout
    assert proc.stdout.count(": done, ") == 2
    local_out = tmp_path / "local"
    proc = call_cli("styleflow", "video", clips["mp4"], STYLE, local_out, *common, "--quiet")
    assert proc.returncode == 0, proc.stderr
    ray_frames = read_clip(ray_out).frames
    local_frames = read_clip(local_out).frames
    assert len(ray_frames) == len(local_frames) == 8
    # In order: each Ray frame is nearest to the same frame of the sequential run.
    for i, frame in enumerate(ray_frames):
        distances = [np.mean((frame.astype(float) - f) ** 2) for f in local_frames]
        assert int(np.argmin(distances)) == i
    inputs = [np.asarray(Image.fromarray(f).resize((96, 64))) for f in read_clip(
        clips["mp4"]).frames]
    seams, sequential = warping_error(ray_frames, inputs), warping_error(local_frames, inputs)
    print(f"warping error: Ray segments {seams:.5f}, one sequential run {sequential:.5f}, "
          f"seams cost {seams / sequential:.2f}x")
    assert np.isfinite(seams) and seams > 0


@pytest.mark.slow
def test_batch_runs_on_a_two_node_cluster(two_nodes, tmp_path):
    from styleflow.batch.status import read_status

    contents = tmp_path / "c"
    contents.mkdir()
    for i in range(2):
        make_image(contents / f"c{i}.png", (48, 32), i)
    out = tmp_path / "out"
    proc = call_cli("styleflow", "batch", "--contents", contents, "--styles", STYLE, "--out",
                    out, "--weights", "random", "--iter", "1", "--height", "24", "--engine",
                    "ray", "--workers", "2", "--address", two_nodes)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in out.glob("*.png")) == ["c0_ref7.png", "c1_ref7.png"]
    records = read_status(out / "styleflow-status.jsonl")
    assert sorted(r["status"] for r in records) == ["done", "done"]
