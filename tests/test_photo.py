"""Photorealistic transfer (Deep Photo Style Transfer) and masks in the objective: the guided
style loss, the photorealism term, tiled = untiled, and what the masks do to an output."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import LITE_H5, assert_clean_error, call_cli, make_image, run_cli
from styleflow.defaults import LITE_CONTENT_LAYER, LITE_STYLE_LAYERS
from styleflow.errors import StyleflowError
from styleflow.model.network import KERAS_INPUT, build_extractor
from styleflow.model.weights import random_weights
from styleflow.objective import losses, masks
from styleflow.objective.graph import PHOTO_SCALE
from styleflow.objective.matting import MattingLaplacian
from styleflow.objective.objective import Objective
from styleflow.objective.terms import NEURAL_STYLE

ORANGE, NAVY = (255, 140, 0), (20, 30, 110)


def test_one_region_of_ones_is_neural_styles_style_loss():
    rng = np.random.default_rng(0)
    features = tf.constant(rng.normal(size=(1, 9, 7, 5)), tf.float32)
    target = tf.constant(rng.normal(size=(5, 5)), tf.float32)
    plain = losses.style_loss_mean(losses.gram_matrix_mean(features), target)
    guided = losses.guided_style_loss(features, tf.ones((1, 9, 7, 1)), target[None],
                                      tf.constant([1.0]))
    assert float(guided) == pytest.approx(float(plain), rel=1e-6)
    # A half-weighted second region that repeats the first adds half of it again.
    twice = losses.guided_style_loss(features, tf.ones((1, 9, 7, 2)),
                                     tf.stack([target, target]), tf.constant([1.0, 0.5]))
    assert float(twice) == pytest.approx(1.5 * float(plain), rel=1e-6)


def _images(size=(120, 96), seed=0):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    content = np.asarray(Image.fromarray(small).resize(size, Image.Resampling.BILINEAR))
    style = np.asarray(Image.fromarray(small[::-1, ::-1]).resize((100, 90)))
    return content, style


def _objective(extractor, content_rgb, style_rgb, guided, photo, tile=None, split=None):
    content_layer, style_layers = LITE_CONTENT_LAYER, list(LITE_STYLE_LAYERS)
    h, w = content_rgb.shape[:2]
    options = {}
    if guided:
        left = np.zeros((h, w, 2), np.float32)
        left[:, : w // 3, 0] = 1
        left[:, w // 3:, 1] = 1
        top = np.zeros(style_rgb.shape[:2], np.float32)
        top[: style_rgb.shape[0] // 2] = 1
        options.update(guides=left, region_styles=[(0, top), (0, 1 - top)],
                       region_weights=masks.shares(left))
    if photo:
        options.update(laplacian=MattingLaplacian(content_rgb), photo_weight=3e3)
    return Objective(extractor, KERAS_INPUT.preprocess(content_rgb),
                     [KERAS_INPUT.preprocess(style_rgb)], {content_layer: 1.0},
                     {n: 1.0 for n in style_layers}, 5.0, 100.0, 1e-3, NEURAL_STYLE,
                     tile=tile, split=split, **options)


@pytest.fixture(scope="module")
def extractor():
    layers = [LITE_CONTENT_LAYER, *LITE_STYLE_LAYERS]
    return build_extractor(random_weights(3).layers, list(dict.fromkeys(layers)))


@pytest.mark.parametrize("guided,photo,split", [
    (True, False, None), (False, True, None), (True, True, None),
    # Split past block 2: block 3's guided style and content terms over the whole map.
    (True, True, "block2_pool")])
def test_tiled_photo_equals_untiled(extractor, guided, photo, split):
    content, style = _images()
    x = KERAS_INPUT.preprocess(content) + np.random.default_rng(1).normal(
        0, 10, (1, 96, 120, 3)).astype(np.float32)
    whole = _objective(extractor, content, style, guided, photo)
    tiled = _objective(extractor, content, style, guided, photo,
                       **({"split": (split, 32)} if split else {"tile": 32}))
    assert tiled.tiled and len(tiled._tiled.tiles) >= 9
    want, grad_want = whole.loss_and_grads(x)
    got, grad = tiled.loss_and_grads(x)
    for part in ("total", "content", "style", "tv", "photo"):
        if getattr(want, part) is None:
            assert getattr(got, part) is None
            continue
        assert getattr(got, part) == pytest.approx(getattr(want, part), rel=1e-5), part
    if photo:
        assert want.photo > 0.05 * want.total  # the term is not negligible in the comparison
    assert np.abs(grad - grad_want).max() <= 1e-4 * np.abs(grad_want).max()


def test_photo_term_is_lambda_times_the_laplacian_energy(extractor):
    content, style = _images()
    objective = _objective(extractor, content, style, False, True)
    x = KERAS_INPUT.preprocess(content) + np.random.default_rng(2).normal(
        0, 10, (1, 96, 120, 3)).astype(np.float32)
    parts, grad = objective.loss_and_grads(x)
    laplacian = MattingLaplacian(content)
    v = tf.constant(x * PHOTO_SCALE)
    assert parts.photo == pytest.approx(3e3 * float(laplacian.energy(v)), rel=1e-5)
    # Its gradient, 2λ·M·v on the 0..1 scale, is part of the whole gradient: without the
    # term (λ = 0 changes nothing else) the difference is exactly that.
    other = _objective(extractor, content, style, False, True)
    other.targets = type(other.targets)(**{**other.targets.__dict__,
                                           "term_weights": tf.constant([5.0, 100.0, 1e-3, 0.0])})
    _, grad_without = other.loss_and_grads(x)
    want = 2 * 3e3 * laplacian.apply(v).numpy() * PHOTO_SCALE
    assert np.abs((grad - grad_without) - want).max() <= 1e-3 * np.abs(want).max()


def _two_colour(path, size, top, bottom, split="rows"):
    w, h = size
    array = np.zeros((h, w, 3), np.uint8)
    if split == "rows":
        array[: h // 2], array[h // 2:] = top, bottom
    else:
        array[:, : w // 2], array[:, w // 2:] = top, bottom
    Image.fromarray(array).save(path)
    return path


def _mean_colour(path, box):
    x0, y0, x1, y1 = box
    return np.asarray(Image.open(path).convert("RGB"), float)[y0:y1, x0:x1].reshape(-1, 3).mean(0)


@pytest.mark.slow
def test_masks_send_each_region_its_own_colours(tmp_path):
    """A style orange above and dark blue below, a content split left/right: with the masks
    saying left = top and right = bottom, the left half turns orange and the right half blue;
    swapping the style mask's colours swaps them."""
    content = make_image(tmp_path / "content.png", (64, 48), 4)
    style = _two_colour(tmp_path / "style.png", (60, 60), ORANGE, NAVY)
    content_mask = _two_colour(tmp_path / "cmask.png", (64, 48), (255, 0, 0), (0, 0, 255),
                               split="columns")
    style_mask = _two_colour(tmp_path / "smask.png", (60, 60), (255, 0, 0), (0, 0, 255))
    swapped = _two_colour(tmp_path / "swapped.png", (60, 60), (0, 0, 255), (255, 0, 0))
    outputs = {}
    for name, mask in (("straight", style_mask), ("swapped", swapped)):
        out = tmp_path / f"out_{name}.png"
        proc = call_cli("styleflow", "photo", content, style, out, "--content-mask",
                        content_mask, "--style-mask", mask, "--weights", str(LITE_H5),
                        "--iterations", "4", "--width", "64", "--photorealism", "10",
                        "--quiet")
        assert proc.returncode == 0, proc.stderr
        outputs[name] = out
    left, right = (4, 4, 28, 44), (36, 4, 60, 44)
    for name, (orange_side, navy_side) in (("straight", (left, right)),
                                           ("swapped", (right, left))):
        o, n = (_mean_colour(outputs[name], b) for b in (orange_side, navy_side))
        # Orange has far more red than blue; navy the other way round.
        assert o[0] - o[2] > n[0] - n[2] + 60, (name, o, n)


def test_photo_cli_writes_the_output_and_logs_the_photo_term(tmp_path, tiny):
    base, ref = tiny
    out, log = tmp_path / "out.png", tmp_path / "log.csv"
    proc = call_cli("styleflow", "photo", base, ref, out, "--weights", "random",
                    "--iterations", "2", "--width", "48", "--log", log)
    assert proc.returncode == 0, proc.stderr
    assert Image.open(out).size == (48, 32)
    header = log.read_text().splitlines()[0].split(",")
    assert "photo" in header
    assert "photorealistic L-BFGS" in proc.stdout + proc.stderr


@pytest.mark.parametrize("case", ["aspect", "colour", "not_image", "one_mask", "nothing"])
def test_photo_bad_masks_get_one_line(tmp_path, tiny, case):
    base, ref = tiny  # 48x32 and 40x40
    cmask = _two_colour(tmp_path / "c.png", (48, 32), (255, 0, 0), (0, 0, 255), "columns")
    smask = _two_colour(tmp_path / "s.png", (40, 40), (255, 0, 0), (0, 0, 255))
    extra, needles = [], []
    if case == "aspect":
        extra = ["--content-mask", smask, "--style-mask", smask]
        needles = [f"--content-mask '{smask}'", "proportion"]
    elif case == "colour":
        green = _two_colour(tmp_path / "g.png", (48, 32), (255, 0, 0), (0, 255, 0), "columns")
        extra = ["--content-mask", green, "--style-mask", smask]
        needles = ["#00ff00"]
    elif case == "not_image":
        text = tmp_path / "mask.png"
        text.write_text("not an image")
        extra = ["--content-mask", text, "--style-mask", smask]
        needles = ["content mask", "not a readable image"]
    elif case == "one_mask":
        extra = ["--content-mask", cmask]
        needles = ["--style-mask"]
    else:
        extra = ["--photorealism", "0", "--content-weight", "0", "--style-weight", "0",
                 "--tv-weight", "0"]
        needles = ["zero"]
    out = tmp_path / "out.png"
    proc = call_cli("styleflow", "photo", base, ref, out, "--weights", "random",
                    "--iterations", "1", "--width", "48", *extra)
    assert_clean_error(proc, *needles)
    assert not out.exists()


def test_style_masks_count_must_match_the_styles(tmp_path, tiny):
    base, ref = tiny
    mask = make_image(tmp_path / "m.png", (48, 32), 5, mode="L")
    out = tmp_path / "out.png"
    proc = call_cli("styleflow", "style", "--content", base, "--styles", ref, ref,
                    "--style-masks", mask, "--output", out, "--network", "random",
                    "--iterations", "1")
    assert_clean_error(proc, "--style-masks", "2 styles")
    assert not out.exists()


@pytest.mark.slow
def test_style_masks_paint_each_style_where_its_mask_says(tmp_path):
    content = make_image(tmp_path / "content.png", (64, 48), 6)
    red = _two_colour(tmp_path / "red.png", (48, 48), (230, 20, 20), (200, 40, 30))
    blue = _two_colour(tmp_path / "blue.png", (48, 48), (20, 40, 220), (30, 20, 200))
    left = _two_colour(tmp_path / "left.png", (64, 48), (255,) * 3, (0,) * 3, "columns")
    right = _two_colour(tmp_path / "right.png", (64, 48), (0,) * 3, (255,) * 3, "columns")
    out = tmp_path / "out.png"
    proc = call_cli("styleflow", "style", "--content", content, "--styles", red, blue,
                    "--style-masks", left, right, "--output", out, "--network", str(LITE_H5),
                    "--iterations", "150", "--width", "64", "--content-weight", "0.5",
                    "--quiet")
    assert proc.returncode == 0, proc.stderr
    l, r = _mean_colour(out, (4, 4, 26, 44)), _mean_colour(out, (38, 4, 60, 44))
    assert l[0] - l[2] > r[0] - r[2] + 60, (l, r)


def test_the_budget_counts_the_photorealism_term():
    from styleflow.plan import budget
    from styleflow.plan.memory import estimate_bytes, photo_bytes

    layers = [LITE_CONTENT_LAYER, *LITE_STYLE_LAYERS]
    size = (768, 1024)
    plain = estimate_bytes(size, layers, "float32", "lbfgs")
    assert estimate_bytes(size, layers, "float32", "lbfgs", photo=True) == plain + photo_bytes(
        size)
    # A budget the painterly run fits in whole: the photo run needs tiles there.
    room = (plain + photo_bytes(size) // 2) / 2**30
    fits = budget.choose(size, layers, [LITE_CONTENT_LAYER], "float32", "lbfgs",
                         max_memory=room, resident=0)
    tiled = budget.choose(size, layers, [LITE_CONTENT_LAYER], "float32", "lbfgs",
                          max_memory=room, resident=0, photo=True)
    assert fits.tile is None and tiled.tile is not None
    assert tiled.need <= room * 2**30


def test_batch_photo_takes_mask_columns_and_a_bad_mask_fails_its_row_alone(tmp_path):
    from styleflow.batch.status import read_status

    folder = tmp_path / "in"
    folder.mkdir()
    make_image(folder / "c.png", (48, 32), 7)
    make_image(folder / "s.png", (40, 40), 8)
    _two_colour(folder / "cm.png", (48, 32), (255, 0, 0), (0, 0, 255), "columns")
    _two_colour(folder / "sm.png", (40, 40), (255, 0, 0), (0, 0, 255))
    _two_colour(folder / "green.png", (48, 32), (255, 0, 0), (0, 255, 0), "columns")
    manifest = tmp_path / "pairs.csv"
    manifest.write_text(
        "content,style,output,content_mask,style_mask\n"
        "in/c.png,in/s.png,out/plain.png,,\n"
        "in/c.png,in/s.png,out/masked.png,in/cm.png,in/sm.png\n"
        "in/c.png,in/s.png,out/bad.png,in/green.png,in/sm.png\n")
    proc = call_cli("styleflow", "batch", "--manifest", manifest, "--method", "photo",
                    "--weights", "random", "--iterations", "1", "--width", "48", "--quiet")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    records = {r["output"].rsplit("/", 1)[-1]: r
               for r in read_status(tmp_path / "pairs.status.jsonl")}
    assert [records[k]["status"] for k in ("plain.png", "masked.png", "bad.png")] == \
        ["done", "done", "failed"]
    assert "#00ff00" in records["bad.png"]["error"]
    out = tmp_path / "out"
    assert Image.open(out / "masked.png").size == (48, 32) and not (out / "bad.png").exists()
    # The masks changed the result: the masked pair's picture differs from the plain one's.
    assert np.abs(np.asarray(Image.open(out / "masked.png"), float)
                  - np.asarray(Image.open(out / "plain.png"), float)).mean() > 0.5


@pytest.mark.slow
def test_photo_interrupted_keeps_the_best_image_and_says_how_to_resume(tiny, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT, child

    base, style = tiny
    out, log = tmp_path / "p.png", tmp_path / "p.csv"
    args = [sys.executable, "-m", "styleflow", "photo", str(base), str(style), str(out),
            "--weights", "random", "--iterations", "1000", "--width", "48", "--jit", "off",
            "--log", str(log)]
    with child(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        deadline = time.time() + 120
        # The log's first row: an iteration is done, so there is a best image to keep.
        while (time.time() < deadline and proc.poll() is None
               and len(log.read_text().splitlines() if log.exists() else []) < 2):
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    kept = tmp_path / "p_interrupted.png"
    assert proc.returncode == 130, err
    assert "Traceback" not in err and str(kept) in err and "--init" in err
    assert not out.exists()
    with Image.open(kept) as img:
        assert img.size == (48, 32)
    assert ROOT.exists()


def test_two_stages_leave_the_term_out_first_then_put_it_in(tiny):
    """Luan et al.'s two stages: the first half of the iterations is the photo-free problem
    (the same iterates as a run with photorealism 0), the second half has the term, the
    evaluations count on across the stages; one stage has the term throughout."""
    from styleflow import Stylizer

    base, style = tiny
    common = dict(iterations=4, width=48, content_layers=[LITE_CONTENT_LAYER],
                  style_layers=list(LITE_STYLE_LAYERS))
    stylizer = Stylizer("random", seed=2, jit="off")
    run = stylizer.iter_photo(base, style, **common)
    assert (run.stages, run.first_stage, run.total) == (2, 2, 80)
    two = list(run)
    assert [it.stage for it in two] == [1, 1, 2, 2]
    assert [it.iteration for it in two] == [1, 2, 3, 4]
    assert [it.evaluations for it in two] == sorted({it.evaluations for it in two})
    assert [it.parts.photo for it in two[:2]] == [0.0, 0.0]
    assert all(it.parts.photo > 0 for it in two[2:])
    free = list(stylizer.iter_photo(base, style, **{**common, "iterations": 2},
                                    photorealism=0))
    for staged, plain in zip(two[:2], free):
        np.testing.assert_allclose(staged.precise, plain.precise, atol=0.05)
    one = list(stylizer.iter_photo(base, style, **common, stages=1))
    assert all(it.parts.photo > 0 and it.stage == 1 for it in one)
    assert np.abs(one[-1].precise - two[-1].precise).mean() > 0.01
    assert run.result().parts == two[-1].parts


def test_stages_must_be_one_or_two(tiny, tmp_path):
    from styleflow import Stylizer
    from styleflow.errors import StyleflowError

    base, style = tiny
    for bad in (0, 3, True, "2", 1.0):
        with pytest.raises(StyleflowError, match="stages"):
            Stylizer("random").iter_photo(base, style, stages=bad, width=48)
    proc = call_cli("styleflow", "photo", base, style, tmp_path / "o.png", "--stages", "3")
    assert proc.returncode == 2 and "--stages" in proc.stderr


def test_interrupted_in_the_second_stage_says_to_go_on_with_one(tiny, tmp_path, monkeypatch,
                                                                capsys):
    """Going on from a second-stage image must keep the term in: the hint adds --stages 1."""
    import signal

    from styleflow.cli import common as cc
    from styleflow.cli import photo

    made = cc.recorder_for

    def recorder_for(*args, **kwargs):
        recorder = made(*args, **kwargs)
        finished = recorder.iteration

        def iteration(number, *rest, **options):
            finished(number, *rest, **options)
            if number == 3:  # the first iteration of the second stage is done
                raise KeyboardInterrupt
        recorder.iteration = iteration
        return recorder

    monkeypatch.setattr(cc, "recorder_for", recorder_for)
    base, style = tiny
    out = tmp_path / "p.png"
    # An interrupted command leaves SIGINT and SIGTERM at SIG_DFL for the exit: not pytest's.
    kept_handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = photo.main([str(base), str(style), str(out), "--weights", "random",
                           "--iterations", "4", "--width", "48", "--jit", "off"])
    finally:
        for signum, handler in kept_handlers.items():
            signal.signal(signum, handler)
    err = capsys.readouterr().err
    kept = tmp_path / "p_interrupted.png"
    assert code == 130, err
    assert f"--stages 1 --init {kept}" in err and kept.exists() and not out.exists()


def test_photo_outputs_that_would_replace_each_other_are_refused(tmp_path, tiny):
    base, ref = tiny
    out = tmp_path / "out.png"
    cases = [(["--plot", out], ["--plot", "is the output"]),
             (["--log", tmp_path / "p.png", "--plot", tmp_path / "p.png"], ["--plot", "--log"]),
             (["--log", base], ["--log", "is the input file"]),
             (["--log", tmp_path / "hard.csv"], ["--log", "is the input file", "a link to it"]),
             (["--gif", tmp_path / "out_interrupted.gif",
               "--log", tmp_path / "out_interrupted.png"],
              ["--log", "where an interruption keeps its image"])]
    os.link(base, tmp_path / "hard.csv")  # another name for the content image's file
    before = base.read_bytes()
    for extra, needles in cases:
        proc = call_cli("styleflow", "photo", base, ref, out, "--weights", "random",
                        "--iterations", "1", "--width", "48", *extra)
        assert_clean_error(proc, *needles)
        assert not out.exists()
    assert base.read_bytes() == before
    # A child process: reading the pipe would wait for ever, and the timeout says so.
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    proc = run_cli("styleflow", "photo", fifo, ref, out, "--weights", "random",
                   "--iterations", "1", "--width", "48", timeout=120)
    assert_clean_error(proc, "a named pipe")


def test_a_refused_run_leaves_no_folders_it_made(tmp_path, tiny):
    base, ref = tiny
    out = tmp_path / "new" / "deeper" / "out.png"
    proc = call_cli("styleflow", "photo", base, tmp_path / "missing.png", out, "--weights",
                    "random", "--iterations", "1", "--width", "48")
    assert_clean_error(proc, "missing.png", "not found")
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "mine"
    kept.mkdir()  # a folder that was there stays, empty or not
    proc = call_cli("styleflow", "photo", base, tmp_path / "missing.png", kept / "o.png",
                    "--weights", "random", "--iterations", "1", "--width", "48")
    assert proc.returncode == 1 and kept.is_dir()


def test_an_output_name_near_the_limit_keeps_an_interrupted_image_name_that_fits(tmp_path):
    from styleflow.io.files import interrupted_name

    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    base = tmp_path / ("y" * (limit - 4))  # y...y.png is a legal name; + _interrupted is not
    name = interrupted_name(str(base), ".png", [])
    assert name.parent == tmp_path and name.name.endswith("yy_interrupted.png")
    assert len(os.fsencode(name.name)) == limit
    assert interrupted_name(str(tmp_path / "out"), ".png", []).name == "out_interrupted.png"


def test_mask_regions_are_found_at_the_masks_own_size():
    """A 3-pixel band is a region of a 480-row mask (0.6% of it, its solid rows 0.2%) at any
    output size; where the
    run's size leaves it no pixel, the error says so instead of denying it exists."""
    content = np.zeros((480, 640, 3), np.uint8)
    content[:] = NAVY
    content[:200] = ORANGE
    style = np.zeros((480, 640, 3), np.uint8)
    style[:] = NAVY
    style[200:203] = ORANGE
    regions, style_regions, colours = masks.colour_regions(content, style)
    assert len(colours) == 2 and style_regions[200:203].sum() == 3 * 640
    regions, style_regions, _ = masks.colour_regions(content, style, content_size=(96, 128),
                                                     style_size=(240, 320))
    assert regions.shape == (96, 128, 2) and style_regions.shape == (240, 320, 2)
    assert style_regions[..., np.argmax([c == ORANGE for c in colours])].sum() > 0
    with pytest.raises(StyleflowError, match=r"^style_mask: the region #ff8c00 covers no pixel "
                                             r"at 64x48"):
        masks.colour_regions(content, style, content_size=(48, 64), style_size=(48, 64))
    # The band in the content, a style without it: refused at every size alike (shrunk
    # first, the band vanished and the error with it).
    plain = np.zeros((480, 640, 3), np.uint8)
    plain[:] = NAVY
    for size in (None, (48, 64)):
        with pytest.raises(StyleflowError, match="#ff8c00 has no region in style_mask"):
            masks.colour_regions(style, plain, content_size=size, style_size=size)


def test_photo_api_notes_masks_of_one_region_and_refuses_a_stretched_init(tiny):
    from styleflow import Stylizer

    base, style = tiny  # 48x32 and 40x40
    said = []
    stylizer = Stylizer("random", notes=said.append)
    labels = np.zeros((32, 48, 3), np.uint8)
    labels[:, 24:] = 1  # grey labels 0 and 1: one colour to the eye, and to the masks
    stylizer.iter_photo(base, style, width=48, iterations=1, content_mask=labels,
                        style_mask=np.zeros((40, 40, 3), np.uint8))
    assert len(said) == 1 and "one region" in said[0] and "change nothing" in said[0]
    with pytest.raises(StyleflowError, match=r"^init is 40x40 pixels, not in proportion"):
        stylizer.iter_photo(base, style, width=48, iterations=1, init=style)
    for bad in ("a", float("nan"), -1, 1.5):
        with pytest.raises(StyleflowError, match="^seed: must be a whole number"):
            Stylizer("random", seed=bad)


def test_each_stage_that_stops_early_says_so(tiny, tmp_path):
    """Each stage's early stop is counted in the run's iterations, with the stage's own
    range (a stage-blind count took stage 1's repeated iterations as run)."""
    from types import SimpleNamespace

    from styleflow import Stylizer

    base, style = tiny
    # Content alone, from the content, without the photorealism term: the gradient is zero at
    # the start, so stage 1 stops in its first iteration.
    run = Stylizer("random", seed=0).iter_photo(base, style, width=48, iterations=6,
                                                style_weight=0, tv_weight=0)
    assert len(list(run)) == 6
    assert run.stage_stops[0][:3] == (1, 0, 3), run.stage_stops
    # Stage 2's count starts after stage 1's iterations.
    run._first_evaluator = SimpleNamespace(stopped=(2, "converged"))
    run.evaluator = SimpleNamespace(stopped=(1, "no lower loss"))
    assert run.stage_stops == [(1, 2, 3, "converged"), (2, 4, 6, "no lower loss")]
    assert run.stopped == (4, "no lower loss")
