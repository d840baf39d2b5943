"""Defaults shared by the package and both CLIs, defined once (the CLIs show them in --help)."""

# Layers. The original layers need the full network; the shipped "lite" weights stop after
# block 3, where these layers give convincing results.
FULL_CONTENT_LAYER = "block5_conv2"
FULL_STYLE_LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1")
LITE_CONTENT_LAYER = "block3_conv2"
LITE_STYLE_LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1")
# neural_style.py (anishathalye/neural-style): relu4_2 and relu5_2 blended for content.
NS_CONTENT_LAYERS = ("block4_conv2", "block5_conv2")

DEFAULT_HEIGHT = 200  # neural_style_transfer.py's output height, as the original styleflow
