"""16-bit outputs (TIFF always, PNG with --bit-depth 16), sRGB profiles on every output, and
inputs in another colour space converted to sRGB. Files are read back with other readers."""

import io
import struct

import numpy as np
import png
import pytest
import tifffile
from PIL import Image, ImageCms

from conftest import assert_clean_error, call_cli, make_image
from styleflow import Stylizer
from styleflow.io import images
from styleflow.io.icc import srgb_profile


def _s15(v):
    return struct.pack(">i", int(round(v * 65536)))


def _xyz(x, y, z):
    return b"XYZ " + bytes(4) + _s15(x) + _s15(y) + _s15(z)


def wide_gamut_profile() -> bytes:
    """A minimal ICC v2 matrix/TRC RGB profile with Adobe RGB (1998)'s primaries (D50) and
    gamma 2.2: pixels tagged with it are not sRGB."""
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, int(2.2 * 256)) + bytes(2)
    text = b"wide test RGB\0"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(8 + 3 + 67)
    tags = [(b"desc", desc), (b"wtpt", _xyz(0.9642, 1.0, 0.8249)),
            (b"rXYZ", _xyz(0.6097, 0.3111, 0.0195)), (b"gXYZ", _xyz(0.2053, 0.6257, 0.0609)),
            (b"bXYZ", _xyz(0.1492, 0.0632, 0.7446))] + [
        (sig, curve) for sig in (b"rTRC", b"gTRC", b"bTRC")]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for sig, body in tags:
        body += bytes(-len(body) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    header = (struct.pack(">I", offset + len(data)) + bytes(4) + struct.pack(">I", 0x02100000)
              + b"mntrRGB XYZ " + bytes(12) + b"acsp" + bytes(24) + bytes(4)
              + _xyz(0.9642, 1.0, 0.8249)[8:] + bytes(48))
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


def test_input_with_another_profile_is_converted_to_srgb(tmp_path):
    profile = wide_gamut_profile()
    pixels = make_image(tmp_path / "raw.png", (32, 24), 3)
    raw = np.asarray(Image.open(pixels).convert("RGB"))
    Image.fromarray(raw).save(tmp_path / "tagged.png", icc_profile=profile)
    Image.fromarray(raw).save(tmp_path / "tagged.jpg", icc_profile=profile, quality=100)
    want = np.asarray(ImageCms.profileToProfile(
        Image.fromarray(raw), ImageCms.ImageCmsProfile(io.BytesIO(profile)),
        ImageCms.createProfile("sRGB"), outputMode="RGB"))
    got = images.load_image(tmp_path / "tagged.png")
    assert np.array_equal(got, want)
    assert np.abs(got.astype(int) - raw).max() > 20  # a wide gamut: colours really move
    assert np.abs(images.load_image(tmp_path / "tagged.jpg").astype(int) - want).mean() < 3
    # The same pixels untagged, or tagged sRGB, are taken as they are.
    assert np.array_equal(images.load_image(pixels), raw)
    Image.fromarray(raw).save(tmp_path / "srgb.png", icc_profile=srgb_profile())
    assert np.abs(images.load_image(tmp_path / "srgb.png").astype(int) - raw).max() <= 1


def test_srgb_profile_is_the_same_bytes_every_time():
    """LittleCMS stamps a profile with its creation time, to the second: two profiles made a
    second apart differ unless the stamp is cleared, and then --seed repeats byte for byte."""
    import time

    from PIL import ImageCms

    def stamped() -> bytes:
        return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()

    srgb_profile.cache_clear()
    first, first_stamped = srgb_profile(), stamped()
    time.sleep(1.1)
    srgb_profile.cache_clear()
    second, second_stamped = srgb_profile(), stamped()
    assert first_stamped != second_stamped  # the clock is in LittleCMS's bytes...
    assert second == first  # ...and not in ours
    assert "sRGB" in ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(first)))


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    folder = tmp_path_factory.mktemp("depth")
    base = make_image(folder / "b.png", (48, 32), 1)
    ref = make_image(folder / "s.png", (40, 40), 2)
    return Stylizer("random", seed=1).transfer(base, ref, iterations=1, height=32)


@pytest.mark.slow
def test_tiff_is_16_bit_from_the_unrounded_picture_with_srgb(result, tmp_path):
    result.save(tmp_path / "o.tif")
    with tifffile.TiffFile(tmp_path / "o.tif") as tif:
        data = tif.pages[0].asarray()
        profile = tif.pages[0].tags["InterColorProfile"].value
    assert data.dtype == np.uint16 and data.shape == (*result.size, 3)
    assert bytes(profile) == srgb_profile()
    assert np.abs(data / 257.0 - result.precise).max() <= 0.5 / 257 + 1e-6
    assert (data % 257 != 0).mean() > 0.5  # finer than 8 bits: not an 8-bit picture scaled up
    assert np.abs(data / 257.0 - result.array).max() <= 0.5 + 1e-6


def test_png_16_bit_when_asked_8_bit_otherwise_both_with_srgb(result, tmp_path):
    result.save(tmp_path / "deep.png", bit_depth=16)
    result.save(tmp_path / "plain.png")
    width, height, rows, info = png.Reader(filename=str(tmp_path / "deep.png")).asDirect()
    data = np.vstack([np.asarray(r, np.uint16) for r in rows]).reshape(height, width, 3)
    assert info["bitdepth"] == 16 and (height, width) == result.size
    assert np.abs(data / 257.0 - result.precise).max() <= 0.5 / 257 + 1e-6
    chunks = dict(png.Reader(filename=str(tmp_path / "deep.png")).chunks())
    assert b"iCCP" in chunks
    with Image.open(tmp_path / "plain.png") as plain:
        assert plain.mode == "RGB" and plain.info["icc_profile"] == srgb_profile()
        assert np.array_equal(np.asarray(plain), result.array)
    with Image.open(tmp_path / "deep.png") as deep:
        assert deep.info["icc_profile"] == srgb_profile()  # Pillow reads our iCCP back


@pytest.mark.slow
def test_clis_write_16_bit_files(tiny, tmp_path):
    out = tmp_path / "o.tif"
    proc = call_cli("neural_style.py", "--content", tiny[0], "--styles", tiny[1], "--output",
                    out, "--network", "random", "--iterations", "2", "--width", "40")
    assert proc.returncode == 0, proc.stderr
    assert tifffile.imread(out).dtype == np.uint16
    proc = call_cli("neural_style_transfer.py", tiny[0], tiny[1], tmp_path / "p", "--weights",
                    "random", "--iter", "1", "--height", "32", "--bit-depth", "16")
    assert proc.returncode == 0, proc.stderr
    assert png.Reader(filename=str(tmp_path / "p_at_iteration_00.png")).asDirect()[3][
        "bitdepth"] == 16


def test_16_bit_jpeg_is_refused_before_any_work(tiny, tmp_path):
    proc = call_cli("neural_style.py", "--content", tiny[0], "--styles", tiny[1], "--output",
                    tmp_path / "o.jpg", "--network", "random", "--bit-depth", "16")
    assert_clean_error(proc, "--bit-depth 16", ".png or .tif")
    assert not (tmp_path / "o.jpg").exists()
