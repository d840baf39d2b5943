"""VGG19's convolutional part as a Keras feature extractor, and its input conventions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from .errors import StyleflowError

# VGG19 without its top, in Keras' layer names: (name, filters), None marks a 2x2 pooling.
VGG19_LAYOUT: tuple = (
    ("block1_conv1", 64), ("block1_conv2", 64), None,
    ("block2_conv1", 128), ("block2_conv2", 128), None,
    ("block3_conv1", 256), ("block3_conv2", 256), ("block3_conv3", 256), ("block3_conv4", 256), None,
    ("block4_conv1", 512), ("block4_conv2", 512), ("block4_conv3", 512), ("block4_conv4", 512), None,
    ("block5_conv1", 512), ("block5_conv2", 512), ("block5_conv3", 512), ("block5_conv4", 512), None,
)
CONV_LAYERS: tuple[str, ...] = tuple(entry[0] for entry in VGG19_LAYOUT if entry)
CONV_FILTERS: dict[str, int] = {entry[0]: entry[1] for entry in VGG19_LAYOUT if entry}


@dataclass(frozen=True)
class InputSpec:
    """How a weights file expects pixels: channel order and the mean subtracted from each."""

    bgr: bool
    mean_rgb: tuple[float, float, float]

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        """uint8/float RGB (h, w, 3) -> float32 network input (1, h, w, 3)."""
        x = np.asarray(rgb, dtype=np.float32) - np.asarray(self.mean_rgb, dtype=np.float32)
        if self.bgr:
            x = x[..., ::-1]
        return np.ascontiguousarray(x[None])

    def deprocess(self, x: np.ndarray) -> np.ndarray:
        """Network-space image (1, h, w, 3) or (h, w, 3) -> uint8 RGB, clipped to 0..255."""
        return np.rint(self.deprocess_float(x)).astype(np.uint8)

    def deprocess_float(self, x: np.ndarray) -> np.ndarray:
        """Network-space image -> float32 RGB on the 0..255 scale, clipped, not rounded (for
        16-bit outputs)."""
        x = np.asarray(x, dtype=np.float32).reshape(np.shape(x)[-3:])
        if self.bgr:
            x = x[..., ::-1]
        x = x + np.asarray(self.mean_rgb, dtype=np.float32)
        return np.clip(x, 0, 255)

    def pixel_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel (low, high) in network space that map to displayable 0..255 pixels."""
        mean = np.asarray(self.mean_rgb, dtype=np.float32)
        if self.bgr:
            mean = mean[::-1]
        return -mean, 255.0 - mean


# Keras applications' VGG19 ("caffe" mode): BGR with the ImageNet mean subtracted.
KERAS_INPUT = InputSpec(bgr=True, mean_rgb=(123.68, 116.779, 103.939))


def check_layers(names: Sequence[str], what: str) -> None:
    """Raise StyleflowError for any name that is not a VGG19 conv layer."""
    for name in names:
        if name not in CONV_FILTERS:
            raise StyleflowError(
                f"{what}: unknown layer '{name}'; choose from {', '.join(CONV_LAYERS)}")


def deepest(names: Sequence[str]) -> str:
    """The layer among `names` that comes last in VGG19."""
    return max(names, key=CONV_LAYERS.index)


def conv_maps(size: tuple[int, int], last: str | None = None):
    """(name, h, w, in channels, out channels) of each conv layer for an (h, w) image, up to
    `last` (all 16 without it): the map each one reads and writes."""
    h, w = size
    channels = 3
    for entry in VGG19_LAYOUT:
        if entry is None:
            h, w = h // 2, w // 2
            continue
        name, filters = entry
        yield name, h, w, channels, filters
        channels = filters
        if name == last:
            return


def min_image_side(layer_names: Sequence[str]) -> int:
    """Smallest image side for which every named layer still has at least one pixel."""
    last = CONV_LAYERS.index(deepest(layer_names))
    pools = 0
    for entry in VGG19_LAYOUT:
        if entry is None:
            pools += 1
        elif entry[0] == CONV_LAYERS[last]:
            break
    return 2 ** pools


CONVOLUTIONS = ("auto", "keras", "transposed", "winograd")


def build_extractor(layer_weights: Mapping[str, tuple[np.ndarray, np.ndarray]],
                    outputs: Sequence[str], pooling: str = "max", dtype: str = "float32",
                    convolution: str = "auto"):
    """A keras.Model mapping a (1, h, w, 3) image to {layer name: activations} for `outputs`.

    Only the layers up to the deepest output are built; each gets its (kernel, bias) from
    `layer_weights`. The model accepts any image size (each new size retraces once).
    `convolution`: "keras" for Keras' Conv2D, "transposed" for `frozen_conv`'s layers (oneDNN's
    input-gradient kernels), "winograd" for those with Winograd's algorithm in the deeper layers
    (`winograd.suits`), "auto" for the last where `frozen_conv.use_transposed` says, else Keras'.
    """
    import keras

    from . import frozen_conv

    if convolution not in CONVOLUTIONS:
        raise ValueError(f"convolution: one of {CONVOLUTIONS}, not {convolution!r}")
    if convolution == "auto":
        convolution = "winograd" if frozen_conv.use_transposed(dtype) else "keras"
    transposed = convolution in ("transposed", "winograd")

    if pooling not in ("max", "avg"):
        raise StyleflowError(f"--pooling: must be 'max' or 'avg', not '{pooling}'")
    last = deepest(outputs)
    pool_cls = keras.layers.MaxPooling2D if pooling == "max" else keras.layers.AveragePooling2D
    if dtype not in ("float32", "bfloat16"):
        raise StyleflowError(f"--precision: must be float32 or bfloat16, not '{dtype}'")
    # bfloat16: weights stay float32, convolutions compute in bfloat16 (Keras' mixed policy).
    dtype = "mixed_bfloat16" if dtype == "bfloat16" else dtype
    inputs = keras.Input(shape=(None, None, 3), dtype="float32")
    x = inputs
    tensors = {}
    built = []
    for i, entry in enumerate(VGG19_LAYOUT):
        if entry is None:
            x = pool_cls(2, strides=2, name=f"block{sum(e is None for e in VGG19_LAYOUT[:i]) + 1}_pool",
                         dtype=dtype)(x)
            continue
        name, filters = entry
        if transposed:
            x = frozen_conv.make_layer(*layer_weights[name], name,
                                       winograd=convolution == "winograd")(x)
        else:
            layer = keras.layers.Conv2D(filters, 3, padding="same", activation="relu",
                                        name=name, dtype=dtype)
            x = layer(x)
            built.append(layer)
        tensors[name] = x
        if name == last:
            break
    model = keras.Model(inputs, {name: tensors[name] for name in outputs}, name="vgg19_features")
    for layer in built:
        kernel, bias = layer_weights[layer.name]
        layer.set_weights([kernel, bias])
    return model
