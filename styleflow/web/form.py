"""What the page sends for a new job, checked: the method, the numbers (within the server's
`Limits`) and the uploaded files, each read as an image before the job is queued, so anything
that is not one is refused at once with the library's one line."""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..defaults import FLOAT32_MAX, PHOTO_DEFAULTS, STYLIZE_DEFAULTS, TRANSFER_DEFAULTS
from ..errors import StyleflowError
from ..io import files, images
from .job import METHODS, NAME_CHARS, one_line, storage_error, stored_name

DEFAULTS = {"transfer": TRANSFER_DEFAULTS, "style": STYLIZE_DEFAULTS, "photo": PHOTO_DEFAULTS}
# The fields every method takes, besides its weights.
RUN_FIELDS = ("method", "iterations", "width")
# The main loss weights each method takes from the page (blank: the method's default).
WEIGHTS = {"transfer": ("content_weight", "style_weight", "tv_weight"),
           "style": ("content_weight", "style_weight", "tv_weight"),
           "photo": ("content_weight", "style_weight", "tv_weight", "photorealism")}
ROLES = ("content", "style", "content_mask", "style_mask")
WHAT = {"content": "content image", "style": "style image", "content_mask": "content mask",
        "style_mask": "style mask"}


@dataclass(frozen=True)
class Limits:
    """What one upload may be: bytes in the whole request, pixels of each image, output width,
    iterations."""

    max_bytes: int = 20 * 2 ** 20
    max_pixels: int = 40_000_000
    max_width: int = 1024
    max_iterations: int = 5000


@dataclass(frozen=True)
class Upload:
    """One uploaded file: the form field it came in (`role`), the name it had on the person's
    machine, its bytes."""

    role: str
    filename: str
    data: bytes


def shown_name(filename: str) -> str:
    """An uploaded file's name as the page shows it: the last path part, printable, short."""
    name = re.split(r"[\\/]", filename or "")[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    return (name or "upload")[:NAME_CHARS]


_WHOLE = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def number(fields: dict, name: str, kind: type, low: float, high: float | None = None,
           default=None):
    """A form field as a number within [low, high]; blank gives `default`."""
    text = str(fields.get(name, "")).strip()
    if not text:
        return default
    # Plain ASCII digits only: Python's int and float also take '1_0', other scripts' digits,
    # 'inf' and 'nan', which a person would not mean.
    if not (_WHOLE if kind is int else _DECIMAL).fullmatch(text):
        raise StyleflowError(f"{name}: '{text[:40]}' is not a "
                             f"{'whole ' if kind is int else ''}number")
    value = float(text)  # past every limit as infinity (int() refuses 4300 digits)
    if math.isfinite(value) and kind is int:
        value = int(text.lstrip("+-").lstrip("0") or "0") * (-1 if text[0] == "-" else 1)
    if value > FLOAT32_MAX:  # the engine computes in float32: a weight past it is infinite
        raise StyleflowError(f"{name}: {text[:40]}{'...' if len(text) > 40 else ''} is too "
                             f"large")
    if value < low or (high is not None and value > high):
        bound = f"from {low:g} to {high:g}" if high is not None else f"{low:g} or more"
        raise StyleflowError(f"{name}: must be {bound}, not {text[:40]}")
    return value


def read_form(fields: dict, uploads, limits: Limits) -> tuple[str, dict, dict]:
    """(method, the API's options, role -> uploads) from the page's form: `fields` (method,
    width, iterations, the weights; blank for a default) and its files. Raises
    StyleflowError."""
    method = str(fields.get("method") or "transfer")
    if method not in METHODS:
        raise StyleflowError(f"method: must be one of {', '.join(METHODS)}, not "
                             f"'{method[:40]}'")
    known = {*RUN_FIELDS, *(n for names in WEIGHTS.values() for n in names)}
    for name in sorted(fields):
        if name in ROLES:
            raise StyleflowError(f"{name}: send the {WHAT[name]} as a file, not as text")
        if name not in known:
            raise StyleflowError(f"unknown field '{one_line(name)[:40]}'")
        if name not in (*RUN_FIELDS, *WEIGHTS[method]) and str(fields[name]).strip():
            raise StyleflowError(f"{name}: the {method} method does not take it")
    options = {
        "iterations": number(fields, "iterations", int, 1, limits.max_iterations,
                             DEFAULTS[method]["iterations"]),
        "width": number(fields, "width", int, images.MIN_INPUT_SIDE, limits.max_width,
                        min(PHOTO_DEFAULTS["width"], limits.max_width)),
    }
    for name in WEIGHTS[method]:
        value = number(fields, name, float, 0)
        if value is not None:
            options[name] = value
    by_role: dict[str, list[Upload]] = {}
    for upload in uploads:
        if upload.filename or upload.data:  # an empty file input sends an empty part
            by_role.setdefault(upload.role, []).append(upload)
    unknown = set(by_role) - set(ROLES)
    if unknown:
        raise StyleflowError(f"unknown file field '{sorted(unknown)[0][:40]}'")
    if len(by_role.get("content", [])) != 1:
        raise StyleflowError("content: give one content image")
    if not by_role.get("style"):
        raise StyleflowError("style: give at least one style image")
    if method != "style" and len(by_role["style"]) > 1:
        raise StyleflowError(f"style: the {method} method takes one style image; choose "
                             "the style method to blend several")
    if method != "photo" and ("content_mask" in by_role or "style_mask" in by_role):
        raise StyleflowError("content_mask/style_mask: masks are for the photo method")
    for role in ("content_mask", "style_mask"):
        if len(by_role.get(role, [])) > 1:
            raise StyleflowError(f"{role}: give one mask")
    if ("content_mask" in by_role) != ("style_mask" in by_role):  # as the photo method asks
        given, missing = (("content_mask", "style_mask") if "content_mask" in by_role
                          else ("style_mask", "content_mask"))
        raise StyleflowError(f"{missing}: {given} is given without it; give both masks or "
                             "neither")
    return method, options, by_role


def store(folder: Path, by_role: dict, limits: Limits) -> tuple[dict, dict]:
    """Write the uploads into the job's folder and read each as an image (refusing what is
    not one, or is too large); (role -> file names, role -> uploaded names)."""
    inputs: dict = {}
    names: dict = {}
    for role in ROLES:
        for k, upload in enumerate(by_role.get(role, [])):
            stored = stored_name(role, k)
            shown = shown_name(upload.filename)
            path = folder / stored
            try:
                files.write_atomically(path, lambda handle, data=upload.data:
                                       handle.write(data))
            except StyleflowError as exc:
                raise storage_error(exc, folder) from None
            several = role == "style" and len(by_role[role]) > 1
            label = f"{WHAT[role]}{f' {k + 1}' if several else ''}"
            try:
                check_image(path, label, limits.max_pixels)
            except StyleflowError as exc:
                # The message names the server's copy: name the person's file instead.
                raise StyleflowError(str(exc).replace(str(path), shown)) from None
            if role == "style":
                inputs.setdefault(role, []).append(stored)
                names.setdefault(role, []).append(shown)
            else:
                inputs[role], names[role] = stored, shown
    return inputs, names


def check_image(path: Path, label: str, max_pixels: int) -> None:
    """Refuse an image with more pixels than the limit from its header (before decoding it),
    then read it as a run would (load_image: not an image, corrupt, too small)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
        size = f"{w}x{h} px"
    except Image.DecompressionBombError as exc:  # past Pillow's own guard: its count only
        counted = re.search(r"\((\d+) pixels\)", str(exc))
        w, h = (int(counted.group(1)), 1) if counted else (max_pixels + 1, 1)
        size = f"{w} px" if counted else "by its header"
    except Exception:  # noqa: BLE001 - load_image below says what is wrong, in one line
        w = h = 0
    if w * h > max_pixels:
        raise StyleflowError(f"{label} '{path}': image is too large ({size}, more than "
                             f"{max_pixels} pixels); downscale it first")
    images.load_image(path, label)
