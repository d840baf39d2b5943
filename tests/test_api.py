"""The library's front door: Stylizer, its runs and results, used as a Python caller would."""

import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image

import styleflow
from conftest import ROOT, call_cli, cli_env, make_image
from styleflow import Stylizer, StyleflowError

LAYERS = dict(content_layer="block2_conv2", style_layers=["block1_conv1", "block2_conv1"])


@pytest.fixture(scope="module")
def stylizer():
    return Stylizer("random", seed=3)


@pytest.fixture
def pictures(tmp_path):
    return (make_image(tmp_path / "c.png", (48, 32), 1), make_image(tmp_path / "s.png", (40, 40), 2),
            make_image(tmp_path / "c2.png", (48, 32), 5))


@pytest.mark.slow
def test_transfer_and_stylize_give_the_requested_size(stylizer, pictures):
    content, style, _ = pictures
    result = stylizer.transfer(content, style, iterations=1, height=24, **LAYERS)
    assert result.image.size == (36, 24) and result.array.dtype == np.uint8
    assert len(result.losses) == 1 and result.losses[0].evaluations == 20
    assert not result.interrupted
    styled = stylizer.stylize(content, [style], iterations=3, width=40,
                              content_layers=["block2_conv2"], style_layers=["block1_conv1"])
    assert styled.image.size == (40, 27)
    assert [r.iteration for r in styled.losses] == [1, 2, 3]
    # The result is the lowest-loss image; its parts are that image's.
    assert styled.parts.total <= min(r.total for r in styled.losses)


@pytest.mark.parametrize("method", ["transfer", "stylize"])
def test_iterator_yields_every_iteration_with_falling_best_loss(stylizer, pictures, method):
    content, style, _ = pictures
    if method == "transfer":
        run = stylizer.iter_transfer(content, style, iterations=4, height=32, **LAYERS)
    else:
        run = stylizer.iter_stylize(content, style, iterations=12,
                                    content_layers=["block2_conv2"],
                                    style_layers=["block1_conv1", "block2_conv1"])
    seen = list(run)
    assert [it.iteration for it in seen] == list(range(1, run.iterations + 1))
    best = [it.best_loss for it in seen]  # read after the run: each keeps its own
    assert all(b <= a for a, b in zip(best, best[1:])) and best[0] > best[-1]
    assert all(it.best_loss <= it.parts.total * (1 + 1e-6) for it in seen)
    assert best[-1] < seen[0].parts.total  # it really optimised
    assert seen[-1].image.size == (48, 32)
    result = run.result()
    assert [r.total for r in result.losses] == pytest.approx([it.parts.total for it in seen])
    if method == "transfer":  # the last iterate, as the CLI's last file
        np.testing.assert_array_equal(result.array, seen[-1].array)


def test_path_pil_image_and_array_give_the_same_result(stylizer, pictures):
    content, style, _ = pictures
    results = []
    for convert in (str, Image.open, lambda p: np.asarray(Image.open(p).convert("RGB"))):
        results.append(stylizer.transfer(convert(content), convert(style), iterations=1,
                                         height=32, **LAYERS).array)
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])


@pytest.mark.slow
def test_a_second_pair_of_the_same_size_reuses_network_and_trace(pictures):
    content, style, other = pictures
    stylizer = Stylizer("random")
    stylizer.transfer(content, style, iterations=1, height=32, **LAYERS)
    assert (stylizer.builds, stylizer.traces) == (1, 1)
    stylizer.transfer(other, content, iterations=1, height=32, **LAYERS)
    assert (stylizer.builds, stylizer.traces) == (1, 1)
    # Adam: its step and the final check each trace once; a second pair adds nothing.
    kw = dict(iterations=2, content_layers=["block2_conv2"], style_layers=["block1_conv1"])
    stylizer.stylize(content, style, **kw)
    after_first = stylizer.traces
    stylizer.stylize(other, [style, content], **kw)
    assert stylizer.traces == after_first and stylizer.builds == 2
    # Another size traces again (once).
    stylizer.transfer(content, style, iterations=1, height=24, **LAYERS)
    assert stylizer.traces == after_first + 1


@pytest.mark.slow
def test_cli_files_equal_the_api_result_saved_the_same_way(pictures, tmp_path):
    content, style, _ = pictures
    proc = call_cli("neural_style_transfer.py", content, style, tmp_path / "cli", "--weights",
                    "random", "--seed", "7", "--iter", "2", "--height", "32",
                    "--content_layer", LAYERS["content_layer"], "--style_layers",
                    *LAYERS["style_layers"])
    assert proc.returncode == 0, proc.stderr
    Stylizer("random", seed=7).transfer(content, style, iterations=2, height=32,
                                        **LAYERS).save(tmp_path / "api.png")
    assert (tmp_path / "cli_at_iteration_01.png").read_bytes() == \
        (tmp_path / "api.png").read_bytes()

    proc = call_cli("neural_style.py", "--content", content, "--styles", style, "--output",
                    tmp_path / "cli.png", "--network", "random", "--seed", "7",
                    "--iterations", "4", "--preserve-colors")
    assert proc.returncode == 0, proc.stderr
    Stylizer("random", seed=7).stylize(content, style, iterations=4,
                                       preserve_colors=True).save(tmp_path / "api2.png")
    assert (tmp_path / "cli.png").read_bytes() == (tmp_path / "api2.png").read_bytes()


def test_keyboard_interrupt_keeps_the_best_image_so_far(stylizer, pictures):
    content, style, _ = pictures

    def interrupt_after(n):
        def on_evaluation(count, loss):
            if count == n:
                raise KeyboardInterrupt
        return on_evaluation

    with pytest.raises(KeyboardInterrupt) as caught:
        stylizer.transfer(content, style, iterations=5, height=32, on_evaluation=interrupt_after(30),
                          **LAYERS)
    result = caught.value.result
    assert result.interrupted and result.evaluations == 30 and result.image.size == (48, 32)
    assert result.parts.total <= min(r.total for r in result.losses)

    with pytest.raises(KeyboardInterrupt) as caught:
        stylizer.stylize(content, style, iterations=50, on_evaluation=interrupt_after(6),
                         content_layers=["block2_conv2"], style_layers=["block1_conv1"])
    result = caught.value.result
    assert result.interrupted and len(result.losses) == 5
    # Interrupted before anything was evaluated: nothing to keep.
    with pytest.raises(KeyboardInterrupt) as caught:
        stylizer.transfer(content, style, iterations=1, height=32, on_evaluation=interrupt_after(1),
                          **LAYERS)
    assert caught.value.result.evaluations == 1
    run = stylizer.iter_stylize(content, style, iterations=3)
    assert run.result() is None


def test_stopping_early_ends_the_optimiser_thread(stylizer, pictures):
    content, style, _ = pictures
    before = threading.active_count()
    run = stylizer.iter_transfer(content, style, iterations=50, height=32, **LAYERS)
    for it in run:
        if it.iteration == 2:
            break
    assert threading.active_count() == before
    assert run.result().interrupted and run.result().evaluations >= 40


def test_bad_input_raises_styleflow_error_with_the_cli_message(stylizer, tmp_path):
    with pytest.raises(StyleflowError, match=r"base image '.*nope.jpg': file not found"):
        stylizer.transfer(tmp_path / "nope.jpg", tmp_path / "nope.jpg")
    with pytest.raises(StyleflowError, match="not 32x32x2"):
        stylizer.transfer(np.zeros((32, 32, 2), np.float32), np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(StyleflowError, match="iterations"):
        stylizer.stylize(np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32, 3), np.uint8),
                         iterations=0)
    with pytest.raises(StyleflowError, match="all are zero"):
        stylizer.transfer(np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32, 3), np.uint8),
                          content_weight=0, style_weight=0, tv_weight=0)


def test_module_shortcuts(pictures):
    content, style, _ = pictures
    result = styleflow.transfer(content, style, weights="random", iterations=1, height=16,
                                **LAYERS)
    assert result.image.size == (24, 16)
    result = styleflow.stylize(content, style, weights="random", iterations=1, width=16,
                               content_layers=["block2_conv2"], style_layers=["block1_conv1"])
    assert result.image.size == (16, 11)


def test_help_and_usage_errors_do_not_import_tensorflow():
    code = ("import sys, contextlib, io\n"
            "from styleflow.cli.main import main\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
            "    codes = [main(['--help']), main(['nope'])]\n"
            "    for argv in (['transfer', '--help'], ['style', '--help'], ['transfer', 'a']):\n"
            "        try:\n"
            "            main(argv)\n"
            "        except SystemExit as e:\n"
            "            codes.append(e.code)\n"
            "import styleflow\n"
            "print(codes, 'tensorflow' in sys.modules, 'keras' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=cli_env(), cwd=ROOT, timeout=60)
    assert proc.stdout.strip() == "[0, 2, 0, 0, 2] False False", proc.stdout + proc.stderr


@pytest.mark.slow
def test_styleflow_command_runs_both_subcommands(pictures, tmp_path):
    content, style, _ = pictures
    proc = call_cli("styleflow", "transfer", content, style, tmp_path / "t", "--weights",
                    "random", "--iter", "1", "--height", "16", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert Image.open(tmp_path / "t_at_iteration_00.png").size == (24, 16)
    proc = call_cli("styleflow", "style", "--content", content, "--styles", style, "--output",
                    tmp_path / "o.png", "--network", "random", "--iterations", "1",
                    "--width", "24")
    assert proc.returncode == 0, proc.stderr
    assert Image.open(tmp_path / "o.png").size == (24, 16)
    proc = call_cli("styleflow", "transfer", content, style, tmp_path / "t", "--iter", "0")
    assert proc.returncode == 2 and proc.stderr.startswith("styleflow transfer: error: ")


def test_progress_only_when_asked(stylizer, pictures, capsys):
    content, style, _ = pictures
    stylizer.transfer(content, style, iterations=1, height=16, **LAYERS)
    quiet = capsys.readouterr()
    assert quiet.out == "" and quiet.err == ""  # the library prints nothing by itself
    seen = []
    stylizer.transfer(content, style, iterations=1, height=16, progress=True,
                      on_evaluation=lambda n, loss: seen.append(n), **LAYERS)
    shown = capsys.readouterr().err
    assert "20/20" in shown and "loss=" in shown  # tqdm's bar, with the caller's hook kept
    assert seen[:20] == list(range(1, 21))


def test_adam_reports_the_parts_of_the_image_it_keeps_when_losses_carry_float64_digits():
    """The tiled loss sums in float64 while the best-loss scalar is float32: a settled image
    that is the best must still be reported as the best (it once fell back to an older step's
    parts while writing the settled image)."""
    import numpy as np

    from styleflow.optim.adam import AdamLoop, AdamSettings
    from styleflow.objective.terms import Parts

    class Bowl:
        tiled = True
        shape = (1, 2, 2, 3)

        def loss_and_grads(self, image):
            image = np.asarray(image, np.float64)
            value = float(np.sum(image ** 2))
            # more digits than float32 holds, and above its float32 rounding
            value = float(np.float32(value)) + abs(float(np.float32(value))) * 1e-9
            return Parts(value, value, 0.0, 0.0), (2 * image).astype(np.float32)

    loop = AdamLoop(Bowl(), np.ones(Bowl.shape, np.float32), AdamSettings(learning_rate=0.1))
    for _ in range(3):
        loop.step()
    loop.settle()
    # The trap: the kept best loss, rounded to float32, sits below the settled parts' total.
    assert loop.settled.total > loop.best_loss
    assert loop.settled_is_best
    assert np.array_equal(loop.best(), loop._state[0].numpy())
    assert loop.settled.total == Bowl().loss_and_grads(loop.best())[0].total


def test_adam_warms_up_to_its_rate():
    """With `warmup` w, step t moves each pixel t/w as far as the same step without one (the
    first steps of fresh moments are about ±rate per pixel, wherever the gradient points), and
    as far from step w on; without one, the full rate from the first step."""
    import numpy as np

    from styleflow.optim.adam import AdamLoop, AdamSettings
    from styleflow.objective.terms import Parts

    slope = np.random.default_rng(3).normal(0, 1, (1, 2, 3, 3)).astype(np.float32)

    class Plane:  # a constant gradient: every step of fresh moments moves about ±rate
        tiled = True
        shape = slope.shape

        def loss_and_grads(self, image):
            value = float(np.sum(slope * np.asarray(image, np.float64)))
            return Parts(value, value, 0.0, 0.0), slope

    def moves(warmup: int) -> list[np.ndarray]:
        loop = AdamLoop(Plane(), np.zeros(slope.shape, np.float32),
                        AdamSettings(learning_rate=2.0, warmup=warmup))
        before, out = loop._state[0].numpy(), []
        for _ in range(6):
            loop.step()
            after = loop._state[0].numpy()
            out.append(after - before)
            before = after
        return out

    full, warm = moves(0), moves(4)
    assert np.allclose(np.abs(full[0]), 2.0, rtol=1e-4)  # the first step: ±rate everywhere
    for t, (a, b) in enumerate(zip(full, warm), start=1):
        assert np.allclose(b, a * min(1.0, t / 4), rtol=1e-5, atol=1e-7), t
