"""Reading, resizing and writing images as uint8 RGB NumPy arrays (16-bit outputs from float
values), with their colour profiles."""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import StyleflowError
from . import icc
from .files import look, os_error, write_atomically

# Smaller inputs carry no usable content or style; 1x1 "images" are almost always mistakes.
MIN_INPUT_SIDE = 8


def load_image(path: str | os.PathLike, what: str = "image") -> np.ndarray:
    """Read an image file as an upright uint8 RGB array of shape (height, width, 3).

    EXIF orientation is applied; grayscale, 16-bit, palette, CMYK and transparent images are
    converted (transparency is composited onto white); animated files give their first frame.
    Any problem raises StyleflowError naming `what` and the path.
    """
    label = f"{what} '{path}'"
    p = Path(path)
    info = look(p, what)
    if info is None:
        raise StyleflowError(f"{label}: file not found")
    if stat.S_ISDIR(info.st_mode):
        raise StyleflowError(f"{label}: is a directory, not an image file")
    if info.st_size == 0 and stat.S_ISREG(info.st_mode):
        raise StyleflowError(f"{label}: file is empty")
    if stat.S_ISFIFO(info.st_mode) and not _anonymous_pipe(p):
        # A named pipe waits for a writer, perhaps for ever; a shell's pipe into /dev/stdin
        # (Linux resolves it to /proc/PID/fd/pipe:[N], macOS to /dev/fd/0) is read as a file.
        raise StyleflowError(f"{label}: a named pipe, not an image file (pipe an image into "
                             "/dev/stdin instead)")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x its pixel limit; treat both as errors.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as img:
                img.seek(0)
                img = ImageOps.exif_transpose(img)
                array = _to_rgb(_in_srgb(img))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise StyleflowError(
            f"{label}: image is too large (more than {Image.MAX_IMAGE_PIXELS} pixels); "
            "downscale it first") from None
    except UnidentifiedImageError:
        raise StyleflowError(f"{label}: not a readable image file") from None
    except PermissionError:
        raise StyleflowError(f"{label}: permission denied") from None
    except OSError as exc:
        if exc.errno is not None:  # the system refused (an I/O error), not a decoder
            raise os_error(what, path, exc, "read") from None
        raise StyleflowError(f"{label}: cannot decode image ({_first_line(exc)})") from None
    except (ValueError, SyntaxError) as exc:  # truncated or corrupt data
        raise StyleflowError(f"{label}: cannot decode image ({_first_line(exc)})") from None
    return _big_enough(array, label)


def as_rgb(image, what: str = "image") -> np.ndarray:
    """Any accepted image as uint8 RGB (h, w, 3): a file path (read with load_image), a
    PIL.Image (converted like a file's contents), or a NumPy array converted the same way:
    (h, w) or (h, w, 1) grey, (h, w, 3) RGB or (h, w, 4) RGBA (composited onto white); uint8,
    uint16 (0..65535), other integers (0..255, or 0..65535 when larger), bool, or floats
    (0..1, or 0..255 when larger). An (h, w, 3) uint8 array is used as is.

    Raises StyleflowError naming `what` for anything else or for an image that is too small.
    """
    if isinstance(image, (str, os.PathLike)):
        return load_image(image, what)
    if isinstance(image, Image.Image):
        try:
            array = _to_rgb(_in_srgb(ImageOps.exif_transpose(image)))
        except ValueError as exc:
            raise StyleflowError(f"{what}: {exc}") from None
    elif isinstance(image, np.ndarray):
        array = _array_to_rgb(image, what)
    else:
        raise StyleflowError(f"{what}: expected a file path, a PIL image or a NumPy array, not "
                             f"{type(image).__name__}")
    return _big_enough(array, what)


def _array_to_rgb(image: np.ndarray, what: str) -> np.ndarray:
    """A NumPy image (see as_rgb) as uint8 RGB, scaled as a file of that kind would be."""
    if image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    shape = "x".join(map(str, image.shape))
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
        raise StyleflowError(f"{what}: an array must be height x width (grey) or height x width "
                             f"x 1, 3 or 4 (grey, RGB, RGBA), not {shape}")
    if image.dtype == bool:
        values, top = image.astype(np.float64), 1.0
    elif image.dtype.kind in "ui":
        values = image.astype(np.float64)
        if values.size and values.min() < 0:
            raise StyleflowError(f"{what}: an integer array must not hold negative values")
        peak = values.max(initial=0)
        top = 255.0 if image.dtype.itemsize == 1 or (image.dtype != np.uint16 and peak <= 255) \
            else 65535.0
    elif image.dtype.kind == "f":
        values = image.astype(np.float64)
        if not np.isfinite(values).all():
            raise StyleflowError(f"{what}: the array holds NaN or infinite values")
        top = 1.0 if values.max(initial=0) <= 1.0 else 255.0
    else:
        raise StyleflowError(f"{what}: an array of {image.dtype} is not an image")
    values = np.clip(values / top, 0.0, 1.0)
    if values.ndim == 2:
        values = np.repeat(values[:, :, None], 3, axis=2)
    elif values.shape[2] == 4:
        alpha = values[:, :, 3:]
        values = values[:, :, :3] * alpha + (1.0 - alpha)  # onto white, as files are
    return np.rint(values * 255.0).astype(np.uint8)


def _in_srgb(img: Image.Image) -> Image.Image:
    """`img` converted to sRGB when it embeds another colour profile (e.g. Adobe RGB)."""
    return icc.to_srgb(img)


def _anonymous_pipe(path: Path) -> bool:
    """Whether the pipe at `path` is a shell's (/dev/stdin and the like), not a named one."""
    real = os.path.realpath(path)
    return "pipe:[" in real or real.startswith("/dev/")


def _big_enough(array: np.ndarray, label: str) -> np.ndarray:
    """`array`, or StyleflowError naming `label` when a side is below MIN_INPUT_SIDE."""
    h, w = array.shape[:2]
    if min(h, w) < MIN_INPUT_SIDE:
        raise StyleflowError(f"{label}: image is {w}x{h} pixels; at least "
                             f"{MIN_INPUT_SIDE}x{MIN_INPUT_SIDE} is needed")
    return array


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _to_rgb(img: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to uint8 RGB, scaling 16/32-bit data instead of clipping it."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        data = np.asarray(img, dtype=np.float64)
        peak = data.max(initial=0)
        if img.mode == "F" and peak <= 1.0:
            top = 1.0  # floating-point images conventionally hold 0..1
        else:
            top = 65535.0 if img.mode.startswith("I;16") or peak > 255 else 255.0
        gray = np.clip(np.rint(data * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode in ("P", "RGB", "L") and "transparency" in img.info:
        img = img.convert("RGBA")  # a palette entry or a tRNS colour marks transparent pixels
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def fit_size(shape: tuple[int, int], height: int | None = None,
             width: int | None = None) -> tuple[int, int]:
    """(height, width) for an image of `shape` (h, w): one side given, the other keeps the aspect."""
    h, w = shape
    if height and width:
        return int(height), int(width)
    if height:
        return int(height), max(1, int(round(w * height / h)))
    if width:
        return max(1, int(round(h * width / w))), int(width)
    return h, w


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a uint8 RGB array to (height, width) with Lanczos filtering."""
    if image.shape[:2] == tuple(size):
        return image
    pil = Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.LANCZOS)
    return np.asarray(pil, dtype=np.uint8).copy()


def resize_mask(mask: np.ndarray, size: tuple[int, int], nearest: bool = True) -> np.ndarray:
    """Resize a uint8 mask (h, w, 3) to (height, width): nearest neighbour for colour-coded
    segmentations (no new colours at region borders), bilinear for soft grey masks."""
    if mask.shape[:2] == tuple(size):
        return mask
    method = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    pil = Image.fromarray(mask).resize((size[1], size[0]), method)
    return np.asarray(pil, dtype=np.uint8).copy()


# Extensions written with 16 bits per channel whatever the picture's depth.
SIXTEEN_BIT_ALWAYS = {".tif", ".tiff"}
# Extensions that can hold 16 bits per channel when asked (bit_depth=16).
SIXTEEN_BIT_CAPABLE = {".png", ".tif", ".tiff"}


def bit_depth_for(path: str | os.PathLike, asked: int = 8) -> int:
    """Bits per channel an output at `path` is written with: 16 for TIFF, `asked` for PNG,
    8 elsewhere; StyleflowError when 16 is asked of a format that cannot hold it."""
    suffix = Path(path).suffix.lower()
    if suffix in SIXTEEN_BIT_ALWAYS:
        return 16
    if asked == 16 and suffix not in SIXTEEN_BIT_CAPABLE:
        raise StyleflowError(f"output '{path}': bit_depth=16 needs a .png or .tif file, not "
                             + (f"'{suffix}'" if suffix else "a name without an extension"),
                             params=("bit_depth=16",))
    return asked


def to_uint16(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB, or float RGB on the 0..255 scale, as uint16 RGB (0..65535)."""
    rgb = np.asarray(rgb)
    if rgb.dtype == np.uint16:
        return rgb
    if rgb.dtype == np.uint8:
        return rgb.astype(np.uint16) * 257  # exact: 255 -> 65535
    return np.clip(np.rint(np.asarray(rgb, np.float64) * (65535.0 / 255.0)), 0,
                   65535).astype(np.uint16)


def save_image(path: str | os.PathLike, image: np.ndarray, bit_depth: int = 8) -> None:
    """Write an RGB picture atomically (a temporary file in the same folder, then a rename),
    with an sRGB ICC profile.

    `image` is uint8, or uint16 / float on the 0..255 scale for 16-bit outputs. TIFF files
    are written with 16 bits per channel (tifffile), PNG with 16 when `bit_depth` is 16
    (pypng); everything else with 8 (Pillow). A reader never sees a half-written file, and
    an interrupted write leaves the old one.
    """
    path = Path(path)
    fmt = check_image_extension(path)
    depth = bit_depth_for(path, bit_depth)
    if depth == 16:
        data = to_uint16(image)
        if fmt == "TIFF":
            import io

            import tifffile

            buffer = io.BytesIO()  # tifffile wants a named file or a buffer, not a descriptor
            tifffile.imwrite(buffer, data, photometric="rgb", compression="zlib",
                             iccprofile=icc.srgb_profile())
            write_atomically(path, lambda handle: handle.write(buffer.getvalue()))
        else:
            write_atomically(path, lambda handle: _write_png16(handle, data))
        return
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = (np.clip(np.rint(array.astype(np.float64) / 257.0), 0, 255) if array.dtype ==
                 np.uint16 else np.clip(np.rint(array), 0, 255)).astype(np.uint8)
    options = {"quality": 95} if fmt == "JPEG" else {}
    if fmt in ("PNG", "JPEG", "WEBP", "TIFF"):
        options["icc_profile"] = icc.srgb_profile()
    save_pil_atomically(path, Image.fromarray(array), fmt, **options)


def _write_png16(handle, data: np.ndarray) -> None:
    """A 16-bit RGB PNG with an sRGB iCCP chunk (Pillow writes 16-bit PNGs only as grey)."""
    import io
    import zlib

    import png

    height, width, _ = data.shape
    plain = io.BytesIO()
    png.Writer(width, height, greyscale=False, bitdepth=16).write(
        plain, data.reshape(height, width * 3))
    chunks = list(png.Reader(bytes=plain.getvalue()).chunks())
    # iCCP: profile name, NUL, compression method 0 (deflate), compressed profile; it must
    # come before the image data.
    iccp = b"sRGB\x00\x00" + zlib.compress(icc.srgb_profile())
    at = next(i for i, (kind, _) in enumerate(chunks) if kind == b"IDAT")
    chunks.insert(at, (b"iCCP", iccp))
    png.write_chunks(handle, chunks)


# Formats that hold an RGB picture and that Pillow writes, by extension (an output is checked
# against this before any work: Pillow's own table also lists formats it cannot write, or only
# as 1-bit or palette images).
OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG",
                  ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP",
                  ".ppm": "PPM", ".pnm": "PPM", ".tga": "TGA"}


def check_image_extension(path: str | os.PathLike, what: str = "output") -> str:
    """Pillow's format name for the file's extension; StyleflowError for an extension that
    cannot hold the RGB picture."""
    suffix = Path(path).suffix.lower()
    fmt = OUTPUT_FORMATS.get(suffix)
    Image.init()  # Pillow fills its SAVE table as plugins load
    if fmt is None or fmt not in Image.SAVE:
        usable = ", ".join(s for s, f in OUTPUT_FORMATS.items() if f in Image.SAVE)
        if not suffix:
            raise StyleflowError(f"{what} '{path}': the name has no extension to tell the "
                                 f"format; end it in one of {usable}")
        raise StyleflowError(f"{what} '{path}': cannot write images with extension "
                             f"'{suffix}'; use one of {usable}")
    return fmt


def save_pil_atomically(path: Path, pil: Image.Image, fmt: str, what: str | None = None,
                        **options) -> None:
    """Save a Pillow image to `path` through a temporary file and os.replace; `what` names
    the file in messages."""
    write_atomically(path, lambda handle: pil.save(handle, format=fmt, **options), what)
