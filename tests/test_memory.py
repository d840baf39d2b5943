"""The memory estimate that refuses images too large to fit, before anything is allocated."""

import pytest

from conftest import assert_clean_error, call_cli, make_image
from styleflow.defaults import FULL_CONTENT_LAYER, FULL_STYLE_LAYERS, LITE_STYLE_LAYERS
from styleflow.errors import StyleflowError
from styleflow.memory import activation_elements, check_fits, estimate_bytes, largest_fitting

FULL = [FULL_CONTENT_LAYER, *FULL_STYLE_LAYERS]


def test_activation_count_by_hand():
    # 32x32 up to block1_conv2: two 64-channel maps at full size.
    assert activation_elements((32, 32), ["block1_conv2"]) == 2 * 32 * 32 * 64
    # ... and up to block2_conv1: plus the pooled map and one 128-channel map at half size.
    assert activation_elements((32, 32), ["block2_conv1"]) == \
        2 * 32 * 32 * 64 + 16 * 16 * 64 + 16 * 16 * 128


def test_estimate_grows_with_size_depth_and_precision():
    small, large = estimate_bytes((300, 400), FULL), estimate_bytes((600, 800), FULL)
    assert large > 3 * (small - estimate_bytes((1, 1), FULL))
    assert estimate_bytes((600, 800), LITE_STYLE_LAYERS) < large
    assert estimate_bytes((600, 800), FULL, "bfloat16") < large


def test_check_fits_names_the_limit_and_a_size_that_fits():
    budget = estimate_bytes((768, 1024), FULL)
    check_fits((768, 1024), FULL, available=budget)  # fits exactly: no error
    with pytest.raises(StyleflowError, match=r"2048x1536 image needs about .* GB .* available; "
                                             r"use at most about \d+x\d+"):
        check_fits((1536, 2048), FULL, available=budget)
    h, w = largest_fitting((1536, 2048), FULL, "float32", budget)
    assert 1000 <= w <= 1024 and abs(w / h - 4 / 3) < 0.01
    assert estimate_bytes((h, w), FULL) <= budget


def test_cli_refuses_an_image_that_cannot_fit_before_allocating(tmp_path):
    base = make_image(tmp_path / "b.png", (48, 32), 1)
    # 90000x60000 would need terabytes; the refusal must come before any image is resized.
    proc = call_cli("neural_style_transfer.py", base, base, tmp_path / "r", "--weights", "random",
                   "--height", "60000")
    assert_clean_error(proc, "90000x60000", "needs about", "available", "--width/--height")
    assert not list(tmp_path.glob("r_*"))
