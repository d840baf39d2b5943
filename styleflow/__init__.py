"""styleflow: neural style transfer (Gatys et al.) and photorealistic style transfer (Luan et
al.) on TensorFlow / Keras 3.

    import styleflow
    result = styleflow.transfer("photo.jpg", "painting.jpg", weights="lite", iterations=5)
    result.save("out/photo.png")

For more than one image make a `styleflow.Stylizer` and reuse it. Importing the package is
cheap: TensorFlow is imported when the first of these names is used. The package is built in
layers (docs/architecture.md): front ends `cli`, `batch` -> `api` -> `plan`, `optim` ->
`objective`, `report` -> `model`, `io` -> `defaults`, `errors`, `system`.
"""

from .errors import StyleflowError
from .model.runtime import one_op_at_a_time, prefer_onednn
from .model.xla_cache import share_compilations

# Before anything imports TensorFlow: it reads these settings once.
prefer_onednn()
one_op_at_a_time()
share_compilations()

__version__ = "0.3.0"
__all__ = ["Stylizer", "Run", "Result", "Iteration", "LossRecord", "StyleflowError", "transfer",
           "stylize", "photo", "__version__"]
_API = {"Stylizer", "Run", "Result", "Iteration", "LossRecord", "transfer", "stylize", "photo"}


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'styleflow' has no attribute {name!r}")
