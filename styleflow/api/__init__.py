"""The API layer, the one door the front ends (and people's own code) come through: `Stylizer`
(stylizer.py) and the `Run`s it prepares (runs.py), their `Iteration`s and `Result`
(results.py), and the problems they optimise (problem.py, networks.py).

Importing it imports TensorFlow, with TensorFlow's own start-up log kept off the terminal.
"""

from ..model.runtime import quiet_tensorflow

quiet_tensorflow()  # before anything below imports TensorFlow

from ..errors import StyleflowError  # noqa: E402
from ..objective.terms import Parts  # noqa: E402
from ..optim.scales import Scale  # noqa: E402
from .results import Iteration, LossRecord, Result  # noqa: E402
from .runs import PhotoRun, Run, StylizeRun, TransferRun  # noqa: E402
from .stylizer import Stylizer, photo, stylize, transfer  # noqa: E402
from .video import VideoFrame, VideoResult, VideoRun  # noqa: E402

__all__ = ["Stylizer", "Run", "TransferRun", "StylizeRun", "PhotoRun", "Result", "Iteration",
           "LossRecord", "Parts", "Scale", "StyleflowError", "transfer", "stylize", "photo",
           "VideoRun", "VideoFrame", "VideoResult"]
