"""VGG19's convolutional part as a Keras feature extractor, and the pixel conventions of its
weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ..errors import StyleflowError
from . import machine
from .layout import CONV_FILTERS, CONV_LAYERS, deepest, stages_to


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


CONVOLUTIONS = ("auto", "keras", "transposed", "winograd", "winograd-xla")


def build_extractor(layer_weights: Mapping[str, tuple[np.ndarray, np.ndarray]],
                    outputs: Sequence[str], pooling: str = "max", dtype: str = "float32",
                    convolution: str = "auto", fuse_pooling: bool = True):
    """A keras.Model mapping a (1, h, w, 3) image to {layer name: activations} for `outputs`.

    Only the layers up to the deepest output are built; each gets its (kernel, bias) from
    `layer_weights`. `pooling` is "max" or "avg", `dtype` "float32" or "bfloat16" (the
    Stylizer checks both before it builds). The model accepts any image size (each new size
    retraces once). `convolution`: "keras" for Keras' Conv2D, "transposed" for `frozen_conv`'s
    layers (oneDNN's input-gradient kernels), "winograd" for those with Winograd's algorithm
    from block1_conv2 on where it pays (`winograd.convolves`; "winograd-xla" with its tile
    transforms by XLA even where Numba's would run, and block1_conv2 direct), "auto" for
    "winograd" where `machine.transposed_convolutions` says, else Keras' (a benchmark's lever:
    the Stylizer always builds "auto").

    With `fuse_pooling` and Winograd's convolutions, a conv layer that is not among `outputs`
    and that max pooling follows also pools (`frozen_conv.make_layer`'s `pool`), and the
    pooling layer after it, keeping its name for the layers that look it up, passes its
    output through: pooled as the tiles are folded back, the layer's map is never made.
    `fuse_pooling=False` (a benchmark's lever) keeps every pooling a layer of its own."""
    import keras

    from . import frozen_conv
    from .pooling import MaxPool

    if convolution not in CONVOLUTIONS:  # a benchmark's lever, not a user's option
        raise ValueError(f"convolution: one of {CONVOLUTIONS}, not {convolution!r}")
    if convolution == "auto":
        convolution = "winograd" if machine.transposed_convolutions(dtype) else "keras"
    transposed = convolution in ("transposed", "winograd", "winograd-xla")
    last = deepest(outputs)
    pool_cls = keras.layers.MaxPooling2D if pooling == "max" else keras.layers.AveragePooling2D
    # oneDNN's max pooling without AVX-512 is the slower (pooling.py)
    xla_pooling = pooling == "max" and transposed and not machine.onednn_avx512()
    # bfloat16: weights stay float32, convolutions compute in bfloat16 (Keras' mixed policy).
    dtype = "mixed_bfloat16" if dtype == "bfloat16" else dtype
    inputs = keras.Input(shape=(None, None, 3), dtype="float32")
    x = inputs
    tensors = {}
    built = []
    stages = stages_to(last)

    def pool_layer(name):
        return (MaxPool(name=name, dtype=dtype) if xla_pooling
                else pool_cls(2, strides=2, name=name, dtype=dtype))

    pooled = False  # whether the conv layer before a pooling stage pooled already
    for k, stage in enumerate(stages):
        if not stage.conv:
            x = keras.layers.Identity(name=stage.name)(x) if pooled else pool_layer(stage.name)(x)
            continue
        name = stage.name
        pooled = (fuse_pooling and pooling == "max" and convolution == "winograd"
                  and name not in outputs and k + 1 < len(stages) and not stages[k + 1].conv)
        if transposed:
            x = frozen_conv.make_layer(*layer_weights[name], name,
                                       winograd=convolution.startswith("winograd"),
                                       transforms="xla" if convolution == "winograd-xla"
                                       else "auto",
                                       pool=pool_layer(f"{name}_pool") if pooled else None)(x)
        else:
            layer = keras.layers.Conv2D(stage.out_channels, 3, padding="same",
                                        activation="relu", name=name, dtype=dtype)
            x = layer(x)
            built.append(layer)
        tensors[name] = x
    model = keras.Model(inputs, {name: tensors[name] for name in outputs}, name="vgg19_features")
    for layer in built:
        kernel, bias = layer_weights[layer.name]
        layer.set_weights([kernel, bias])
    return model


def sub_extractor(extractor, outputs: Sequence[str]):
    """A keras.Model sharing `extractor`'s layers (a `build_extractor` model) that maps an
    image to {name: activations} for `outputs` only, running no stage past the deepest of
    them: a pass that wants the shallower layers does not pay for deeper ones. `extractor`
    itself when it outputs exactly these layers, or is any other callable."""
    import keras

    current = getattr(extractor, "output", None)
    if not isinstance(current, dict) or set(current) == set(outputs):
        return extractor
    return keras.Model(extractor.input, {name: extractor.get_layer(name).output
                                         for name in outputs}, name="vgg19_part")
