"""Bad input, as a matrix: both CLIs run as subprocesses; every case must end in one readable
line naming the problem and the argument, a non-zero exit, no traceback and no output file.
Inputs that are merely unusual (EXIF rotation, CMYK, 16-bit, grayscale, palette, animation)
must work, and give the right picture."""

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import assert_clean_error, call_cli, make_image, run_cli
from styleflow.io.images import load_image
from test_weights import legacy_h5
from styleflow.model.weights import random_weights

TRANSFER = "neural_style_transfer.py"
STYLE = "neural_style.py"


def bomb_png(path: Path, side: int = 20000) -> Path:
    """A valid PNG header claiming side x side pixels (beyond Pillow's limit), no real data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) +
                     chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    f = {"base": make_image(d / "base.png", (48, 32), 1),
         "style": make_image(d / "style.png", (40, 40), 2)}
    (d / "folder.jpg").mkdir()
    f["dir"] = d / "folder.jpg"
    (d / "empty.jpg").write_bytes(b"")
    f["empty"] = d / "empty.jpg"
    Image.open(f["base"]).convert("RGB").save(d / "full.jpg", quality=90)
    data = (d / "full.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 3])
    f["truncated"] = d / "truncated.jpg"
    (d / "text.jpg").write_text("this is not a picture\n")
    f["text"] = d / "text.jpg"
    Image.new("RGB", (1, 1), "red").save(d / "one.png")
    f["one"] = d / "one.png"
    f["small"] = make_image(d / "small.png", (12, 12), 3)
    f["bomb"] = bomb_png(d / "bomb.png")
    (d / "weights.h5").write_text("not hdf5")
    f["not_h5"] = d / "weights.h5"
    layers = dict(random_weights(0, ["block1_conv2"]).layers)
    layers["block1_conv2"] = (np.zeros((3, 3, 64, 32), np.float32), np.zeros(32, np.float32))
    f["bad_shapes"] = legacy_h5(d / "shapes.h5", layers)
    # An input whose name an output would take.
    f["clash"] = make_image(d / "x_at_iteration_00.png", (48, 32), 4)
    return f


def T(*args):  # neural_style_transfer.py with random weights and a small image
    return (TRANSFER, ["{base}", "{style}", "{out}/r", "--weights", "random", "--iter", "1",
                       "--height", "32", *args])


def S(*args):  # neural_style.py with random weights
    return (STYLE, ["--content", "{base}", "--styles", "{style}", "--output", "{out}/o.png",
                    "--network", "random", "--iterations", "1", *args])


def replace(case, old, new):
    script, args = case
    return script, [new if a == old else a for a in args]


# id: (script, args, words the one error line must contain)
CASES = {
    "missing file": (*replace(T(), "{base}", "{out}/nope.jpg"), ["nope.jpg", "not found"]),
    "directory": (*replace(T(), "{style}", "{dir}"), ["folder.jpg", "directory"]),
    "empty file": (*replace(T(), "{base}", "{empty}"), ["empty.jpg", "empty"]),
    "truncated jpeg": (*replace(T(), "{base}", "{truncated}"), ["truncated.jpg", "decode"]),
    "text named .jpg": (*replace(T(), "{style}", "{text}"), ["text.jpg", "not a readable image"]),
    "1x1 image": (*replace(T(), "{base}", "{one}"), ["one.png", "1x1", "at least"]),
    "smaller than pooling": (*replace(S(), "{base}", "{small}"), ["content image", "12x12",
                                                                   "at least 16"]),
    "too small output": (*T("--height", "10"), ["output size", "at least 16"]),
    "decompression bomb": (*replace(S(), "{style}", "{bomb}"), ["bomb.png", "too large"]),
    "content weight not a number": (*T("--content_weight", "abc"), ["--content_weight", "abc"]),
    "style weight negative": (*T("--style_weight", "-1"), ["--style_weight", "-1"]),
    "tv weight nan": (*T("--tv_weight", "nan"), ["--tv_weight", "finite"]),
    "content weight inf": (*T("--content_weight", "inf"), ["--content_weight", "finite"]),
    "all weights zero": (*T("--content_weight", "0", "--style_weight", "0", "--tv_weight", "0"),
                         ["--tv_weight", "all are zero"]),
    "adam style weight -inf": (*S("--style-weight=-inf"), ["--style-weight", "finite"]),
    "iter zero": (*T("--iter", "0"), ["--iter", "greater than zero"]),
    "iter negative": (*T("--iter", "-3"), ["--iter", "-3"]),
    "iter not whole": (*T("--iter", "2.5"), ["--iter", "whole"]),
    "iter nan": (*T("--iter", "nan"), ["--iter", "nan"]),
    "iterations inf": (*S("--iterations", "inf"), ["--iterations", "inf"]),
    "learning rate zero": (*S("--learning-rate", "0"), ["--learning-rate", "greater than zero"]),
    "learning rate past float32": (*S("--learning-rate", "1e308"), ["--learning-rate", "1e+308",
                                                                    "too large", "float32"]),
    "content weight past float32": (*T("--content_weight", "4e38"), ["--content_weight",
                                                                      "too large"]),
    "height zero": (*T("--height", "0"), ["--height", "greater than zero"]),
    "width negative": (*S("--width", "-5"), ["--width", "-5"]),
    "unwritable folder": (*replace(T(), "{out}/r", "{locked}/r"), ["prefix", "not writable"]),
    "prefix inside a file": (*replace(T(), "{out}/r", "{base}/r"), ["prefix", "base.png"]),
    "weights not hdf5": (*T("--weights", "{not_h5}"), ["weights.h5", "not a readable"]),
    "weights missing": (*T("--weights", "{out}/none.h5"), ["none.h5", "no such file"]),
    "weights wrong shapes": (*T("--weights", "{bad_shapes}", "--content_layer", "block1_conv2",
                                "--style_layers", "block1_conv1"), ["block1_conv2", "kernel"]),
    "network not mat": (*S("--network", "{not_h5}"), ["weights.h5", "not a readable"]),
    "blend count": (*S("--style-blend-weights", "1", "2"), ["--style-blend-weights", "1 style"]),
    "blend all zero": (*S("--style-blend-weights", "0"), ["--style-blend-weights", "above zero"]),
    "scales count": (*S("--style-scales", "1", "2"), ["--style-scales", "1 style"]),
    "unknown style layer": (*T("--style_layers", "block9_conv1"), ["block9_conv1", "unknown"]),
    "unknown content layer": (*S("--content-layers", "conv4_2"), ["conv4_2", "unknown"]),
    "checkpoint without %s": (*S("--checkpoint-output", "{out}/c.png",
                                 "--checkpoint-iterations", "1"), ["--checkpoint-output", "%s"]),
    "output extension": (*replace(S(), "{out}/o.png", "{out}/o.xyz"), ["--output", ".xyz"]),
    "output onto input": (*replace(replace(T(), "{out}/r", "{clash_prefix}"), "{base}", "{clash}"),
                          ["x_at_iteration_00.png", "input"]),
    "gif not .gif": (*T("--gif", "{out}/anim.png"), ["--gif", ".gif"]),
    "log is a folder": (*T("--log", "{dir}"), ["--log", "directory"]),
    "initial missing": (*S("--initial", "{out}/gone.png"), ["initial image", "gone.png"]),
    "pooling unknown": (*S("--pooling", "median"), ["--pooling", "median"]),
    "unknown option": (*T("--iterations", "3"), ["--iterations"]),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input_one_clear_line(case, files, tmp_path):
    script, args, needles = CASES[case]
    out = tmp_path / "out"
    out.mkdir()
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.geteuid() == 0:  # root writes through permission bits; /sys/fs refuses even root
        locked = Path("/sys/fs")
    values = {k: str(v) for k, v in files.items()}
    values.update(out=str(out), locked=str(locked),
                  clash_prefix=str(files["clash"]).replace("_at_iteration_00.png", ""))
    before = {p: p.read_bytes() for p in files.values() if p.is_file()}
    proc = call_cli(script, *[a.format(**values) for a in args])
    assert_clean_error(proc, *needles)
    assert not [p for p in out.rglob("*") if p.is_file()], "partial output left behind"
    assert all(p.read_bytes() == data for p, data in before.items()), "an input was modified"


@pytest.mark.slow
@pytest.mark.parametrize("case", ["missing file", "unknown option"])
def test_bad_input_in_a_real_process(case, files, tmp_path):
    """The same cases as a user meets them: stderr holds one line and no traceback, and the
    exit status is non-zero (the matrix above runs in-process through main(argv))."""
    script, args, needles = CASES[case]
    out = tmp_path / "out"
    out.mkdir()
    values = {k: str(v) for k, v in files.items()}
    values.update(out=str(out))
    proc = run_cli(script, *[a.format(**values) for a in args])
    assert_clean_error(proc, *needles)
    assert not any(out.iterdir())


# --- unusual inputs that must work ------------------------------------------------------

def pattern(w=48, h=32):
    """Left half red, right half blue, a green top row: orientation is easy to check."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2, 0] = 255
    a[:, w // 2:, 2] = 255
    a[0, :, 1] = 255
    return a


@pytest.mark.slow
def test_exif_rotated_jpeg_is_used_upright(tmp_path):
    img = Image.fromarray(pattern())
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90° clockwise
    img.save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    upright = load_image(tmp_path / "rot.jpg")
    assert upright.shape == (48, 32, 3)
    # Rotated clockwise: the stored left (red) half is now on top, the green row on the right.
    assert upright[:10, :, 0].mean() > 200 and upright[-10:, :, 2].mean() > 200
    assert upright[:, -1, 1].mean() > 200
    proc = call_cli(TRANSFER, tmp_path / "rot.jpg", make_image(tmp_path / "s.png"),
                   tmp_path / "r", "--weights", "random", "--iter", "1", "--height", "48")
    assert proc.returncode == 0, proc.stderr
    with Image.open(tmp_path / "r_at_iteration_00.png") as out:
        assert out.size == (32, 48)


@pytest.mark.parametrize("kind", ["cmyk", "gray16", "gray", "palette_alpha", "animated"])
def test_unusual_formats_give_the_right_picture(tmp_path, kind):
    rgb = pattern()
    path = tmp_path / f"{kind}.png"
    if kind == "cmyk":
        path = tmp_path / "cmyk.jpg"
        Image.fromarray(rgb).convert("CMYK").save(path, quality=95)
        expected = rgb
    elif kind == "gray16":
        # Mid-grey as well as black and white: scaled gives 128, plain clipping 255.
        gray = (rgb[..., 0].astype(np.uint16) * 257)
        gray[rgb[..., 2] == 255] = 128 * 257
        Image.fromarray(gray).save(path)
        assert Image.open(path).mode.startswith("I")
        expected = np.repeat((gray // 257).astype(np.uint8)[..., None], 3, axis=2)
    elif kind == "gray":
        Image.fromarray(rgb[..., 0]).save(path)
        expected = np.repeat(rgb[..., :1], 3, axis=2)
    elif kind == "palette_alpha":
        pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
        index = pal.getpixel((0, 5))  # the red half's colour becomes transparent
        pal.info["transparency"] = index
        pal.save(path, transparency=index)
        expected = rgb.copy()
        red = (rgb[..., 0] == 255) & (rgb[..., 1] == 0)
        expected[red] = 255  # composited onto white
    else:
        path = tmp_path / "anim.gif"
        frames = [Image.fromarray(rgb), Image.fromarray(255 - rgb)]
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
        expected = rgb  # the first frame is used
    loaded = load_image(path)
    assert loaded.shape == expected.shape
    assert np.abs(loaded.astype(int) - expected.astype(int)).mean() < 8, kind
    proc = call_cli(STYLE, "--content", path, "--styles", path, "--output", tmp_path / "o.png",
                   "--network", "random", "--iterations", "1", "--style-layers",
                   "block1_conv1", "--content-layers", "block1_conv2")
    assert proc.returncode == 0, proc.stderr
    with Image.open(tmp_path / "o.png") as out:
        assert out.size == (48, 32) and out.mode == "RGB"
