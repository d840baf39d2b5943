"""styleflow: neural style transfer (Gatys et al.) on TensorFlow / Keras 3.

    import styleflow
    result = styleflow.transfer("photo.jpg", "painting.jpg", weights="lite", iterations=5)
    result.image.save("out.png")

For more than one image make a `styleflow.Stylizer` and reuse it. Importing the package is
cheap: TensorFlow is imported when the first of these names is used.
"""

from .errors import StyleflowError
from .hardware import prefer_onednn

prefer_onednn()  # before anything imports TensorFlow: it reads the setting once

__version__ = "0.2.0"
__all__ = ["Stylizer", "Run", "Result", "Iteration", "LossRecord", "StyleflowError", "transfer",
           "stylize", "__version__"]
_API = {"Stylizer", "Run", "Result", "Iteration", "LossRecord", "transfer", "stylize"}


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'styleflow' has no attribute {name!r}")
