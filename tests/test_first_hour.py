"""What a new user trips over in the first hour: options misspelled or spelled the other way,
bad inputs found only after TensorFlow loaded, arrays of other kinds, API keywords from the
command line, a noisy import, a result that prints its arrays."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, call_cli, cli_env, make_image
from styleflow import Stylizer, StyleflowError
from styleflow.io.images import as_rgb, load_image

TRANSFER = "neural_style_transfer.py"
STYLE = "neural_style.py"


@pytest.mark.parametrize("script, wrong, meant", [
    (TRANSFER, "--iters", "--iter"), (TRANSFER, "--heigth", "--height"),
    (STYLE, "--iteratons", "--iterations"), (STYLE, "--style-weigth", "--style-weight")])
def test_a_misspelled_option_gets_a_suggestion(tiny, tmp_path, script, wrong, meant):
    base, ref = tiny
    args = ([base, ref, tmp_path / "p"] if script == TRANSFER else
            ["--content", base, "--styles", ref, "--output", tmp_path / "o.png"])
    proc = call_cli(script, *args, wrong, "5")
    assert proc.returncode == 2
    assert proc.stderr == (f"{script}: error: unrecognized arguments: {wrong} 5 (did you mean "
                           f"{meant}?) (see --help)\n")


def test_both_spellings_work_everywhere_and_help_shows_one(tiny, tmp_path):
    base, ref = tiny
    proc = call_cli(TRANSFER, base, ref, tmp_path / "p", "--iter", "1", "--weights", "random",
                    "--height", "16", "--content-weight", "0.5", "--max_memory", "8", "--quiet")
    assert proc.returncode == 0, proc.stderr
    proc = call_cli(STYLE, "--content", base, "--styles", ref, "--output", tmp_path / "o.png",
                    "--iterations", "1", "--network", "random", "--width", "24",
                    "--content_weight", "2", "--style_layer_weight_exp=1.5", "--quiet")
    assert proc.returncode == 0, proc.stderr
    transfer_help = call_cli(TRANSFER, "--help").stdout
    style_help = call_cli(STYLE, "--help").stdout
    assert "--content_weight" in transfer_help and "--content-weight" not in transfer_help
    assert "--content-weight" in style_help and "--content_weight" not in style_help


def _without_tensorflow(script_module: str, argv: list) -> subprocess.CompletedProcess:
    """Run a command line's main(argv) in a fresh process and report whether it imported
    TensorFlow (exit status 3 if it did)."""
    code = (f"import sys; from {script_module} import main; code = main({argv!r}); "
            "sys.exit(3 if 'tensorflow' in sys.modules else code)")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env=cli_env(), timeout=120, stdin=subprocess.DEVNULL)


def test_bad_inputs_are_one_line_before_tensorflow_loads(tiny, tmp_path):
    base, ref = tiny
    missing = str(tmp_path / "missing.png")
    cases = [
        ("styleflow.cli.transfer", [missing, str(ref), str(tmp_path / "p")],
         f"{TRANSFER}: error: base image '{missing}': file not found"),
        ("styleflow.cli.transfer", [str(base), str(ref), str(tmp_path / "p"), "--init", missing],
         f"{TRANSFER}: error: initial image '{missing}': file not found"),
        ("styleflow.cli.transfer", [str(base), str(ref), str(tmp_path / "p"), "--weights",
                                    "none.h5"],
         f"{TRANSFER}: error: weights 'none.h5': no such file; use a path or one of auto, "
         "imagenet, lite, random"),
        ("styleflow.cli.style", ["--content", str(base), "--styles", str(ref), missing,
                                 "--output", str(tmp_path / "o.png")],
         f"{STYLE}: error: style image 2 '{missing}': file not found"),
    ]
    for module, argv, line in cases:
        proc = _without_tensorflow(module, argv)
        assert (proc.returncode, proc.stderr) == (1, line + "\n"), (argv, proc.stderr)


def test_a_misspelled_batch_folder_is_refused_up_front(tiny, tmp_path):
    base, ref = tiny
    out = tmp_path / "out"
    proc = call_cli("styleflow", "batch", "--contents", tmp_path / "photo/", "--styles", ref,
                    "--out", out, "--weights", "random")
    assert proc.returncode == 1
    assert proc.stderr == (f"styleflow batch: error: --contents: '{tmp_path / 'photo/'}' does "
                           "not exist\n")
    assert not out.exists()  # no pair ran, no status log


def test_api_keywords_from_the_command_line_get_a_styleflow_error(tiny):
    base, ref = tiny
    stylizer = Stylizer("random")
    with pytest.raises(StyleflowError, match=r"^transfer: no option 'iter'; did you mean "
                                             r"'iterations'\?$"):
        stylizer.transfer(base, ref, iter=1)
    with pytest.raises(StyleflowError, match=r"^iter_stylize: no option 'network'; that is "
                                             r"the Stylizer's: Stylizer\(weights=\.\.\.\)$"):
        stylizer.iter_stylize(base, ref, network="lite")
    with pytest.raises(StyleflowError, match=r"^iter_transfer: no option 'colour'; the "
                                             r"options are iterations, "):
        stylizer.iter_transfer(base, ref, colour=1)
    for value in (float("nan"), float("inf"), "5", 3.0, 1e30, np.float64(2), 0, -1, True,
                  np.int64(0)):
        for method, styles in ((stylizer.transfer, ref), (stylizer.iter_stylize, [ref]),
                               (stylizer.iter_photo, ref)):
            with pytest.raises(StyleflowError, match="^iterations: must be"):
                method(base, styles, iterations=value)
    # NumPy's integers are integers: counted as Python's.
    run = stylizer.iter_stylize(base, [ref], iterations=np.int64(2), scales=np.int32(1),
                                width=24)
    assert [it.iteration for it in run] == [1, 2] and run.total == 2
    # Sizes as the command lines take them: whole numbers from 1 (0 is not "the default").
    for value in (float("nan"), "32", 2.5, 0, -5, True):
        for method, options in ((stylizer.iter_transfer, {"height": value}),
                                (stylizer.iter_transfer, {"width": value}),
                                (stylizer.iter_stylize, {"width": value}),
                                (stylizer.iter_photo, {"height": value})):
            name = next(iter(options))
            with pytest.raises(StyleflowError, match=f"^{name}: must be a whole number"):
                method(base, ref, iterations=1, **options)
    # Adam's betas below 1 (it divides by 1 - beta ** step): 1 ran to a NaN loss, exit 0.
    for name, value in (("beta1", 1.0), ("beta2", 1), ("beta1", -0.1), ("beta2", float("nan"))):
        with pytest.raises(StyleflowError, match=f"^{name}: must be at least 0 and below 1"):
            stylizer.iter_stylize(base, [ref], iterations=1, **{name: value})
    # photo and video scale to one side, as their --width | --height: both given stretched
    # a photo (photo) or dropped the height (video with Adam).
    for method in (stylizer.iter_photo, stylizer.iter_video):
        with pytest.raises(StyleflowError, match="^width 64, height 48: give one side or "):
            method(base if method is stylizer.iter_photo else [np.zeros((32, 32, 3))] * 2,
                   ref, iterations=1, width=64, height=48)
    # Adam's epsilon above zero, as --epsilon takes it (the API took any value).
    for value in (0, -1e-8, float("nan")):
        with pytest.raises(StyleflowError, match="^epsilon: must be a finite number above zero"):
            stylizer.iter_stylize(base, [ref], iterations=1, epsilon=value)
    # Numbers past float32's largest are infinite in the engine: a learning rate of 1e308 ran
    # to a NaN loss. The largest float32 itself is a number, and taken.
    for method, name in ((stylizer.iter_stylize, "learning_rate"),
                         (stylizer.iter_stylize, "epsilon"), (stylizer.iter_transfer, "tv_weight"),
                         (stylizer.iter_photo, "photorealism")):
        with pytest.raises(StyleflowError, match=f"^{name}: 1e\\+39 is too large .*float32"):
            method(base, ref if method is not stylizer.iter_stylize else [ref], iterations=1,
                   **{name: 1e39})
    assert stylizer.iter_transfer(base, ref, iterations=1, height=16,
                                  style_weight=float(np.finfo(np.float32).max)).total > 0


def test_a_picture_is_never_saved_over_an_input_of_its_run(tiny, tmp_path):
    """Result.save and Iteration.save refuse the run's input files, as the command lines do
    (the API replaced them without a word)."""
    base, ref = tiny
    before = {path: path.read_bytes() for path in (base, ref)}
    stylizer = Stylizer("random")
    run = stylizer.iter_transfer(str(base), ref, iterations=1, height=16)
    first = next(iter(run))
    for picture in (first, run.result()):
        for path in (base, str(ref), tmp_path / ".." / tmp_path.name / base.name):
            with pytest.raises(StyleflowError, match="is the input file"):
                picture.save(path)
    run = stylizer.iter_stylize(base, [ref], iterations=1, width=24, initial=ref)
    result = [*run] and run.result()
    with pytest.raises(StyleflowError, match="is the input file"):
        result.save(ref)
    result.save(tmp_path / "out.png")  # another name is written
    assert {path: path.read_bytes() for path in (base, ref)} == before
    # Arrays are no files: nothing to refuse.
    stylizer.transfer(np.zeros((16, 16, 3), np.uint8), ref, iterations=1).save(
        tmp_path / "from-array.png")


def test_results_and_iterations_print_in_one_short_line(tiny):
    base, ref = tiny
    run = Stylizer("random").iter_transfer(base, ref, iterations=2, height=16)
    first = next(iter(run))
    assert repr(first) == f"Iteration(1/2, {first.evaluations} evaluations, {first.seconds:.2f} s)"
    result = run.result()
    text = repr(result)
    assert text.startswith("Result(24x16 px, loss ") and "interrupted" in text
    assert "\n" not in text and len(text) < 100


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "I;16"])
def test_arrays_of_other_kinds_are_converted_as_files_are(tmp_path, mode):
    """An array of the kind a file holds gives the picture the file gives."""
    path = make_image(tmp_path / "i.png", (40, 30), 3)
    rgb = np.asarray(Image.open(path).convert("RGB"))
    if mode == "I;16":
        array = (rgb[:, :, 0].astype(np.uint16) * 257)
        Image.fromarray(array).save(tmp_path / "f.png")
    else:
        img = Image.open(path).convert(mode)
        if "A" in mode:
            alpha = np.linspace(0, 255, 40 * 30).reshape(30, 40).astype(np.uint8)
            img.putalpha(Image.fromarray(alpha))
        img.save(tmp_path / "f.png")
        array = np.asarray(img)
        if mode == "LA":
            array = np.stack([array[:, :, 0]] * 3 + [array[:, :, 1]], axis=2)  # grey as RGBA
    from_file = load_image(tmp_path / "f.png")
    assert np.abs(as_rgb(array).astype(int) - from_file.astype(int)).max() <= 1


def test_float_and_bool_arrays(tmp_path):
    gray = np.linspace(0, 1, 12 * 10).reshape(10, 12)
    assert np.array_equal(as_rgb(gray)[:, :, 1], np.rint(gray * 255).astype(np.uint8))
    assert np.array_equal(as_rgb(gray * 255.0), as_rgb(gray))  # 0..255 floats too
    assert as_rgb(np.ones((10, 12), bool)).min() == 255
    with pytest.raises(StyleflowError, match="NaN"):
        as_rgb(np.full((10, 12, 3), np.nan))
    with pytest.raises(StyleflowError, match="not 10x12x2"):
        as_rgb(np.zeros((10, 12, 2)))


def test_the_api_keeps_tensorflow_s_start_up_log_off_the_terminal(tmp_path):
    """Without TF_CPP_MIN_LOG_LEVEL set, importing styleflow and running prints nothing."""
    code = ("import numpy as np, styleflow\n"
            "a = np.random.default_rng(0).integers(0, 256, (32, 48, 3)).astype(np.uint8)\n"
            "print(styleflow.transfer(a, a, weights='random', iterations=1, height=16))\n")
    env = cli_env()
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=180, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.startswith("Result(24x16 px")
    assert os.environ.get("TF_CPP_MIN_LOG_LEVEL") != "0"  # the parent's setting is untouched


def test_off_a_terminal_a_progress_line_at_least_every_ten_seconds():
    import io

    from styleflow.cli.recorder import LINES, RunRecorder
    from styleflow.objective.terms import Parts

    now = [0.0]
    out = io.StringIO()
    recorder = RunRecorder(1000, "steps", stream=out, mode=LINES, clock=lambda: now[0])
    for step in range(1, 301):
        now[0] = step * 0.1  # 10 steps a second: 30 s in all
        recorder.step(step, 2.0)
        if step == 150:
            recorder.iteration(150, Parts(2.0, 1.0, 0.5, 0.5), 0.1, 150, text="iteration 150")
    lines = out.getvalue().splitlines()
    assert lines == ["progress: 100/1000 steps, loss 2.0000e+00, 0:10 elapsed, about 1:30 left",
                     "iteration 150",
                     "progress: 250/1000 steps, loss 2.0000e+00, 0:25 elapsed, about 1:15 left"]
    quiet = io.StringIO()
    silent = RunRecorder(1000, "steps", stream=quiet, quiet=True, clock=lambda: now[0])
    now[0] = 100.0
    silent.step(5)
    assert quiet.getvalue() == ""


def test_lbfgs_says_why_it_stopped_early(tiny, tmp_path):
    """Content loss alone, starting from the content: the gradient is zero at the start, so
    L-BFGS converges at once; the run says so, and the later iterations repeat its image."""
    base, ref = tiny
    run = Stylizer("random").iter_transfer(base, ref, iterations=3, height=16, style_weight=0,
                                           tv_weight=0)
    images = [it.array for it in run]
    assert run.stopped == (0, "converged (the gradient is within tolerance)")
    assert run.stage_stops == [(1, 0, 3, "converged (the gradient is within tolerance)")]
    assert all(np.array_equal(images[0], image) for image in images)
    proc = call_cli(TRANSFER, base, ref, tmp_path / "p", "--iter", "3", "--weights", "random",
                    "--height", "16", "--style_weight", "0", "--tv_weight", "0")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == (
        "L-BFGS stopped after 0 iterations: converged (the gradient is within tolerance); the "
        "later iterations repeat its last image")
    ongoing = Stylizer("random").iter_transfer(base, ref, iterations=2, height=16)
    list(ongoing)
    assert ongoing.stopped is None  # spent its evaluations: nothing to say


def test_batch_status_tells_runs_apart_and_options_that_changed(tiny, tmp_path):
    import re as regex

    from styleflow.batch.status import read_status

    base, ref = tiny
    out = tmp_path / "out"
    common = ["--contents", base, "--styles", ref, "--out", out, "--weights", "random",
              "--height", "16"]
    first = call_cli("styleflow", "batch", *common, "--iter", "1")
    assert first.returncode == 0, first.stderr
    again = call_cli("styleflow", "batch", *common, "--iter", "1")
    other = call_cli("styleflow", "batch", *common, "--iter", "2")
    assert "(output exists)" in again.stdout  # the same options: nothing to say
    assert ("(output exists; made with other options (iterations 1, now 2); --overwrite "
            "redoes it)") in other.stdout
    records = read_status(out / "styleflow-status.jsonl")
    assert [r["status"] for r in records] == ["done", "skipped", "skipped"]
    assert len({r["run"] for r in records}) == 3
    assert all(regex.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r["time"]) for r in records)
    assert records[0]["options"]["iterations"] == 1 and records[0]["options"]["weights"] == \
        "random"
    assert records[2]["note"].startswith("made with other options")


def test_an_output_without_an_extension_is_told_so(tiny, tmp_path):
    base, ref = tiny
    proc = call_cli(STYLE, "--content", base, "--styles", ref, "--output", tmp_path / "result",
                    "--network", "random")
    assert proc.returncode == 1
    assert proc.stderr == (f"{STYLE}: error: --output '{tmp_path / 'result'}': the name has no "
                           "extension to tell the format; end it in one of .png, .jpg, .jpeg, "
                           ".jpe, .bmp, .tif, .tiff, .webp, .ppm, .pnm, .tga\n")
    proc = call_cli(STYLE, "--content", base, "--styles", ref, "--output", tmp_path / "r.png",
                    "--network", "random", "--plot", tmp_path / "loss")
    assert proc.stderr.endswith("cannot draw plots to a name without an extension; use one of "
                                ".jpeg, .jpg, .pdf, .png, .svg, .tif, .tiff, .webp\n")


def test_a_stylizer_reads_its_weights_when_made_and_builds_the_network_on_first_use(tiny,
                                                                                     tmp_path):
    """As its docstring says: a bad weights file fails at Stylizer(...), and no network is
    built until a run needs one."""
    bad = tmp_path / "broken.h5"
    bad.write_bytes(b"not HDF5")
    with pytest.raises(StyleflowError, match="not a readable HDF5"):
        Stylizer(str(bad))
    stylizer = Stylizer("random")
    assert stylizer.builds == 0
    base, ref = tiny
    stylizer.iter_transfer(base, ref, iterations=1, height=16)
    assert stylizer.builds == 1
