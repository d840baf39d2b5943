"""VGG19's 3x3 convolutions with frozen weights, computed by oneDNN's input-gradient kernel.

Style transfer never trains the network, so a convolution may be computed by whichever oneDNN
kernel is fastest, weight gradients aside. TensorFlow hands oneDNN its forward convolutions in a
form that, on a CPU without AVX-512, only oneDNN's im2col + GEMM path accepts: slower than
oneDNN's brgemm kernels there, and falling back to a far slower reference loop above a
scratch limit (`machine.GEMM_SCRATCH_VALUES`). The input gradient of a convolution *is* a
convolution (with the kernel mirrored and its channels swapped), and TensorFlow runs that op on
brgemm kernels everywhere. So the forward pass is written as the input gradient of the mirrored
kernel, and its own gradient as the input gradient of the original one: the same arithmetic,
brgemm both ways, no scratch limit. Where this pays is a fact of the machine
(`machine.transposed_convolutions`; docs/performance.md has the measurements). Where oneDNN's
forward kernels are not the GEMM path (AVX-512), the forward pass is TensorFlow's own
convolution after all, because its graph optimiser fuses it with the bias and ReLU into one
oneDNN operation; elsewhere bias and ReLU are one XLA pass after it. The 3-channel input
gradient of block1_conv1 is a matrix product and shifted sums (one XLA pass), which fill a
CPU's vector lanes better than a convolution with 3 outputs.

From block1_conv2 on, large maps take fewer products still by Winograd's algorithm
(`winograd.py`), which these layers hand them to when built with `winograd=True`.
"""

from __future__ import annotations

import numpy as np


def make_layer(kernel: np.ndarray, bias: np.ndarray, name: str, winograd: bool = False,
               transforms: str = "auto", pool=None):
    """A Keras layer computing relu(conv3x3_same(x, kernel) + bias) by input-gradient ops;
    `kernel` is Keras' (3, 3, in, out) layout. Kernel and bias are the layer's two
    (non-trainable) weights, as in Keras' Conv2D, so get/set/save/load_weights work alike.
    With `winograd`, maps and channel counts where `winograd.convolves` are convolved by
    Winograd's algorithm instead (both ways), its tile transforms as `transforms` says
    (`winograd.WinogradConv`). With `pool` (a Keras 2x2 max pooling layer), the layer's
    output is that pooling's of the convolution's: in one pass with it where the map is
    convolved by Winograd with Numba's transforms (`WinogradConv.pooled`), else by `pool`."""
    import keras
    import tensorflow as tf

    from . import machine, winograd as fast

    kernel = np.asarray(kernel, np.float32)
    bias = np.asarray(bias, np.float32)

    class FrozenConv2D(keras.layers.Layer):
        """A frozen 3x3 'same' convolution with bias and ReLU (see the module's docstring)."""

        def __init__(self):
            super().__init__(name=name, trainable=False)
            self.kernel = self.add_weight(shape=kernel.shape, name="kernel", trainable=False,
                                          initializer=keras.initializers.Constant(kernel))
            self.bias = self.add_weight(shape=bias.shape, name="bias", trainable=False,
                                        initializer=keras.initializers.Constant(bias))
            # Layers from block1_conv2 on convolve large maps by Winograd (see winograd.py);
            # what it keeps is not a Keras weight, so the layer's weights stay kernel and bias.
            self._winograd = (fast.WinogradConv(transforms) if winograd and (
                fast.suits_channels(*kernel.shape[2:]) or fast.narrow(*kernel.shape[2:]))
                else None)
            # Where oneDNN's forward kernels are not im2col + GEMM, the forward pass is
            # TensorFlow's Conv2D, BiasAdd and ReLU, which its graph optimiser fuses into one
            # oneDNN operation: bit-identical, and 2.6 against 5.8 ms for block1_conv1 at
            # 400x300 (docs/performance.md).
            self._fused = not machine.onednn_convolves_by_gemm()
            self._pool = pool

        def build(self, input_shape):
            if self._pool is not None:  # weightless, but Keras builds what a layer holds
                self._pool.build((*input_shape[:3], kernel.shape[3]))

        def call(self, x):
            if self._pool is None:
                return self._convolve(x)
            if self._winograd is not None and self._winograd.pools(x, self.kernel):
                return self._winograd.pooled(x, self.kernel, tf.convert_to_tensor(self.bias))
            return self._pool(self._convolve(x))

        def _convolve(self, x):
            if self._winograd is not None and self._winograd.takes(x, kernel.shape[3]):
                return self._winograd(x, self.kernel, tf.convert_to_tensor(self.bias))
            k = tf.convert_to_tensor(self.kernel)
            if self._fused:
                return _convolve_fused(x, k, tf.convert_to_tensor(self.bias))
            # The mirrored kernel with in/out swapped: its input gradient is our forward pass
            # (derived per call from the weights so set/load_weights cannot leave it stale).
            mirrored = tf.transpose(tf.reverse(k, [0, 1]), (0, 1, 3, 2))
            return _convolve(x, k, mirrored, tf.convert_to_tensor(self.bias))

        def compute_output_shape(self, input_shape):
            shape = (*input_shape[:3], kernel.shape[3])
            return shape if self._pool is None else self._pool.compute_output_shape(shape)

    return FrozenConv2D()


def _convolve_fused(x, kernel, bias):
    """relu(conv3x3_same(x, kernel) + bias) as ops TensorFlow fuses into one; the gradient
    with respect to x by the input-gradient kernel, as `_convolve`'s."""
    import tensorflow as tf

    from .gradients import custom_gradient

    @custom_gradient
    def forward(x):
        y = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, kernel, 1, "SAME"), bias))

        def backward(dy):
            return _input_gradient(tf.raw_ops.ReluGrad(gradients=dy, features=y), kernel,
                                   tf.shape(x))

        return y, backward

    return forward(x)


def _convolve(x, kernel, mirrored, bias):
    """relu(conv3x3_same(x, kernel) + bias) by input-gradient ops both ways (`mirrored` is the
    kernel mirrored with in/out swapped); bias and ReLU in one pass (`_compiled`)."""
    import tensorflow as tf

    from .gradients import custom_gradient

    @custom_gradient
    def forward(x):
        shape = tf.concat([tf.shape(x)[:3], tf.shape(kernel)[3:]], 0)
        y = _compiled("bias_relu", x.dtype)(tf.nn.conv2d_transpose(x, mirrored, shape, 1, "SAME"),
                                            bias)
        y.set_shape([*x.shape[:3], kernel.shape[3]])

        def backward(dy):
            return _input_gradient(tf.raw_ops.ReluGrad(gradients=dy, features=y), kernel,
                                   tf.shape(x))

        return y, backward

    return forward(x)


# block1_conv1's input gradient has 3 channels, which oneDNN's kernels spread poorly over a
# CPU's vector lanes: as one matrix product and nine shifted sums it takes less time
# (12.5 -> 8.0 ms at 400x300 with AVX-512, 10.0 -> 8.6 capped at AVX2, and about 2.5 ms less
# since the sums are one XLA pass; docs/performance.md).
FEW_CHANNELS = 4


def _input_gradient(dy, kernel, shape):
    """The gradient with respect to a convolution's input of `shape`, given its output's `dy`:
    by `_few_channel_gradient` for few input channels, else oneDNN's input-gradient kernel."""
    import tensorflow as tf

    if kernel.shape[2] <= FEW_CHANNELS:
        return _few_channel_gradient(dy, kernel)
    return tf.nn.conv2d_transpose(dy, kernel, shape, 1, "SAME")


def _few_channel_gradient(dy, kernel):
    """The input gradient of a 3x3 'same' convolution with few input channels: each pixel's
    share of every kernel tap at once, (h·w, out) x (out, 9·in), then each tap's share
    shifted into place and summed."""
    import tensorflow as tf

    _, h, w, out = tf.unstack(tf.shape(dy))
    cin = kernel.shape[2]
    taps = tf.reshape(tf.transpose(kernel, (3, 0, 1, 2)), (-1, 9 * cin))  # (out, 9·in)
    shares = tf.reshape(tf.matmul(tf.reshape(dy, (h * w, out)), taps), (h, w, 3, 3, cin))
    dx = _compiled("shifted_sum", dy.dtype)(shares)
    dx.set_shape((1, *dy.shape[1:3], cin))
    return dx


def _shifted_sum(shares):
    """(h, w, 3, 3, in) shares of each pixel's taps -> the (1, h, w, in) input gradient."""
    import tensorflow as tf

    h, w = tf.shape(shares)[0], tf.shape(shares)[1]
    # Tap (i, j) of the output pixel at (y, x) reaches input pixel (y + i - 1, x + j - 1):
    # each tap's share moved by one pixel at most.
    total = None
    for i in range(3):
        for j in range(3):
            di, dj = 1 - i, 1 - j
            part = tf.pad(shares[max(di, 0):h + min(di, 0), max(dj, 0):w + min(dj, 0), i, j],
                          [[max(-di, 0), max(di, 0)], [max(-dj, 0), max(dj, 0)], [0, 0]])
            total = part if total is None else total + part
    return total[None]


def _bias_relu(z, bias):
    import tensorflow as tf

    return tf.nn.relu(z + bias)


# The element-wise passes around the direct convolutions, XLA-compiled (`xla_functions`): XLA
# makes each one pass over memory where TensorFlow's ops make several. Bias and ReLU: 3.1-3.6
# against 1.9 ms for block1_conv2 at 400x300 under the AVX2 cap (with AVX-512 TensorFlow fuses
# them into the convolution, `_convolve_fused`); block1_conv1's shifted sums: 7.2 against 5.0 ms
# at 400x300, 30 against 16 ms at 800x600 (docs/performance.md, stop 43).
def _compiled(kind: str, dtype):
    import tensorflow as tf

    from .xla_functions import xla_function

    if kind == "bias_relu":
        return xla_function(_bias_relu, tf.TensorSpec((1, None, None, None), dtype),
                            tf.TensorSpec((None,), dtype))
    return xla_function(_shifted_sum, tf.TensorSpec((None, None, 3, 3, None), dtype))
