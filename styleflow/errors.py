"""The one exception type the front ends turn into a one-line message and a non-zero exit, and
the wording that lets each front end name parameters its own way."""

from __future__ import annotations

import errno
import os
import re
from typing import Mapping, Sequence


class StyleflowError(Exception):
    """A problem the user can fix (bad input, missing weights, unwritable output).

    The message is one line in the library's words: parameters are named as the API spells
    them (`max_memory`, `width/height`, `tile=64`). `params` lists those phrases, so a front end
    can say them its own way (`worded`): the command lines name their flags instead.
    `reason`, where the operating system refused, is its refusal alone (`os_reason`), for a
    front end that must not show the path (a server hiding its folders).
    """

    def __init__(self, message: str, *, params: Sequence[str] = (), reason: str | None = None):
        super().__init__(message)
        self.params = tuple(params)
        self.reason = reason

    def worded(self, names: Mapping[str, str]) -> str:
        """The message with each parameter named by `names` (e.g. {"max_memory":
        "--max-memory"}); see `reword`."""
        return reword(str(self), self.params, names)


class Note(str):
    """A one-line note for the user (a plain str), naming `params` as StyleflowError does."""

    params: tuple[str, ...] = ()

    def __new__(cls, text: str, params: Sequence[str] = ()):
        note = super().__new__(cls, text)
        note.params = tuple(params)
        return note


def reword(text: str, params: Sequence[str], names: Mapping[str, str]) -> str:
    """`text` with each phrase of `params` replaced where it stands as a word: a parameter's
    name becomes its name in `names`, and `name=value` becomes `name value` (a flag and its
    argument). A pair `a/b` is named part by part, parts without a name dropped
    (`width/height` -> `--width` where a command has no --height). Phrases whose parameter has
    no name in `names` are left as they are."""

    def name_of(param: str) -> str | None:
        parts = [names.get(part) for part in param.split("/")]
        kept = [part for part in parts if part]
        return "/".join(kept) if kept else None

    for phrase in sorted(params, key=len, reverse=True):
        param, equals, value = phrase.partition("=")
        name = name_of(param)
        if name is None:
            continue
        said = f"{name} {value}" if equals else name
        pattern = re.compile(rf"(?<![\w/=-]){re.escape(phrase)}(?![\w/=-])")
        text = pattern.sub(lambda _match, said=said: said, text)
    return text


def check_choice(name: str, value, choices: Sequence[str]) -> None:
    """StyleflowError unless `value` is one of `choices`: "pooling must be 'max' or 'avg',
    not 'x'"."""
    if value not in choices:
        quoted = [f"'{choice}'" for choice in choices]
        listed = f"{', '.join(quoted[:-1])} or {quoted[-1]}" if len(quoted) > 1 else quoted[0]
        raise StyleflowError(f"{name} must be {listed}, not {value!r}", params=(name,))


def exhaustion(exc: BaseException) -> StyleflowError | None:
    """The one-line StyleflowError for running out of memory: MemoryError on the host,
    TensorFlow's ResourceExhaustedError on an accelerator. None for any other exception."""
    if isinstance(exc, MemoryError):
        return StyleflowError("out of memory; try a smaller height/width",
                              params=("height/width",))
    if type(exc).__name__ == "ResourceExhaustedError":
        return StyleflowError("the accelerator ran out of memory; try a smaller height/width or "
                              "precision=bfloat16", params=("height/width", "precision=bfloat16"))
    return None


# Failures that only a lower layer can word (model.xla_cache: TensorFlow unable to write its
# compiled code) register their wording here, where every front end asks (`explained`).
_EXPLAINERS: list = []


def explain_with(explainer) -> None:
    """Register `explainer(exc) -> StyleflowError | None` for `explained` to ask."""
    if explainer not in _EXPLAINERS:
        _EXPLAINERS.append(explainer)


def explained(exc: BaseException) -> StyleflowError | None:
    """The one-line StyleflowError for an unexpected exception a user can act on: running out
    of memory (`exhaustion`) or what a registered explainer says. None for any other."""
    found = exhaustion(exc)
    for explainer in _EXPLAINERS:
        if found is not None:
            break
        try:
            found = explainer(exc)
        except Exception:  # noqa: BLE001 - a failing explainer must not hide the error
            found = None
    return found


# The operating system's refusals in words a user can act on, where strerror alone is terse.
OS_REASONS = {
    errno.ELOOP: "too many levels of symbolic links: a symbolic link loop",
    errno.ENAMETOOLONG: "file name too long",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
}


def os_reason(exc: BaseException) -> str:
    """Why the operating system refused, in one line: 'No space left on device',
    'Read-only file system', 'Permission denied', ... (the system's own words, which a user
    can look up), with a hint for a symlink loop, a too-long name and a file used as a folder.
    Python's resolve() reports a symlink loop as a RuntimeError, also accepted here."""
    if isinstance(exc, RuntimeError) and "loop" in str(exc).lower():
        return OS_REASONS[errno.ELOOP]
    code = getattr(exc, "errno", None)
    if code in OS_REASONS:
        return OS_REASONS[code]
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


def os_error(what: str, path: str | os.PathLike, exc: BaseException,
             doing: str = "write", params: Sequence[str] = ()) -> StyleflowError:
    """The one-line StyleflowError for an OSError on a file the tools use:
    "--log 'out/run.csv': cannot write (No space left on device)". `what` names the file's role
    (an option, 'base image', the API's parameter `weights`, then listed in `params` so a front
    end names it its own way), `doing` what was refused (read, write, ...)."""
    reason = os_reason(exc)
    return StyleflowError(f"{what} '{path}': cannot {doing} ({reason})", params=params,
                          reason=reason)
