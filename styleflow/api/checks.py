"""The API's checks of its arguments, before any work: each wrong value is a StyleflowError in
the library's words (the command lines' argument types refuse the same values), never
Python's TypeError or ValueError from deep inside."""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import numbers

import numpy

from ..defaults import FLOAT32_MAX
from ..errors import StyleflowError

# Options people bring from the command lines, by the API's name for them; and the options
# that belong to the Stylizer (the network it loads), not to one run.
CLI_NAMES = {"iter": "iterations"}
STYLIZER_OPTIONS = {"weights": "weights", "network": "weights", "precision": "precision",
                    "pooling": "pooling", "jit": "jit", "deterministic": "deterministic"}


def check_options(where: str, method, options: dict) -> None:
    """StyleflowError naming `where` for a keyword `method` does not take, with the option
    meant when it can be told (a command line's name, or a near spelling)."""
    known = [name for name, p in inspect.signature(method).parameters.items()
             if p.kind is inspect.Parameter.KEYWORD_ONLY]
    for name in options:
        if name in known:
            continue
        if name in STYLIZER_OPTIONS:
            raise StyleflowError(f"{where}: no option {name!r}; that is the Stylizer's: "
                                 f"Stylizer({STYLIZER_OPTIONS[name]}=...)")
        meant = CLI_NAMES.get(name) if CLI_NAMES.get(name) in known else None
        meant = meant or next(iter(difflib.get_close_matches(name, known, 1, 0.6)), None)
        hint = f"did you mean {meant!r}?" if meant else f"the options are {', '.join(known)}"
        raise StyleflowError(f"{where}: no option {name!r}; {hint}")


def options_checked(method):
    """`method` refusing unknown keywords with a StyleflowError (see check_options) instead
    of Python's TypeError."""
    @functools.wraps(method)
    def checked(self, *args, **options):
        check_options(method.__name__, method, options)
        return method(self, *args, **options)
    return checked


def check_sizes(**values) -> None:
    """StyleflowError unless each of `values` (height, width, tile, start, seed, ...) is None
    or a whole number, at least 1 (`start` and `seed`: at least 0), as the command lines take
    them."""
    for name, value in values.items():
        if value is None:
            continue
        least = 0 if name in ("start", "seed") else 1
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
            kind = "zero or more" if least == 0 else "greater than zero"
            raise StyleflowError(f"{name}: must be a whole number {kind}, not {value!r}",
                                 params=(name,))


def check_one_side(width, height) -> None:
    """StyleflowError where both `width` and `height` are given to a method that scales to
    one side and keeps the aspect ratio (as its command line's --width | --height)."""
    if width is not None and height is not None:
        raise StyleflowError(f"width {width!r}, height {height!r}: give one side or neither "
                             "(the other keeps the image's aspect ratio), not both",
                             params=("width", "height"))


def check_flags(**values) -> None:
    """StyleflowError unless each of `values` is True or False (a string such as "no" would
    count as true)."""
    for name, value in values.items():
        if not isinstance(value, (bool, numpy.bool_)):
            raise StyleflowError(f"{name}: must be True or False, not {value!r}",
                                 params=(name,))


def check_numbers(**values: float) -> None:
    """StyleflowError for what the CLIs' argument types refuse: counts below 1, negative or
    non-finite weights, numbers beyond float32's range, and all loss weights zero."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise StyleflowError(f"{name}: must be a number, not {value!r}", params=(name,))
        if name in ("iterations", "scales", "frame_iterations"):
            # An integer (Python's or NumPy's): a float such as 3.0 or 1e30 is refused, as the
            # command lines refuse '3.0'.
            if not isinstance(value, numbers.Integral) or value < 1:
                raise StyleflowError(f"{name}: must be a whole number greater than zero, "
                                     f"not {value!r}", params=(name,))
        elif name in ("beta1", "beta2"):  # Adam divides by 1 - beta ** step
            if not 0 <= value < 1:
                raise StyleflowError(f"{name}: must be at least 0 and below 1, not {value!r}",
                                     params=(name,))
        elif name in ("learning_rate", "style_layer_weight_exp", "epsilon"):
            if not math.isfinite(value) or value <= 0:
                raise StyleflowError(f"{name}: must be a finite number above zero, not {value!r}",
                                     params=(name,))
        elif not math.isfinite(value) or value < 0:
            raise StyleflowError(f"{name}: must be a finite number, zero or more, not {value!r}",
                                 params=(name,))
        # The exponent is applied in float64 and the layer weights scaled to average 1 before
        # the engine sees them: any finite one is taken.
        if value > FLOAT32_MAX and name != "style_layer_weight_exp":
            raise StyleflowError(f"{name}: {value:g} is too large (the engine computes in "
                                 f"float32, whose largest number is {FLOAT32_MAX:.4g})",
                                 params=(name,))
    weights = tuple(k for k in ("content_weight", "style_weight", "tv_weight", "photorealism")
                    if k in values)
    if weights and all(values[k] == 0 for k in weights):
        raise StyleflowError(f"{', '.join(weights)}: all are zero, so there is nothing to "
                             "optimise", params=weights)
