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
(`machine.transposed_convolutions`; docs/performance.md has the measurements).

The deeper layers' larger maps do fewer products still by Winograd's algorithm (`winograd.py`),
which these layers hand them to when built with `winograd=True`.
"""

from __future__ import annotations

import numpy as np


def make_layer(kernel: np.ndarray, bias: np.ndarray, name: str, winograd: bool = False):
    """A Keras layer computing relu(conv3x3_same(x, kernel) + bias) by input-gradient ops;
    `kernel` is Keras' (3, 3, in, out) layout. Kernel and bias are the layer's two
    (non-trainable) weights, as in Keras' Conv2D, so get/set/save/load_weights work alike.
    With `winograd`, maps and channel counts where `winograd.suits` are convolved by Winograd's
    algorithm instead (both ways)."""
    import keras
    import tensorflow as tf

    from . import winograd as fast

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
            # Deeper layers convolve large maps by Winograd (see winograd.py); what it keeps
            # is not a Keras weight, so the layer's weights stay kernel and bias.
            self._winograd = (fast.WinogradConv()
                              if winograd and fast.suits_channels(*kernel.shape[2:]) else None)

        def call(self, x):
            if self._winograd is not None and fast.suits(x.shape):
                return self._winograd(x, self.kernel, tf.convert_to_tensor(self.bias))
            k = tf.convert_to_tensor(self.kernel)
            # The mirrored kernel with in/out swapped: its input gradient is our forward pass
            # (derived per call from the weights so set/load_weights cannot leave it stale).
            mirrored = tf.transpose(tf.reverse(k, [0, 1]), (0, 1, 3, 2))
            return tf.nn.relu(_convolve(x, k, mirrored) + self.bias)

        def compute_output_shape(self, input_shape):
            return (*input_shape[:3], kernel.shape[3])

    return FrozenConv2D()


def _convolve(x, kernel, mirrored):
    import tensorflow as tf

    from .gradients import custom_gradient

    @custom_gradient
    def forward(x):
        shape = tf.concat([tf.shape(x)[:3], tf.shape(kernel)[3:]], 0)
        y = tf.nn.conv2d_transpose(x, mirrored, shape, 1, "SAME")
        y.set_shape([*x.shape[:3], kernel.shape[3]])

        def backward(dy):
            return tf.nn.conv2d_transpose(dy, kernel, tf.shape(x), 1, "SAME")

        return y, backward

    return forward(x)
