"""Where VGG19 weights come from: Keras' ImageNet download, a local .h5 or MatConvNet .mat file,
the block 1-3 ImageNet weights shipped with the package ("lite"), or seeded random weights."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import stat
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..defaults import IMAGENET_FILE, WEIGHT_CHOICES
from ..errors import Note, StyleflowError, os_error, os_reason
from .layout import CONV_FILTERS, CONV_LAYERS, convs_to, deepest
from .network import KERAS_INPUT, InputSpec

LITE_PATH = Path(__file__).with_name("data") / "vgg19_imagenet_block1-3.h5"
IMAGENET_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/vgg19/"
                + IMAGENET_FILE)
IMAGENET_MD5 = "253f8cb515780f3b799900260a226db6"
LITE_SOURCE = "lite (ImageNet blocks 1-3, shipped)"
DOWNLOADED = "note: downloaded the VGG19 ImageNet weights (80 MB, once) to {}"
# MatConvNet's imagenet-vgg-verydeep-19.mat names conv layers conv1_1 ... conv5_4.
MAT_NAMES = {name.replace("block", "conv").replace("_conv", "_"): name for name in CONV_LAYERS}
# The shipped lite weights hold VGG19's first blocks.
LITE_BLOCKS = 3


@dataclass
class Weights:
    """Conv kernels and biases by Keras layer name, and the input convention they expect."""

    layers: dict[str, tuple[np.ndarray, np.ndarray]]
    input_spec: InputSpec
    source: str

    @property
    def lite(self) -> bool:
        """True for block 1-3 weights (like the shipped file): default layers then stay there."""
        return all((s.name in self.layers) == (s.block <= LITE_BLOCKS) for s in convs_to())

    def require(self, needed: Sequence[str]) -> None:
        """Raise StyleflowError naming the first layer up to the deepest of `needed` that is
        missing or has the wrong shape."""
        for stage in convs_to(deepest(needed)):
            name = stage.name
            if name not in self.layers:
                raise StyleflowError(
                    f"weights {self.source}: no weights for layer '{name}', which the chosen "
                    f"layers need (choose layers up to {self._last_available()} or other weights)")
            kernel, bias = self.layers[name]
            want = (3, 3, stage.in_channels, stage.out_channels)
            if tuple(kernel.shape) != want or tuple(bias.shape) != (want[3],):
                raise StyleflowError(
                    f"weights {self.source}: layer '{name}' has kernel {tuple(kernel.shape)} and "
                    f"bias {tuple(bias.shape)}; VGG19 needs {want} and ({want[3]},)")

    def _last_available(self) -> str:
        last = "none"
        for name in CONV_LAYERS:
            if name not in self.layers:
                break
            last = name
        return last


def resolve_weights(spec: str, seed: int = 0,
                    log: Callable[[str], None] = lambda msg: None) -> Weights:
    """Load the weights named by `spec`: auto, imagenet, lite, random, or a file path."""
    if spec == "random":
        return random_weights(seed)
    if spec == "lite":
        return load_h5(LITE_PATH, source=LITE_SOURCE)
    if spec == "imagenet":
        return load_h5(imagenet_file(), source="imagenet")
    if spec == "auto":
        try:
            cached = verified_imagenet_file()
        except StyleflowError as exc:
            log(f"note: {exc}; using the shipped block 1-3 weights ('lite') meanwhile")
            return load_h5(LITE_PATH, source=LITE_SOURCE)
        if cached is not None:
            return load_h5(cached, source="imagenet")
        # One line either way: where the download went, or the fallback (no "downloading"
        # line first, which offline would make two).
        try:
            weights = load_h5(imagenet_file(), source="imagenet")
            log(DOWNLOADED.format(keras_models_dir()))
            return weights
        except StyleflowError:
            log(Note("note: full VGG19 ImageNet weights could not be downloaded; using the "
                     f"shipped block 1-3 weights ('lite'). For the full network put "
                     f"{IMAGENET_FILE} in {keras_models_dir()} or pass weights=PATH",
                     params=("weights=PATH",)))
            return load_h5(LITE_PATH, source=LITE_SOURCE)
    path = check_spec(spec)
    if path.suffix.lower() == ".mat":
        return load_mat(path)
    return load_h5(path)


def check_spec(spec: str) -> Path | None:
    """StyleflowError unless `spec` is one of WEIGHT_CHOICES (then None) or names a file that
    can be read and starts as an HDF5 or .mat weights file does (its Path); reads a few bytes
    and imports nothing heavy, so front ends check it up front."""
    if spec in WEIGHT_CHOICES:
        return None
    path = Path(spec)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise StyleflowError(
            f"weights '{spec}': no such file; use a path or one of {', '.join(WEIGHT_CHOICES)}"
        ) from None
    except OSError as exc:  # a symlink loop, a name too long, a file used as a folder...
        raise os_error("weights", spec, exc, "read", params=("weights",)) from None
    if stat.S_ISDIR(info.st_mode):
        raise StyleflowError(f"weights '{spec}': is a directory, not a weights file")
    if not stat.S_ISREG(info.st_mode):  # opening a pipe would wait for a writer
        raise StyleflowError(f"weights '{spec}': not a regular file (a device or a pipe)")
    try:
        with open(path, "rb") as handle:
            unknown = _unsigned(handle, path.suffix.lower() == ".mat")
    except OSError as exc:  # no permission to read it, an I/O error
        raise os_error("weights", spec, exc, "read", params=("weights",)) from None
    if unknown:
        raise StyleflowError(f"weights '{spec}': not a readable HDF5 or .mat weights file "
                             f"({unknown})")
    return path


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _unsigned(handle, mat: bool) -> str | None:
    """None where the open file starts as a weights file can, else why not: a `mat` file with
    the text header of MATLAB 5 to 7.2 (what scipy reads), any other with HDF5's signature, at
    the start or after a user block of 512 bytes doubled. A server checks this up front, where
    its workers would only find out at their first job."""
    if mat:
        header = handle.read(10)
        if header == b"MATLAB 7.3":
            return "a MATLAB 7.3 file, which scipy cannot read; save it with -v7"
        return None if header.startswith(b"MATLAB") else "it starts as neither"
    offset = 0
    while offset <= 1 << 16:
        handle.seek(offset)
        if handle.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
            return None
        offset = max(512, 2 * offset)
    return "it starts as neither"


def keras_models_dir() -> Path:
    """Where Keras caches downloaded model files (~/.keras/models unless KERAS_HOME is set)."""
    base = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(base) / "models"


def cached_imagenet_file() -> Path | None:
    """The cached Keras notop VGG19 weights file, if one is there (checked or not)."""
    path = keras_models_dir() / IMAGENET_FILE
    try:
        return path if path.is_file() else None
    except OSError as exc:  # e.g. the cache folder is not readable
        raise os_error("weights cache", path, exc, "read") from None


def file_md5(path: Path) -> str:
    """The file's MD5, read in chunks (80 MB for the ImageNet weights)."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def damaged_cache_message(path: Path) -> str:
    return (f"the cached ImageNet weights file {path} is damaged or incomplete (its MD5 is not "
            f"Keras' {IMAGENET_MD5}); delete it to download it again")


def verified_imagenet_file() -> Path | None:
    """The cached file when its MD5 is Keras' published one; None when there is none;
    StyleflowError naming the file when it is there but damaged (a killed download, say)."""
    cached = cached_imagenet_file()
    if cached is None:
        return None
    try:
        digest = file_md5(cached)
    except OSError as exc:  # an I/O error, no permission
        raise os_error("weights cache", cached, exc, "read") from None
    if digest != IMAGENET_MD5:
        raise StyleflowError(damaged_cache_message(cached))
    return cached


def imagenet_file() -> Path:
    """Path of the Keras notop VGG19 ImageNet weights, downloading them once if needed.

    The download goes to a temporary name beside the cache and is renamed into place only
    once its MD5 matches, so a killed or racing download never leaves a damaged file; a
    damaged file already there is replaced by a good download.
    """
    try:
        cached = verified_imagenet_file()
    except StyleflowError:
        cached = None
        damaged = True
    else:
        damaged = False
    if cached is not None:
        return cached
    import keras

    folder = keras_models_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".styleflow-download-", dir=folder)
    except OSError as exc:
        raise StyleflowError(f"cannot download VGG19 ImageNet weights: cannot write to "
                             f"{folder} ({os_reason(exc)})") from None
    try:
        # STYLEFLOW_IMAGENET_URL points at a mirror (tests use an unreachable one).
        url = os.environ.get("STYLEFLOW_IMAGENET_URL", IMAGENET_URL)
        # Keras prints its own "Downloading data from" line on stdout, which would break
        # --quiet and interleave with our lines; callers announce the download themselves.
        with contextlib.redirect_stdout(io.StringIO()):
            fetched = Path(keras.utils.get_file(IMAGENET_FILE, url, cache_dir=staging,
                                                cache_subdir="", file_hash=IMAGENET_MD5))
        target = folder / IMAGENET_FILE
        os.replace(fetched, target)
        return target
    except Exception as exc:  # keras raises a bare Exception on network failure
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        # Keras: "URL fetch failure on URL: CODE -- REASON" (CODE None without an answer)
        fetch = re.fullmatch(r"URL fetch failure on (\S+): (\S+) -- (.*)", reason)
        if fetch:
            host = urllib.parse.urlsplit(fetch[1]).hostname or fetch[1]
            code = "" if fetch[2] == "None" else f"HTTP {fetch[2]}: "
            reason = f"{host}: {code}{fetch[3]}"
        if len(reason) > 160:  # cut between words
            reason = reason[:160].rsplit(" ", 1)[0] + "..."
        if damaged:
            raise StyleflowError(f"{damaged_cache_message(folder / IMAGENET_FILE)}; it could "
                                 f"not be downloaded again ({reason})") from None
        raise StyleflowError(
            f"cannot download VGG19 ImageNet weights ({reason}); put {IMAGENET_FILE} in "
            f"{folder}, or use weights=PATH or weights=lite",
            params=("weights=PATH", "weights=lite")) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def random_weights(seed: int, needed: Sequence[str] = CONV_LAYERS) -> Weights:
    """He-initialised weights from `seed`: an untrained network with realistic activation scales.

    Each layer draws from its own stream, so a layer's weights do not depend on how deep the
    network is built. Honest for algorithm tests and timing; the pictures mean nothing.
    """
    layers = {}
    for index, stage in enumerate(convs_to(deepest(needed))):
        rng = np.random.default_rng([seed, index])
        cin, out = stage.in_channels, stage.out_channels
        std = np.sqrt(2.0 / (9 * cin))
        kernel = (rng.standard_normal((3, 3, cin, out)) * std).astype(np.float32)
        layers[stage.name] = (kernel, np.zeros(out, np.float32))
    return Weights(layers, KERAS_INPUT, source=f"random (seed {seed})")


def load_h5(path: str | os.PathLike, source: str | None = None) -> Weights:
    """Read conv kernels and biases by layer name from a Keras HDF5 weights file.

    Accepts the legacy layout (``layer_names`` attribute; full, notop or partial files, and whole
    saved models with a ``model_weights`` group) and Keras 3 ``.weights.h5`` files.
    """
    import h5py

    source = source or f"'{path}'"
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        if exc.errno is not None:  # the system refused (h5py's own text is cut short)
            raise StyleflowError(f"weights {source}: cannot read "
                                 f"({os.strerror(exc.errno)})") from None
        raise StyleflowError(f"weights {source}: not a readable HDF5 or .mat weights file "
                             f"({str(exc).splitlines()[0][:120]})") from None
    layers: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    try:
        with handle:
            group = handle["model_weights"] if "model_weights" in handle else handle
            if "layer_names" in group.attrs:
                for raw in group.attrs["layer_names"]:
                    name = raw.decode() if isinstance(raw, bytes) else str(raw)
                    if name not in CONV_FILTERS:
                        continue
                    names = [n.decode() if isinstance(n, bytes) else str(n)
                             for n in group[name].attrs["weight_names"]]
                    values = [np.asarray(group[name][n]) for n in names]
                    if len(values) != 2:
                        raise StyleflowError(f"weights {source}: layer '{name}' holds "
                                             f"{len(values)} arrays, expected kernel and bias")
                    layers[name] = (values[0].astype(np.float32), values[1].astype(np.float32))
            elif "layers" in handle:
                layers = _keras3_layers(handle["layers"])
    except StyleflowError:
        raise
    except (KeyError, OSError, ValueError) as exc:
        raise StyleflowError(f"weights {source}: unexpected HDF5 layout ({exc})") from None
    if not layers:
        raise StyleflowError(f"weights {source}: the file holds no VGG19 conv layers "
                             f"(expected names like block1_conv1)")
    return Weights(layers, KERAS_INPUT, source=source)


def _keras3_layers(group) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Conv layers of a Keras 3 .weights.h5 file. Keras 3 names its groups by class (conv2d,
    conv2d_1, ...) rather than by layer name, so convolutions are matched to VGG19 in order."""
    import re

    def order(name: str) -> int:
        match = re.search(r"_(\d+)$", name)
        return int(match.group(1)) if match else 0

    convs = []
    for name in sorted(group, key=order):
        vars_ = group[name].get("vars")
        if vars_ is not None and "0" in vars_ and "1" in vars_ and vars_["0"].ndim == 4:
            convs.append((np.asarray(vars_["0"], np.float32), np.asarray(vars_["1"], np.float32)))
    return dict(zip(CONV_LAYERS, convs))


def load_mat(path: str | os.PathLike) -> Weights:
    """Read MatConvNet's imagenet-vgg-verydeep-19.mat (as used by anishathalye/neural-style).

    Its kernels are stored width-first and expect RGB input minus the file's mean pixel; they
    are turned into Keras' height-first layout here, keeping RGB input.
    """
    import scipy.io

    source = f"'{path}'"
    try:
        data = scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises ValueError, TypeError, MatReadError... on bad files
        raise StyleflowError(f"weights {source}: not a readable MatConvNet .mat file "
                             f"({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__})"
                             ) from None
    try:
        average = np.asarray(_mat_field(data["normalization"], "averageImage"), np.float64)
        mean_rgb = tuple(float(v) for v in average.reshape(-1, 3).mean(axis=0))
        layers = {}
        for entry in np.asarray(data["layers"]).ravel():
            name = str(np.asarray(_mat_field(entry, "name")).ravel()[0])
            if name not in MAT_NAMES:
                continue
            kernel, bias = np.asarray(_mat_field(entry, "weights")).ravel()[:2]
            kernel = np.transpose(np.asarray(kernel, np.float32), (1, 0, 2, 3))
            layers[MAT_NAMES[name]] = (np.ascontiguousarray(kernel),
                                       np.asarray(bias, np.float32).reshape(-1))
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise StyleflowError(f"weights {source}: not in MatConvNet VGG layout ({exc})") from None
    if not layers:
        raise StyleflowError(f"weights {source}: the file holds no VGG19 conv layers")
    return Weights(layers, InputSpec(bgr=False, mean_rgb=mean_rgb), source=source)


def _mat_field(value, name: str):
    """Field `name` of a MATLAB struct as scipy.io.loadmat returns it (nested 1x1 arrays)."""
    value = np.asarray(value)
    while value.dtype.names is None and value.dtype == object and value.size == 1:
        value = np.asarray(value.ravel()[0])
    if value.dtype.names is None or name not in value.dtype.names:
        raise KeyError(name)
    return value.ravel()[0][name]
