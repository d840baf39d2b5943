"""The loss terms of neural style transfer (Gatys et al. 2015), in the two normalisations our
CLIs inherit: the Keras example's (``neural_style_transfer.py``) and anishathalye/neural-style's
(``neural_style.py``). All take TensorFlow tensors of shape (1, h, w, c)."""

from __future__ import annotations

import tensorflow as tf

from ..model.gradients import custom_gradient


def gram_matrix(features: tf.Tensor) -> tf.Tensor:
    """Unnormalised Gram matrix FᵀF (c x c) of a (1, h, w, c) activation map."""
    channels = tf.shape(features)[-1]
    flat = tf.reshape(features, (-1, channels))
    return flat_gram(flat)


@custom_gradient
def flat_gram(flat: tf.Tensor):
    """FᵀF of an (n, c) matrix. Its gradient is F(dG + dGᵀ), one (n x c)·(c x c) product;
    TensorFlow's own matmul gradient computes one per operand of FᵀF and adds them, twice the
    work."""
    gram = tf.matmul(flat, flat, transpose_a=True)

    def gradient(upstream):
        return tf.matmul(flat, upstream + tf.transpose(upstream))

    return gram, gradient


# --- Keras example normalisation (neural_style_transfer.py) ---

def content_loss_sum(features: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """Keras example: sum of squared differences between activations."""
    return tf.reduce_sum(tf.square(features - target))


# The Keras example normalises the style loss by the image's pixel count and 3 "channels" at
# every layer, not by the layer's own size (Gatys uses 4·N_l²·M_l²); we keep its constants so
# losses match it.
KERAS_STYLE_FACTOR = 4.0 * 9.0


def keras_style_norm(image_pixels):
    """The Keras example's style divisor 4 · 3² · (rows·cols)² for an image of `image_pixels`
    pixels: a float64 tensor for a tensor (the size of a traced image), a float for a number."""
    if isinstance(image_pixels, (int, float)):
        return KERAS_STYLE_FACTOR * float(image_pixels) ** 2
    # float64 for the product: (rows·cols)² passes float32's exact integers at 4096 px.
    return KERAS_STYLE_FACTOR * tf.square(tf.cast(image_pixels, tf.float64))


def style_loss_keras(gram: tf.Tensor, target_gram: tf.Tensor, image_pixels) -> tf.Tensor:
    """Keras example: Σ(G − A)² / (4 · 3² · (rows·cols)²) (`keras_style_norm`); `image_pixels`
    may be a number or a tensor."""
    scale = keras_style_norm(tf.convert_to_tensor(image_pixels))
    return tf.reduce_sum(tf.square(gram - target_gram)) / tf.cast(scale, gram.dtype)


@custom_gradient
def total_variation_keras(image: tf.Tensor):
    """Keras example: Σ (Δy² + Δx²)^1.25 over each pixel's down and right neighbours.

    Its gradient is written out (each difference's share padded back into place): TensorFlow's
    own, three strided-slice gradients, took 2.2-2.5x as long (bench/total_variation.py)."""
    corner = image[:, :-1, :-1, :]
    down = corner - image[:, 1:, :-1, :]
    right = corner - image[:, :-1, 1:, :]
    energy = tf.square(down) + tf.square(right)
    # energy^0.25 as two square roots: TensorFlow's pow is a scalar loop on CPUs, and took
    # 4 of the 5 ms this term cost at 400x300 (bench/total_variation.py).
    quarter = tf.sqrt(tf.sqrt(energy))

    def gradient(upstream):
        # d/d(difference) of energy^1.25 = 2.5 · energy^0.25 · difference
        scale = (2.5 * upstream) * quarter
        by_down, by_right = scale * down, scale * right
        return (tf.pad(by_down + by_right, [[0, 0], [0, 1], [0, 1], [0, 0]])
                - tf.pad(by_down, [[0, 0], [1, 0], [0, 1], [0, 0]])
                - tf.pad(by_right, [[0, 0], [0, 1], [1, 0], [0, 0]]))

    return tf.reduce_sum(energy * quarter), gradient


# --- anishathalye/neural-style normalisation (neural_style.py) ---

def content_loss_mean(features: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """neural-style: 2·l2(F − P)/size(P), i.e. the mean squared difference."""
    return tf.reduce_mean(tf.square(features - target))


def gram_matrix_mean(features: tf.Tensor) -> tf.Tensor:
    """neural-style: FᵀF / size(F), a Gram matrix that does not grow with the image."""
    return gram_matrix(features) / tf.cast(tf.size(features), features.dtype)


def style_loss_mean(gram: tf.Tensor, target_gram: tf.Tensor) -> tf.Tensor:
    """neural-style: 2·l2(G − A)/size(A), i.e. the mean squared Gram difference."""
    return tf.reduce_mean(tf.square(gram - target_gram))


def total_variation_mean(image: tf.Tensor) -> tf.Tensor:
    """neural-style: squared down and right differences, each averaged over its count."""
    dy = image[:, 1:, :, :] - image[:, :-1, :, :]
    dx = image[:, :, 1:, :] - image[:, :, :-1, :]
    return tf.reduce_mean(tf.square(dy)) + tf.reduce_mean(tf.square(dx))


def temporal_loss(image: tf.Tensor, warped: tf.Tensor, weights: tf.Tensor,
                  mean: bool) -> tf.Tensor:
    """Ruder et al.'s short-term temporal loss Σ c·(x − ω)² of `image` against the previous
    output warped onto it (`warped`), per-pixel weights `weights` (1, h, w, 1); averaged over
    the h·w·3 values when `mean` (neural-style's normalisation), else summed (the Keras
    example's, like its total variation)."""
    energy = tf.reduce_sum(weights * tf.square(image - warped))
    if not mean:
        return energy
    return energy / tf.cast(tf.size(image), tf.float32)


def total_variation_mean_rows(strip: tf.Tensor, rows, height: int, width: int) -> tf.Tensor:
    """neural-style's total variation of `rows` rows of a height x width image, as their share
    of `total_variation_mean`: `strip` holds those rows and the row below them when there is
    one; each sum is divided by the whole image's count, so the shares add up to the whole."""
    dy = tf.reduce_sum(tf.square(strip[:, 1:] - strip[:, :-1]))
    own = strip[:, :rows]
    dx = tf.reduce_sum(tf.square(own[:, :, 1:] - own[:, :, :-1]))
    return dy / float((height - 1) * width * 3) + dx / float(height * (width - 1) * 3)


# --- guided Gram matrices (masks): neural-style's normalisation within each region ---

def region_gram(flat: tf.Tensor, guide: tf.Tensor) -> tf.Tensor:
    """The Gram matrix of (n, c) features weighted by one region's (n, 1) guide, divided by
    c·Σ guide²: neural-style's mean Gram taken within the region (for a guide of ones, exactly
    `gram_matrix_mean`), so regions of any area and soft guides of any level compare alike."""
    weighted = flat * guide
    norm = tf.cast(tf.shape(flat)[-1], flat.dtype) * tf.reduce_sum(tf.square(guide))
    # A region that has vanished at this layer weighs nothing; guard the division.
    return flat_gram(weighted) / tf.maximum(norm, 1e-12)


def guided_style_loss(features: tf.Tensor, guides: tf.Tensor, target_grams: tf.Tensor,
                      region_weights: tf.Tensor) -> tf.Tensor:
    """Σ_r w_r · mean((G_r − A_r)²) over the R regions of `guides` (1, h, w, R): the
    augmented style loss of Luan et al. 2017 and the guided Gram loss of Gatys et al. 2017,
    with `target_grams` (R, c, c) and `region_weights` (R,)."""
    channels = tf.shape(features)[-1]
    flat = tf.reshape(features, (-1, channels))
    regions = guides.shape[-1]  # static: guides are traced per shape
    guide_flat = tf.reshape(guides, (-1, regions))
    loss = tf.constant(0.0)
    for r in range(regions):
        gram = region_gram(flat, guide_flat[:, r:r + 1])
        loss += region_weights[r] * style_loss_mean(gram, target_grams[r])
    return loss
