"""Doing one pair of a batch: a Stylizer kept for the whole batch, the pair's image written
atomically, and a status record — never an exception for a bad pair, so one bad pair never
stops the batch. Plain Python: the local engine runs it in a worker process, the Ray engine in
an actor."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import StyleflowError, explained, os_reason
from ..io import files, images
from .jobs import Pair, iteration_name, pair_inputs, written

METHODS = ("lbfgs", "adam", "photo")


@dataclass(frozen=True)
class Settings:
    """What every pair of a batch shares: the method and the network it runs on."""

    method: str = "lbfgs"
    weights: str = "auto"
    precision: str = "float32"
    pooling: str = "max"
    seed: int | None = None
    iteration_images: bool = False
    jit: str = "auto"
    bit_depth: int = 8  # of PNG outputs (.tif ones always get 16)
    # (parameter, flag) pairs: how the method's command names the library's parameters, so a
    # failed pair's message names the options the batch was given.
    names: tuple = ()


def one_line(text: str) -> str:
    return " ".join(str(text).split())


class PairWorker:
    """Runs pairs one after another on one Stylizer (network loaded once, loss traced once
    per size). `notes` receives one-line notes such as the weights fallback."""

    def __init__(self, settings: Settings, notes: Callable[[str], None] | None = None):
        if settings.method not in METHODS:
            raise StyleflowError(f"--method: must be one of {', '.join(METHODS)}, not "
                                 f"'{settings.method}'")
        self.settings = settings
        self.notes = notes
        self._stylizer = None

    @property
    def loaded(self) -> bool:
        """Whether the network is loaded (the first pair that got that far loaded it)."""
        return self._stylizer is not None

    @property
    def stylizer(self):
        if self._stylizer is None:
            from ..api import Stylizer

            # An explicit seed promises repeatable files: deterministic kernels (GPU) too.
            self._stylizer = Stylizer(self.settings.weights, precision=self.settings.precision,
                                      pooling=self.settings.pooling, seed=self.settings.seed,
                                      deterministic=self.settings.seed is not None,
                                      jit=self.settings.jit, notes=self.notes)
        return self._stylizer

    def run(self, pair: Pair,
            on_progress: Callable[[int, int], None] | None = None) -> dict:
        """Do `pair`; return its status record (status done or failed, seconds, final loss,
        error). KeyboardInterrupt propagates, leaving no file for the pair."""
        began = time.perf_counter()
        names = dict(self.settings.names)
        try:
            loss = self._run(pair, on_progress)
        except StyleflowError as exc:
            return record(pair, "failed", began, error=one_line(exc.worded(names)))
        except KeyboardInterrupt:
            raise
        except OSError as exc:  # the system refused a file no one worded
            where = f"'{exc.filename}': " if exc.filename is not None else ""
            return record(pair, "failed", began, error=one_line(f"{where}{os_reason(exc)}"))
        except Exception as exc:  # an unexpected error fails this pair, not the batch
            exhausted = explained(exc)
            if exhausted is not None:
                return record(pair, "failed", began, error=exhausted.worded(names))
            return record(pair, "failed", began,
                          error=one_line(f"internal error: {type(exc).__name__}: {exc}")[:500])
        return record(pair, "done", began, loss=loss)

    def _run(self, pair: Pair, on_progress) -> float:
        if pair.error:
            raise StyleflowError(pair.error)
        output = Path(pair.output)
        images.check_image_extension(output, "output")
        options = dict(pair.options)
        files.refuse_overwriting_inputs(written(pair, self.settings.iteration_images),
                                        pair_inputs(pair))
        files.prepare_output_dir(output, "output")
        if self.settings.method == "lbfgs":
            run = self.stylizer.iter_transfer(pair.content, pair.style, **options)
        elif self.settings.method == "photo":
            run = self.stylizer.iter_photo(pair.content, pair.style, **options)
        else:
            run = self.stylizer.iter_stylize(pair.content, [pair.style], **options)
        for it in run:
            if self.settings.iteration_images:
                it.save(iteration_name(output, it.iteration - 1), self.settings.bit_depth)
            if on_progress is not None:
                on_progress(it.iteration, it.iterations)
        result = run.result()
        result.save(output, self.settings.bit_depth)
        return float(result.parts.total)


def record(pair: Pair, status: str, began: float | None = None, loss: float | None = None,
           error: str | None = None) -> dict:
    """A status-log record for `pair`."""
    seconds = 0.0 if began is None else round(time.perf_counter() - began, 3)
    return {**pair.describe(), "status": status, "seconds": seconds, "loss": loss,
            "error": error}
