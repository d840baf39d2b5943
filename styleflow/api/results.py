"""What a run gives back: an `Iteration` as each finishes, the `Result` at the end, and the
loss of each iteration (`LossRecord`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..io import files, images
from ..objective.terms import Parts


@dataclass
class LossRecord:
    """One iteration's (L-BFGS) or step's (Adam) loss parts and the seconds it took."""

    iteration: int
    evaluations: int
    total: float
    content: float
    style: float
    tv: float
    seconds: float
    photo: float | None = None  # the photorealism term, for problems with one
    temporal: float | None = None  # a video frame's temporal term

    @property
    def parts(self) -> Parts:
        return Parts(self.total, self.content, self.style, self.tv, self.photo, self.temporal)


class Iteration:
    """What one iteration (L-BFGS) or step (Adam) produced, as the Run yields it.

    `iteration` counts from 1. `image` / `array` is the picture to show or save for it: the
    iterate for L-BFGS, the best image so far for Adam (as neural-style's checkpoints). Values
    that need a read from the device (`parts`, `best_loss`, the image) are fetched on first use.
    `stage`: which of a two-stage run's stages it belongs to (`PhotoRun`); 1 otherwise.
    """

    def __init__(self, iteration: int, iterations: int, evaluations: int, seconds: float,
                 parts: Callable[[], Parts], best_loss: Callable[[], float],
                 array: Callable[[], np.ndarray],
                 precise: Callable[[], np.ndarray] | None = None, stage: int = 1):
        self.iteration = iteration
        self.stage = stage  # a two-stage run's stage (photo); 1 otherwise
        self.iterations = iterations
        self.evaluations = evaluations
        self.seconds = seconds
        self._parts, self._best, self._array = parts, best_loss, array
        self._precise = precise
        self._cache: dict[str, object] = {}
        self.inputs: tuple = ()  # the run's input files, which save() refuses to replace

    def _once(self, key: str, make: Callable):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @property
    def parts(self) -> Parts:
        """This iteration's loss parts (Adam: of the image before the step)."""
        return self._once("parts", self._parts)

    @property
    def best_loss(self) -> float:
        """The lowest loss seen so far in the run."""
        return self._once("best", self._best)

    @property
    def array(self) -> np.ndarray:
        """The picture as uint8 RGB (h, w, 3)."""
        return self._once("array", self._array)

    @property
    def precise(self) -> np.ndarray:
        """The picture as float32 RGB on the 0..255 scale, before rounding (16-bit outputs)."""
        if self._precise is None:
            return self.array.astype(np.float32)
        return self._once("precise", self._precise)

    @property
    def image(self):
        """The picture as a PIL.Image."""
        from PIL import Image

        return Image.fromarray(self.array)

    def save(self, path, bit_depth: int = 8) -> None:
        """Write the picture atomically, as Result.save."""
        _save(path, self.array, lambda: self.precise, bit_depth, self.inputs)

    def __repr__(self) -> str:
        return (f"Iteration({self.iteration}/{self.iterations}, {self.evaluations} "
                f"evaluations, {self.seconds:.2f} s)")


def _save(path, array: np.ndarray, precise: Callable[[], np.ndarray], bit_depth: int,
          inputs: Sequence = ()) -> None:
    """Write a picture: 16 bits per channel from the unrounded values when the file gets them
    (.tif, or .png with bit_depth 16), else the uint8 picture. A path naming one of the run's
    `inputs` is refused (StyleflowError): inputs are never modified."""
    files.refuse_overwriting_inputs([path], list(inputs))
    if images.bit_depth_for(path, bit_depth) == 16:
        images.save_image(path, precise(), 16)
    else:
        images.save_image(path, array)


@dataclass(repr=False)
class Result:
    """A finished (or interrupted) run: the picture, its loss and the loss history."""

    array: np.ndarray
    parts: Parts
    losses: list[LossRecord] = field(default_factory=list)
    evaluations: int = 0
    interrupted: bool = False
    precise: np.ndarray | None = None  # float32 RGB 0..255 before rounding, for 16-bit files
    inputs: tuple = ()  # the run's input files, which save() refuses to replace

    @property
    def image(self):
        """The picture as a PIL.Image."""
        from PIL import Image

        return Image.fromarray(self.array)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return self.array.shape[0], self.array.shape[1]

    def __repr__(self) -> str:
        h, w = self.size
        n = len(self.losses)
        return (f"Result({w}x{h} px, loss {self.parts.total:.4e}, {n} "
                f"iteration{'' if n == 1 else 's'}, {self.evaluations} evaluations"
                f"{', interrupted' if self.interrupted else ''})")

    def save(self, path, bit_depth: int = 8) -> None:
        """Write the picture atomically with an sRGB profile; the format follows the
        extension (.png, .jpg, ...). .tif files get 16 bits per channel, and .png files too
        with bit_depth=16, from the optimised values before rounding."""
        _save(path, self.array,
              lambda: self.array.astype(np.float32) if self.precise is None else self.precise,
              bit_depth, self.inputs)
