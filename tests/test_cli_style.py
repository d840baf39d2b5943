"""neural_style.py: checkpoints, loss, style scales, colour preservation, option errors."""

import re

import numpy as np
import pytest
from PIL import Image

from conftest import assert_clean_error, call_cli, make_image
from styleflow import Stylizer

SCRIPT = "neural_style.py"


@pytest.fixture
def pair(tmp_path):
    return (make_image(tmp_path / "c.png", (48, 32), 1), make_image(tmp_path / "s1.png", (40, 40), 2),
            make_image(tmp_path / "s2.png", (30, 50), 3))


def totals(stdout):
    return [float(v) for v in re.findall(r"iteration \d+/\d+: loss (\S+)", stdout)]


@pytest.mark.slow
def test_two_styles_checkpoints_and_output(pair, tmp_path):
    content, s1, s2 = pair
    out = tmp_path / "out.png"
    proc = call_cli(SCRIPT, "--content", content, "--styles", s1, s2, "--output", out,
                   "--iterations", "4", "--checkpoint-output", tmp_path / "out%s.png",
                   "--checkpoint-iterations", "2", "--network", "random",
                   "--style-blend-weights", "3", "1")
    assert proc.returncode == 0, proc.stderr
    for path in (tmp_path / "out2.png", tmp_path / "out4.png", out):
        with Image.open(path) as img:
            assert img.size == (48, 32)
    values = totals(proc.stdout)
    assert len(values) == 2 and values[1] < values[0], proc.stdout
    assert not (tmp_path / "out_interrupted.png").exists()


def test_style_scales_resize_styles(pair):
    content, s1, s2 = pair
    run = Stylizer("random").iter_stylize(str(content), [str(s1), str(s2)],
                                          style_scales=[0.5, 2.0], style_layers=["block1_conv1"],
                                          content_layers=["block1_conv2"])
    # Each style's width becomes scale x the content width (48), its aspect kept.
    assert run.problem.style_sizes == [(24, 24), (160, 96)]
    assert run.size == (32, 48)


@pytest.mark.slow
def test_preserve_colors_keeps_content_chrominance(pair, tmp_path):
    content, s1, _ = pair
    for name, extra in (("plain", []), ("kept", ["--preserve-colors"])):
        proc = call_cli(SCRIPT, "--content", content, "--styles", s1, "--output",
                        tmp_path / f"{name}.png", "--iterations", "3", "--network", "random",
                        "--seed", "2", *extra)
        assert proc.returncode == 0, proc.stderr
    with Image.open(tmp_path / "kept.png") as a, Image.open(content) as b, \
            Image.open(tmp_path / "plain.png") as c:
        kept = np.asarray(a.convert("YCbCr"), float)
        original = np.asarray(b.convert("YCbCr"), float)
        plain = np.asarray(c.convert("YCbCr"), float)
    # Cb, Cr are the content's (within two colour-space round trips), Y is the stylised one's.
    assert np.abs(kept[..., 1:] - original[..., 1:]).mean() < 1.5
    assert np.abs(kept[..., 0] - plain[..., 0]).mean() < 1.5
    assert np.abs(plain[..., 1:] - original[..., 1:]).mean() > 3  # it did change colours


def test_matconvnet_file_and_average_pooling_through_the_cli(pair, tmp_path):
    from test_weights import matconvnet_file
    from styleflow.model.network import KERAS_INPUT
    from styleflow.model.weights import random_weights

    content, s1, _ = pair
    mat = matconvnet_file(tmp_path / "vgg.mat", random_weights(4, ["block2_conv2"]).layers,
                          KERAS_INPUT.mean_rgb)
    outputs = {}
    for pooling in ("max", "avg"):
        out = tmp_path / f"{pooling}.png"
        proc = call_cli(SCRIPT, "--content", content, "--styles", s1, "--output", out,
                        "--iterations", "2", "--network", mat, "--content-layers",
                        "block2_conv2", "--style-layers", "block1_conv1", "block2_conv1",
                        "--pooling", pooling)
        assert proc.returncode == 0, proc.stderr
        assert f"weights '{mat}'" in proc.stdout
        outputs[pooling] = totals(proc.stdout)
    assert outputs["max"] != outputs["avg"]  # the pooling really changed the network


def test_adam_refuses_a_size_that_cannot_fit(pair, tmp_path):
    content, s1, _ = pair
    proc = call_cli(SCRIPT, "--content", content, "--styles", s1, "--output", tmp_path / "o.png",
                    "--network", "random", "--width", "90000")
    assert_clean_error(proc, "90000x60000", "needs about", "available")


def test_checkpoint_pattern_needs_percent_s(pair, tmp_path):
    content, s1, _ = pair
    proc = call_cli(SCRIPT, "--content", content, "--styles", s1, "--output", tmp_path / "o.png",
                   "--checkpoint-output", tmp_path / "ck.png", "--checkpoint-iterations", "2")
    assert_clean_error(proc, "--checkpoint-output", "%s")


@pytest.mark.slow
def test_existing_output_needs_overwrite(pair, tmp_path):
    content, s1, _ = pair
    out = tmp_path / "o.png"
    out.write_bytes(b"keep me")
    proc = call_cli(SCRIPT, "--content", content, "--styles", s1, "--output", out,
                   "--iterations", "1", "--network", "random")
    assert_clean_error(proc, "--overwrite", str(out))
    assert out.read_bytes() == b"keep me"
    proc = call_cli(SCRIPT, "--content", content, "--styles", s1, "--output", out,
                   "--iterations", "1", "--network", "random", "--overwrite")
    assert proc.returncode == 0, proc.stderr
    with Image.open(out) as img:
        assert img.size == (48, 32)
