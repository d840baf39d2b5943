"""What the command lines share: one-line errors with parameters named by their flags, checked
number arguments, signal handling, the options every run takes."""

from __future__ import annotations

import argparse
import collections.abc
import difflib
import math
import os
import re
import signal
import sys
from pathlib import Path
from typing import Callable, Sequence

from ..defaults import JIT_MODES, LBFGS_HISTORY, PRECISIONS
from ..errors import Note, StyleflowError, explained, os_reason, reword

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, delivered like Ctrl-C so the same code saves the latest image."""


class Interrupts:
    """SIGINT and SIGTERM while a command runs. The first raises KeyboardInterrupt (Terminated
    for SIGTERM), so the run stops (between tiles of a tiled evaluation) and the best image so
    far is written; until that write is done, later ones are only counted, so none can break
    it or leave the optimiser's thread running, and the command exits as soon as the image is
    written (`written`). A third one raises again whatever is under way."""

    def __init__(self):
        self.raised = False
        self.later = 0

    def handle(self, signum, frame):
        if self.raised and self.later < 1:
            self.later += 1
            return
        self.raised = True
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    def written(self) -> bool:
        """The best image is written: whether another signal asked to exit at once."""
        hurry = self.later > 0
        self.later = 0
        self.raised = False  # from here on each signal interrupts again
        return hurry


# The current command's (run_cli), for finish_interrupted.
_interrupts = Interrupts()


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line: 'prog: error: argument --x: message'; every
    long option is also taken with '-' and '_' swapped (--content_weight and --content-weight,
    --help shows the one defined), and a misspelled option gets a suggestion."""

    def parse_known_args(self, args=None, namespace=None):
        self._add_other_spellings()
        return super().parse_known_args(args, namespace)

    def _add_other_spellings(self) -> None:
        # Lookup only: argparse finds options through this table, while --help and the
        # action's own option_strings keep the spelling each option was defined with.
        table = self._option_string_actions
        for option, action in list(table.items()):
            if option.startswith("--"):
                for other in (option.replace("_", "-"), "--" + option[2:].replace("-", "_")):
                    table.setdefault(other, action)

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}{self._suggestion(message)} "
                              "(see --help)\n")

    def _suggestion(self, message: str) -> str:
        """' (did you mean --iter?)' for the first unrecognised option close to a real one."""
        if not message.startswith("unrecognized arguments:"):
            return ""
        known = sorted({action.option_strings[-1] for action in self._actions
                        if action.option_strings and action.option_strings[-1].startswith("--")})
        for token in message.split(":", 1)[1].split():
            if token.startswith("--"):
                name = token.split("=", 1)[0]
                close = difflib.get_close_matches(name, known, 1, 0.6)
                if close:
                    return f" (did you mean {close[0]}?)"
        return ""


def _number(kind: type, text: str, *, positive: bool, allow_zero: bool) -> float | int:
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"'{text}' is not a {'whole ' if kind is int else ''}number")
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"'{text}' is not a finite number")
    if positive and (value < 0 or (value == 0 and not allow_zero)):
        raise argparse.ArgumentTypeError(
            f"'{text}' must be {'zero or more' if allow_zero else 'greater than zero'}")
    return value


def positive_int(text: str) -> int:
    """argparse type: a whole number > 0."""
    return _number(int, text, positive=True, allow_zero=False)


def nonnegative_int(text: str) -> int:
    """argparse type: a whole number >= 0."""
    return _number(int, text, positive=True, allow_zero=True)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    return _number(float, text, positive=True, allow_zero=False)


def nonnegative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    return _number(float, text, positive=True, allow_zero=True)


def unit_float(text: str) -> float:
    """argparse type: a finite number in [0, 1]."""
    value = _number(float, text, positive=True, allow_zero=True)
    if value > 1:
        raise argparse.ArgumentTypeError(f"'{text}' must be between 0 and 1")
    return value


class NumberedOutputs(collections.abc.Sequence):
    """The files `name(number)` a run writes for each of `numbers` (a range), named as they
    are needed: a run of a billion iterations must not list a billion names before it starts.
    `among` finds those that are the same file as given paths."""

    _MARK = 987654321987  # a number no run reaches: where the number goes in a name

    def __init__(self, name: Callable[[int], Path], numbers: range):
        from ..io import files

        self.name, self.numbers = name, numbers
        self._patterns = []
        for text in (str(name(self._MARK)), str(files.resolved(name(self._MARK)))):
            before, mark, after = text.partition(str(self._MARK))
            self._patterns.append(re.compile(re.escape(before) + (r"(\d+)" if mark else "")
                                             + re.escape(after)))
        # The folder to look in for links, where the number is not in the folder's name.
        folder = Path(str(name(self._MARK))).parent
        self._folder = None if str(self._MARK) in str(folder) else folder

    def __len__(self) -> int:
        return len(self.numbers)

    def __getitem__(self, index: int) -> Path:
        return self.name(self.numbers[index])

    def among(self, paths) -> list[Path]:
        """Those of the files that are the same file as one of `paths` (given or resolved
        names, and links already in the files' folder, which may lead anywhere)."""
        from ..io import files

        paths = [p for p in paths if p]
        if not self.numbers or not paths:
            return []
        names = [str(n) for p in paths for n in (p, files.resolved(p))]
        if self._folder is not None:
            try:
                names += [str(self._folder / entry.name)
                          for entry in os.scandir(self._folder if str(self._folder) else ".")]
            except OSError:  # no folder yet, or none to look in: nothing there to link
                pass
        numbers = set()
        for text in names:
            for candidate in {text, str(files.resolved(text))}:
                for pattern in self._patterns:
                    match = pattern.fullmatch(candidate)
                    if match:
                        number = int(match[1]) if match.groups() else self.numbers[0]
                        if number in self.numbers:
                            numbers.add(number)
        wanted = {files.resolved(p) for p in paths}
        return [self.name(n) for n in sorted(numbers) if files.resolved(self.name(n)) in wanted]


def below_one_float(text: str) -> float:
    """argparse type: a finite number in [0, 1) (Adam's betas: 1 divides by zero)."""
    value = _number(float, text, positive=True, allow_zero=True)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"'{text}' must be at least 0 and below 1")
    return value


def flag_names(parser: argparse.ArgumentParser, aliases: dict[str, str] | None = None
               ) -> dict[str, str]:
    """How this command names the library's parameters: each option's destination (the API's
    name, mostly) to its flag as --help shows it last (e.g. max_memory -> --max-memory), plus
    `aliases` where the API's name differs from the destination (iterations -> iter)."""
    names = {action.dest: action.option_strings[-1] for action in parser._actions
             if action.option_strings and action.dest != "help"}
    for param, dest in (aliases or {}).items():
        if dest in names:
            names[param] = names[dest]
    return names


def run_cli(prog: str, body: Callable[[], int], names: dict[str, str] | None = None) -> int:
    """Run a CLI body: StyleflowError becomes 'prog: error: ...' (parameters named by their
    flags in `names`) and exit 1, as does an OSError no one worded (the last resort); SIGTERM is turned into Terminated so the body's interrupt
    handling runs (`Interrupts`); interrupts give 130 / 143."""

    def error(exc: StyleflowError) -> int:
        from ..io import files

        message = " ".join(exc.worded(names or {}).split())
        print(f"{prog}: error: {message}", file=sys.stderr)
        files.remove_new_empty_folders()  # refused: no output, no new empty folders either
        return EXIT_ERROR

    global _interrupts
    _interrupts = Interrupts()
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _interrupts.handle)}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when ignored
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, _interrupts.handle)
    code = None
    try:
        code = body()
        return code
    except StyleflowError as exc:
        return error(exc)
    except Terminated:
        print(f"{prog}: terminated", file=sys.stderr)
        code = EXIT_SIGTERM
        return code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        code = EXIT_SIGINT
        return code
    except OSError as exc:
        # The operating system refused something no front end worded (the last resort: the
        # file named as the system names it).
        where = exc.filename if exc.filename is not None else "a file"
        return error(StyleflowError(f"'{where}': {os_reason(exc)}" if exc.filename is not None
                                    else f"{where}: {os_reason(exc)}"))
    except Exception as exc:
        # Out of memory (the host's MemoryError, an accelerator's ResourceExhaustedError),
        # or the XLA cache unwritable mid-run: one line instead of a traceback.
        exhausted = explained(exc)
        if exhausted is None:
            raise
        return error(exhausted)
    finally:
        for signum, handler in previous.items():
            # The command ends on an interrupt: another signal while the interpreter shuts
            # down ends the process at once, instead of a traceback from the exit handler
            # it broke into.
            ending = code in (EXIT_SIGINT, EXIT_SIGTERM) and handler in (
                signal.default_int_handler, signal.SIG_DFL)
            signal.signal(signum, signal.SIG_DFL if ending else handler)


def interrupt_code(exc: KeyboardInterrupt) -> int:
    """Exit status for an interrupt: 143 for SIGTERM, 130 for Ctrl-C."""
    return EXIT_SIGTERM if isinstance(exc, Terminated) else EXIT_SIGINT


def format_parts(parts) -> str:
    """'loss 1.234e+05 (content …, style …, tv …)' for progress lines."""
    photo = "" if parts.photo is None else f", photo {parts.photo:.3e}"
    temporal = "" if parts.temporal is None else f", temporal {parts.temporal:.3e}"
    return (f"loss {parts.total:.4e} (content {parts.content:.3e}, style {parts.style:.3e}, "
            f"tv {parts.tv:.3e}{photo}{temporal})")


def split_list(values: Sequence[str] | None) -> list[str] | None:
    """Allow both '--style_layers a b' and '--style_layers a,b'."""
    if values is None:
        return None
    return [item for value in values for item in value.split(",") if item]


def require_some_weight(parser: argparse.ArgumentParser, weights: dict[str, float]) -> None:
    """A usage error when every loss weight is zero: there would be nothing to optimise."""
    if all(value == 0 for value in weights.values()):
        parser.error(f"arguments {', '.join(weights)}: all are zero, so there is nothing to "
                     "optimise; give at least one a value above zero")


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """--quiet, --log, --plot and --gif, the same in both CLIs."""
    group = parser.add_argument_group("watching a run")
    group.add_argument("--quiet", action="store_true",
                       help="print nothing but errors (no progress bar, no per-iteration lines)")
    group.add_argument("--log", metavar="FILE",
                       help="write each iteration's loss parts and seconds to FILE: CSV, or JSON "
                            "Lines for .jsonl; flushed every iteration")
    group.add_argument("--plot", metavar="FILE.png",
                       help="draw the loss curves (log scale) to this image at the end")
    group.add_argument("--gif", metavar="FILE.gif",
                       help="write an animation of the run's iterations to this GIF at the end")


def save_named(picture, path, bit_depth: int, role: str | None) -> None:
    """`picture.save(path, bit_depth)` (a Result or an Iteration), a failure's line naming the
    file's `role` ('output', 'prefix') when given: the write's own error names the file alone."""
    try:
        picture.save(path, bit_depth)
    except StyleflowError as exc:
        if role is None:
            raise
        raise StyleflowError(f"{role}: {exc}") from None


def check_run_outputs(args, inputs: Sequence[str | None],
                      outputs: Sequence[tuple[str, str | os.PathLike]] = ()) -> None:
    """Check --log/--plot/--gif before any work: right extensions, writable folders, not an
    input file, not one of the run's `outputs` ((role, path): the image, the interrupted
    image, ...) nor each other: one would silently replace the other."""
    from ..io import files
    from ..report.plot import check_plot_extension
    from ..report.runlog import check_replaceable

    if args.plot:
        check_plot_extension(args.plot, "--plot")
    if args.gif and Path(args.gif).suffix.lower() != ".gif":
        raise StyleflowError(f"--gif '{args.gif}': the file name must end in .gif")
    taken = {files.resolved(path): role for role, path in outputs}
    taken.update({files.resolved(path): "the input file" for path in inputs if path})
    # A hard link has a name of its own: known by its inode (the log is written in place).
    linked = {key: path for path in inputs if path
              for key in [files.file_identity(path)] if key is not None}
    for option, value in (("--log", args.log), ("--plot", args.plot), ("--gif", args.gif)):
        if value:
            files.prepare_output_dir(value, option)
            if Path(value).is_dir():
                raise StyleflowError(f"{option} '{value}': is a directory, not a file name")
            if files.resolved(value) == files.resolved(os.devnull):  # takes anything
                continue
            if files.resolved(value) in taken:  # the same name (or a symlink to it)
                raise StyleflowError(f"{option} '{value}' is {taken[files.resolved(value)]}; "
                                     "choose another name")
            identity = files.file_identity(value)
            if identity in linked:  # another name of the same file
                raise StyleflowError(f"{option} '{value}' is the input file "
                                     f"'{linked[identity]}' (a link to it); choose another name")
            if option == "--log":
                check_replaceable(value, option)
            taken[files.resolved(value)] = option


def notes_to_stderr(quiet: bool, names: dict[str, str] | None = None
                    ) -> Callable[[str], None]:
    """The `notes` callback for notes such as the weights fallback: stderr, parameters named by
    their flags in `names`, silent with --quiet."""
    def note(message: str) -> None:
        if not quiet:
            params = message.params if isinstance(message, Note) else ()
            print(reword(str(message), params, names or {}), file=sys.stderr, flush=True)
    return note


def describe_run(run, styles: int | None = None, label: str | None = None) -> str:
    """The first line a run prints: size, weights, layers, optimiser and precision."""
    h, w = run.size
    return (f"{w}x{h} px, {'' if styles is None else f'{styles} style(s), '}weights "
            f"{run.weights_source}, content {','.join(run.content_layers)}, style "
            f"{','.join(run.style_layers)}, {label or run.method}"
            f"{', bfloat16' if run.precision == 'bfloat16' else ''}")


def add_engine_options(parser: argparse.ArgumentParser, prog: str,
                       jit_help: str | None = None) -> None:
    """--precision: float32 by default in the two original scripts (their results stay as they
    were), auto in the `styleflow` command (bfloat16 where the hardware runs it natively);
    --jit: XLA or not, by default measured for long runs (`jit_help` where a command reads
    auto otherwise)."""
    default = "auto" if prog.startswith("styleflow") else "float32"
    parser.add_argument("--precision", choices=PRECISIONS, default=default,
                        help="arithmetic of the VGG pass (losses stay float32): bfloat16 is "
                             "faster where native (CPUs with AVX512_BF16 or AMX, GPUs of compute "
                             "capability 8.0+) and very slow where emulated; auto picks "
                             "bfloat16 only where native (default: %(default)s)")
    parser.add_argument("--jit", choices=JIT_MODES, default="auto",
                        help=jit_help or "XLA compilation of the loss: auto times both ways for "
                             "the run's size and keeps the faster (runs of 100+ evaluations "
                             "without --seed; trial evaluations count in the progress), on, or "
                             "off (default: %(default)s)")


def add_size_options(parser: argparse.ArgumentParser) -> None:
    """--max-memory, --tile and --scales: large outputs, the same in both CLIs."""
    group = parser.add_argument_group("large outputs")
    group.add_argument("--max-memory", type=positive_float, metavar="GB", default=None,
                       help="memory budget for the whole process; sizes beyond what fits in one "
                            "pass are computed exactly in tiles that fit (default: the memory "
                            "available now)")
    group.add_argument("--tile", type=positive_int, metavar="PX", default=None,
                       help="compute loss and gradient in tiles of this core size (exact; "
                            "default: only when the image does not fit the budget)")
    group.add_argument("--bit-depth", type=int, choices=(8, 16), default=8,
                       help="bits per channel of PNG outputs (.tif outputs always get 16; "
                            "every output carries an sRGB profile; default: %(default)s)")
    group.add_argument("--scales", type=positive_int, metavar="N", default=1,
                       help="coarse-to-fine: optimise at N sizes, each the next one's start, "
                            "ending at the requested size (default: %(default)s, one size)")


def size_api_options(args) -> dict:
    """The API's keyword arguments for add_size_options' options."""
    return dict(max_memory=args.max_memory, tile=args.tile, scales=args.scales)


def describe_layout(run, args) -> str | None:
    """A line on how the run fits in memory when that is not the plain one-pass run (tiles, a
    shorter L-BFGS history, or a budget was asked for); None otherwise, so the two scripts'
    output stays as it was."""
    layout = run.layout
    if layout is None:
        return None
    if layout.tile is None and layout.history == LBFGS_HISTORY and args.max_memory is None:
        return None
    return run.memory_report


def record_scale(recorder, scale, unit: str) -> None:
    """A finished coarse size (coarse-to-fine): a line, and a log row with iteration 0, as
    it comes before the first iteration at the full size."""
    h, w = scale.size
    recorder.iteration(0, scale.parts, scale.seconds, scale.evaluations,
                       text=f"scale {scale.index}/{scale.count} at {w}x{h}: "
                            f"{format_parts(scale.parts)} {scale.evaluations} {unit} "
                            f"{scale.seconds:.1f}s")


def recorder_for(args, total: int, unit: str, title: str, prog: str, parts: tuple = ()):
    """The RunRecorder the options in add_run_options ask for; a log, plot or GIF that cannot
    be written is said on stderr as 'prog: error: ...' (the run goes on; see finish_code).
    `parts`: the loss parts beyond content, style and tv the run has (its log's columns)."""
    from .recorder import RunRecorder

    def warn(message: str) -> None:
        print(f"{prog}: error: {message}", file=sys.stderr, flush=True)

    return RunRecorder(total, unit, quiet=args.quiet, log=args.log, plot=args.plot, gif=args.gif,
                       title=title, warn=warn, parts=parts)


def finish_code(recorder) -> int:
    """The exit status of a run whose images are written: 1 when its log, plot or GIF could
    not be (already said on stderr), else 0."""
    return EXIT_ERROR if recorder.failed else 0


def check_weights(spec: str) -> None:
    """The weights option checked before TensorFlow loads, by the library's own check (one of
    the names, or a file that exists; the library reads it later)."""
    from ..model.weights import check_spec

    check_spec(spec)


def make_stylizer(args, weights: str, names: dict[str, str]):
    """The Stylizer for a CLI run: weights, precision, pooling and the seed as given (an
    explicit --seed also asks for deterministic kernels), notes (such as the weights fallback)
    on stderr unless --quiet, their parameters named by the flags in `names`."""
    from ..api import Stylizer

    return Stylizer(weights, precision=args.precision, pooling=args.pooling, seed=args.seed,
                    deterministic=args.seed is not None, jit=args.jit,
                    notes=notes_to_stderr(args.quiet, names))


def finish_interrupted(prog: str, exc: KeyboardInterrupt, run, path, recorder, log: str | None,
                       *, show_loss: bool, finished: str, bit_depth: int = 8,
                       resume: str | None = None) -> int:
    """After Ctrl-C or SIGTERM: write the best image so far to `path` (before the plot and GIF,
    whose failure must not lose it), finish the recorder, say what was kept and, given the
    command line to continue with (`resume`, the image's path appended), how to resume; the
    exit status. (The two classic scripts keep their original lines: no `resume`.)"""
    result = run.result()
    if result is not None:
        result.save(path, bit_depth)
    loss = f" (loss {result.parts.total:.4e})" if show_loss and result is not None else ""
    if _interrupts.written():  # a second Ctrl-C: exit now, without the plot, GIF and log
        if result is not None:
            print(f"{prog}: interrupted; best image so far{loss} written to {path}",
                  file=sys.stderr)
        return interrupt_code(exc)
    recorder.finish()
    if result is not None:
        print(f"{prog}: interrupted; best image so far{loss} written to {path}", file=sys.stderr)
        if resume:
            print(f"{prog}: to go on from it, run the same command with {resume} {path}",
                  file=sys.stderr)
    else:
        print(f"{prog}: interrupted before the first {run.unit.rstrip('s')}; nothing written",
              file=sys.stderr)
    if log and not recorder.failed:
        print(f"{prog}: log of the finished {finished} in {log}", file=sys.stderr)
    # A log, plot or GIF that could not be written outranks the interruption: exit 1.
    return EXIT_ERROR if recorder.failed else interrupt_code(exc)
