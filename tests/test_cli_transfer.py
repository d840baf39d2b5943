"""neural_style_transfer.py run as a user runs it: files, sizes, loss, weights, interruption."""

import contextlib
import re
import signal
from pathlib import Path
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from conftest import LITE_H5, ROOT, assert_clean_error, call_cli, child, make_image

SCRIPT = "neural_style_transfer.py"


def losses(stdout):
    return [float(v) for v in re.findall(r"iteration \d+/\d+: loss (\S+)", stdout)]


@pytest.mark.slow
def test_random_weights_two_iterations(tiny, tmp_path):
    base, style = tiny
    prefix = tmp_path / "out" / "deep" / "result"
    proc = call_cli(SCRIPT, base, style, prefix, "--weights", "random", "--iter", "2",
                   "--height", "32")
    assert proc.returncode == 0, proc.stderr
    for i in (0, 1):
        with Image.open(f"{prefix}_at_iteration_{i:02d}.png") as img:
            assert img.size == (48, 32)
    assert not (tmp_path / "out" / "deep" / "result_at_iteration_02.png").exists()
    values = losses(proc.stdout)
    assert len(values) == 2 and values[1] < values[0], proc.stdout
    assert proc.stderr == ""


@pytest.mark.slow
def test_faithful_schedule_and_width(tiny, tmp_path):
    base, style = tiny
    proc = call_cli(SCRIPT, base, style, tmp_path / "r", "--weights", "random", "--iter", "2",
                    "--width", "36", "--faithful", "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    with Image.open(tmp_path / "r_at_iteration_01.png") as img:
        assert img.size == (36, 24)  # aspect of the 48x32 base
    values = losses(proc.stdout)
    assert values[1] < values[0]
    # The original schedule: two fresh fmin_l_bfgs_b(maxfun=20) runs, unbounded, from the base.
    from scipy.optimize import fmin_l_bfgs_b

    from styleflow import Stylizer
    from styleflow.optim.lbfgs import Evaluator

    run = Stylizer("random", seed=1).iter_transfer(base, style, iterations=2, width=36)
    evaluator = Evaluator(run.problem.objective)
    x = run.problem.start.astype(np.float64).ravel()
    for _ in range(2):
        x, value, _ = fmin_l_bfgs_b(evaluator, x, maxfun=20)
    assert values[1] == pytest.approx(value, rel=1e-4)
    # ... and it differs from the default continuous, bounded schedule.
    continuous = call_cli(SCRIPT, base, style, tmp_path / "c", "--weights", "random", "--iter",
                          "2", "--width", "36", "--seed", "1")
    assert losses(continuous.stdout)[1] != pytest.approx(values[1], rel=1e-4)


@pytest.mark.slow
def test_default_height_is_200(tiny, tmp_path):
    base, style = tiny
    proc = call_cli(SCRIPT, base, style, tmp_path / "r", "--weights", "random", "--iter", "1",
                   "--style_layers", "block1_conv1", "--content_layer", "block1_conv2")
    assert proc.returncode == 0, proc.stderr
    with Image.open(tmp_path / "r_at_iteration_00.png") as img:
        assert img.size == (300, 200)


@pytest.mark.parametrize("weights", ["lite", str(LITE_H5)])
def test_lite_weights_run(tiny, tmp_path, weights):
    base, style = tiny
    proc = call_cli(SCRIPT, base, style, tmp_path / "r", "--weights", weights, "--iter", "1",
                   "--height", "32")
    assert proc.returncode == 0, proc.stderr
    assert "content block3_conv2" in proc.stdout  # block 1-3 files get block 1-3 defaults
    assert (tmp_path / "r_at_iteration_00.png").exists()


def test_layer_missing_from_weights_file(tiny, tmp_path):
    base, style = tiny
    proc = call_cli(SCRIPT, base, style, tmp_path / "r", "--weights", LITE_H5, "--iter", "1",
                   "--height", "32", "--content_layer", "block4_conv2")
    assert_clean_error(proc, "block4_conv1")
    assert not list(tmp_path.glob("r_*"))


def test_imagenet_offline_fails_clearly(tiny, tmp_path):
    base, style = tiny
    proc = call_cli(SCRIPT, base, style, tmp_path / "r", "--weights", "imagenet", "--iter", "1")
    assert_clean_error(proc, "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5", "--weights")
    # The system's reason whole, after the host it could not reach (the suite's mirror).
    assert "(127.0.0.1: [Errno 111] Connection refused)" in proc.stderr, proc.stderr


def test_auto_offline_falls_back_to_lite(tiny, tmp_path):
    base, style = tiny
    proc = call_cli(SCRIPT, base, style, tmp_path / "r", "--iter", "1", "--height", "32")
    assert proc.returncode == 0, proc.stderr
    assert "lite" in proc.stderr and "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5" in proc.stderr
    assert "content block3_conv2" in proc.stdout


@pytest.mark.slow
def test_interrupt_keeps_latest_result(tmp_path):
    """Ctrl-C writes the lowest-loss image so far, for a file prefix and a folder prefix
    ('out/' names files inside out/, as the iteration images). Both run at once."""
    base = make_image(tmp_path / "b.png", (48, 32), 1)
    style = make_image(tmp_path / "s.png", (48, 32), 2)
    prefixes = [str(tmp_path / "r"), str(tmp_path / "out") + "/"]
    with contextlib.ExitStack() as stack:
        procs = [stack.enter_context(child(
            [sys.executable, str(ROOT / SCRIPT), str(base), str(style), prefix, "--weights",
             "random", "--iter", "1000", "--height", "32", "--jit", "off"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)) for prefix in prefixes]
        for proc, prefix in zip(procs, prefixes):
            # The second iteration's image: the first one's line is printed by then (an image
            # is written just before its line, so a Ctrl-C between the two leaves no line).
            second = Path(f"{prefix}_at_iteration_01.png")
            deadline = time.time() + 120
            while not second.exists() and time.time() < deadline and proc.poll() is None:
                time.sleep(0.2)
            assert second.exists(), "no two iterations finished"
            proc.send_signal(signal.SIGINT)
        outputs = [proc.communicate(timeout=60) for proc in procs]
    for proc, prefix, (out, err) in zip(procs, prefixes, outputs):
        assert proc.returncode == 130, err
        assert "Traceback" not in err
        interrupted = Path(f"{prefix}_interrupted.png")
        with Image.open(interrupted) as img:
            assert img.size == (48, 32)
        assert str(interrupted) in err
        # The image kept is the best so far: no printed iteration did better.
        kept = float(re.search(r"best image so far \(loss (\S+)\)", err).group(1))
        assert kept <= min(losses(out))


def test_iteration_images_are_named_as_needed_and_found_where_they_are_an_input(tmp_path):
    """A billion iterations are not listed before the run; the images that would replace an
    input are still found: by the input's name, or by a link in the output folder."""
    from styleflow import StyleflowError
    from styleflow.cli.common import NumberedOutputs
    from styleflow.cli.style import checkpoint_name
    from styleflow.cli.transfer import output_name
    from styleflow.io import files

    def name(i):
        return output_name(str(tmp_path / "p"), i)

    images = NumberedOutputs(name, range(10**9))
    assert len(images) == 10**9 and images[-1] == name(10**9 - 1)
    content = make_image(tmp_path / "p_at_iteration_07.png")  # an input with such a name
    elsewhere = make_image(tmp_path / "c.png")
    (tmp_path / "p_at_iteration_12.png").symlink_to(elsewhere)  # a link where one goes
    (tmp_path / "p_at_iteration_7.png").write_bytes(b"")  # not a name the run writes
    assert images.among([content, elsewhere, None]) == [name(7), name(12)]
    assert NumberedOutputs(name, range(7)).among([content]) == []  # 0..6 only
    with pytest.raises(StyleflowError, match="is the input file"):
        files.refuse_overwriting_inputs(images.among([elsewhere]), [elsewhere])
    # neural_style.py's checkpoints: every 3rd of a billion steps, %s the step.
    steps = NumberedOutputs(lambda i: checkpoint_name(str(tmp_path / "ck%s.png"), i),
                            range(3, 10**9 + 1, 3))
    (tmp_path / "ck9.png").symlink_to(content)
    assert steps.among([content, tmp_path / "ck10.png"]) == [tmp_path / "ck9.png"]
    fixed = NumberedOutputs(lambda i: checkpoint_name(str(tmp_path / "c.png"), i), range(5, 9))
    assert fixed.among([elsewhere]) == [tmp_path / "c.png"]  # no %s: one file for all


@pytest.mark.parametrize("command", ["transfer", "style", "neural_style_transfer.py"])
def test_an_interrupted_styleflow_run_says_how_to_go_on(tiny, tmp_path, monkeypatch, capsys,
                                                        command):
    """`styleflow transfer|style` say which option continues from the kept image; the classic
    scripts keep their original lines."""
    from styleflow.cli import common as cc
    from styleflow.cli import main, transfer

    made = cc.recorder_for

    def recorder_for(*args, **kwargs):
        recorder = made(*args, **kwargs)
        finished = recorder.iteration

        def iteration(number, *rest, **options):
            finished(number, *rest, **options)
            raise KeyboardInterrupt  # after the first iteration's image
        recorder.iteration = iteration
        return recorder

    monkeypatch.setattr(cc, "recorder_for", recorder_for)
    base, style = tiny
    out = tmp_path / "p.png"
    argv = {"transfer": ["transfer", str(base), str(style), str(tmp_path / "p"), "--iter", "2"],
            "style": ["style", "--content", str(base), "--styles", str(style), "--output",
                      str(out), "--iterations", "2"],
            "neural_style_transfer.py": [str(base), str(style), str(tmp_path / "p"), "--iter",
                                         "2"]}[command]
    # An interrupted command leaves SIGINT and SIGTERM at SIG_DFL for the exit: not pytest's.
    kept_handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        run = transfer.main if command.endswith(".py") else main.main
        code = run([*argv, *(["--network", "random", "--width", "24"] if command == "style"
                             else ["--weights", "random", "--height", "24"])])
    finally:
        for signum, handler in kept_handlers.items():
            signal.signal(signum, handler)
    err = capsys.readouterr().err
    kept = tmp_path / "p_interrupted.png"
    assert code == 130 and kept.exists(), err
    hint = {"transfer": f"with --init {kept}", "style": f"with --initial {kept}"}.get(command)
    if hint:
        assert f"styleflow {command}: to go on from it, run the same command {hint}" in err, err
    else:
        assert "to go on" not in err and re.fullmatch(
            r"neural_style_transfer\.py: interrupted; best image so far \(loss \S+\) "
            rf"written to {re.escape(str(kept))}", err.strip().splitlines()[-1])
