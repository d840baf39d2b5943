"""Defaults and choices shared by the package and its command lines, defined once (the command
lines show them in --help)."""

# Layers. The original layers need the full network; the shipped "lite" weights stop after
# block 3, where these layers give convincing results.
FULL_CONTENT_LAYER = "block5_conv2"
FULL_STYLE_LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1")
LITE_CONTENT_LAYER = "block3_conv2"
LITE_STYLE_LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1")
# neural_style.py (anishathalye/neural-style): relu4_2 and relu5_2 blended for content.
NS_CONTENT_LAYERS = ("block4_conv2", "block5_conv2")

# The full network's ImageNet weights as Keras publishes them, and the names the weights
# option takes besides a file path.
IMAGENET_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
WEIGHT_CHOICES = ("auto", "imagenet", "lite", "random")

# The engine computes in float32: a weight or step beyond its largest number is infinite there
# (and a loss or image of NaN follows), so the API and the web form refuse one.
FLOAT32_MAX = 3.4028234663852886e38

DEFAULT_HEIGHT = 200  # neural_style_transfer.py's output height, as the original styleflow

# neural_style_transfer.py / Stylizer.transfer: the Keras example's settings.
TRANSFER_DEFAULTS = dict(iterations=10, content_weight=0.025, style_weight=1.0, tv_weight=1.0)
# The original's fmin_l_bfgs_b(maxfun=20): an L-BFGS "iteration" is 20 loss evaluations.
EVALUATIONS_PER_ITERATION = 20
# L-BFGS's correction pairs (scipy's maxcor): scipy's default and the Keras example's; a memory
# budget may shorten it (plan.budget).
LBFGS_HISTORY = 10
# neural_style.py / Stylizer.stylize: anishathalye/neural-style's defaults, as the original
# styleflow port used them.
STYLIZE_DEFAULTS = dict(iterations=1000, content_weight=5.0, content_weight_blend=1.0,
                        style_weight=100.0, style_layer_weight_exp=1.0, tv_weight=100.0,
                        learning_rate=10.0, beta1=0.9, beta2=0.999, epsilon=1e-8)

# styleflow photo / Stylizer.photo: Luan et al.'s Deep Photo Style Transfer, with its loss
# weights (content relu4_2 x5, style x100, the photorealism term's lambda 1e4 on 0..1 pixels)
# in neural-style's normalisation, which is the one that paper's code inherits. `width`: the
# output's default width in pixels. Its total variation is far weaker than neural-style's: the
# photorealism term already keeps the output smooth where the content is. `stages`: the paper's
# two (the first half of the iterations without the photorealism term, the rest with it), which
# bench/photo.py --two-stage measured better than one (docs/photo.md).
PHOTO_DEFAULTS = dict(iterations=10, width=512, content_weight=5.0, style_weight=100.0,
                      tv_weight=1e-3, photorealism=1e4, stages=2)
PHOTO_CONTENT_LAYERS = ("block4_conv2",)

# Compiled functions (the loss, the Adam step, tiled passes, Winograd's transforms) are kept
# for this many recent image sizes, least recently used dropped first: a batch, a Ray actor or
# a server that sees many sizes holds what this many take, not more; coarse-to-fine runs use up
# to a handful of sizes each.
SIZES_KEPT = 8

# The Stylizer's engine choices.
POOLINGS = ("max", "avg")
PRECISIONS = ("auto", "float32", "bfloat16")  # "auto": bfloat16 where the hardware runs it
JIT_MODES = ("auto", "on", "off")  # XLA: timed per size, always, never

TEMPORAL_LBFGS = 1.0
TEMPORAL_ADAM = 200.0
# styleflow video / Stylizer.video (Ruder et al. 2016): per method, the first frame's iterations
# (L-BFGS iterations of EVALUATIONS_PER_ITERATION evaluations, or Adam steps) and the weight of
# the temporal term: a sum over pixels in the Keras example's normalisation (lbfgs), a mean in
# neural-style's (adam). The weights were chosen with bench/video.py (docs/video.md).
VIDEO_METHODS = ("lbfgs", "adam")
VIDEO_DEFAULTS = {"lbfgs": dict(iterations=10, temporal_weight=TEMPORAL_LBFGS),
                  "adam": dict(iterations=500, temporal_weight=TEMPORAL_ADAM)}
