"""`styleflow batch`: many content/style pairs in one process (or on a Ray cluster), resumable.

Pairs come from a manifest CSV (content,style,output[,option columns]) or from every
combination of --contents and --styles. The method's own command-line options (those of
`styleflow transfer` for lbfgs, `styleflow style` for adam) apply to every pair; a manifest's
extra columns override them per row. A pair whose output exists is skipped, so rerunning the
same command after a crash finishes only what is missing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import sys
import time
from pathlib import Path
from typing import Sequence

from ..errors import StyleflowError
from . import common as cc

PROG = "styleflow batch"
ENGINES = ("local", "ray")
# Options of the single-pair commands that have no meaning for a batch.
NOT_IN_BATCH = {"--log", "--plot", "--gif", "--checkpoint-output", "--checkpoint-iterations",
                "--print-iterations", "--content", "--styles", "--output",
                "--style-blend-weights", "--style-masks"}
# Options that define the shared network or how files are written: one value for the whole
# batch, not per row.
WHOLE_BATCH = {"weights", "network", "precision", "pooling", "seed", "quiet", "overwrite",
               "jit", "bit_depth"}
# Where a method takes one of these or the other (photo), a row giving one drops the other
# from the command line's options for that row.
EITHER = {"height": "width", "width": "height"}
# Dummy pair for parsing the method's options with the method's own parser.
DUMMY = {"lbfgs": ["CONTENT", "STYLE", "PREFIX"],
         "adam": ["--content", "CONTENT", "--styles", "STYLE", "--output", "OUTPUT.png"],
         "photo": ["CONTENT", "STYLE", "OUTPUT.png"]}
# Manifest column aliases: the API's name for an option the CLI spells otherwise.
ALIASES = {"lbfgs": {"iterations": "iter"}, "adam": {}, "photo": {}}


def build_parser() -> cc.ArgumentParser:
    """The batch's own options (the method's options are parsed by the method's parser)."""
    # No abbreviations: "--iter" must reach the method's parser, not match --iteration-images.
    p = cc.ArgumentParser(
        prog=PROG, allow_abbrev=False,
        description="Stylise many content/style pairs in one process (the network is loaded "
                    "once and the loss compiled once per size), or on a Ray cluster. "
                    "Resumable: pairs whose output exists are skipped.",
        epilog="The options of `styleflow transfer` (--method lbfgs), `styleflow style` "
               "(--method adam) or `styleflow photo` (--method photo; a manifest may give "
               "content_mask and style_mask columns) may follow and apply to every pair, "
               "e.g. --iter 5 --height 300 --weights lite (adam: --iterations, --network), "
               "except those that name a single output or its progress files (--log, --plot, "
               "--gif, ...); see their --help.")
    source = p.add_argument_group("pairs (a manifest, or every combination)")
    source.add_argument("--manifest", metavar="CSV",
                        help="CSV with a header content,style,output and optional option "
                             "columns (e.g. style_weight, iterations, height) overriding the "
                             "options per row; paths relative to the manifest's folder")
    source.add_argument("--contents", nargs="+", metavar="FILE|DIR|GLOB",
                        help="content images: files, folders or glob patterns")
    source.add_argument("--styles", nargs="+", metavar="FILE|DIR|GLOB",
                        help="style images: files, folders or glob patterns")
    source.add_argument("--out", metavar="DIR",
                        help="folder for the combinations' outputs, named {content}_{style}.png")
    p.add_argument("--method", choices=("lbfgs", "adam", "photo"), default="lbfgs",
                   help="lbfgs: the options and defaults of `styleflow transfer`; adam: those "
                        "of `styleflow style`; photo: those of `styleflow photo` "
                        "(default: %(default)s)")
    p.add_argument("--status", metavar="FILE.jsonl",
                   help="status log, one JSON line per pair per run (default: "
                        "OUT/styleflow-status.jsonl, or MANIFEST.status.jsonl beside a manifest)")
    p.add_argument("--overwrite", action="store_true",
                   help="redo pairs whose output exists (by default they are skipped)")
    p.add_argument("--iteration-images", action="store_true",
                   help="also write each pair's image after every iteration, as "
                        "OUTPUT_at_iteration_NN.EXT")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    engine = p.add_argument_group("engine")
    engine.add_argument("--engine", choices=ENGINES, default="local",
                        help="local: a worker process on this machine (replaced when it "
                             "grows); ray: Ray actors, one per GPU or --workers "
                             "CPU actors (pip install 'styleflow[ray]') (default: %(default)s)")
    engine.add_argument("--address", metavar="ADDR",
                        help="Ray cluster address (default: RAY_ADDRESS, else a local Ray "
                             "started for the run)")
    engine.add_argument("--workers", type=cc.positive_int, metavar="N",
                        help="Ray CPU actors when there are no GPUs (default: 1 per 2 CPUs)")
    return p


def parse(argv: Sequence[str]):
    """(batch options, method options as parsed by the method's parser, method module)."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.manifest and (args.contents or args.styles or args.out):
        parser.error("argument --manifest: give either a manifest or --contents/--styles/--out")
    if not args.manifest and not (args.contents and args.styles and args.out):
        parser.error("arguments --contents, --styles, --out: give all three, or --manifest")
    if args.engine != "ray" and (args.address or args.workers):
        parser.error("arguments --address/--workers: only with --engine ray")
    for token in rest:
        option = token.split("=", 1)[0]
        if option.startswith("--") and "--" + option[2:].replace("_", "-") in NOT_IN_BATCH:
            parser.error(f"argument {option}: not available in a batch (each "
                         "pair writes its output; its progress goes to the status log)")
    module = method_module(args.method)
    method_args = module.parse(DUMMY[args.method] + rest, prog=f"{PROG} --method {args.method}")
    return args, rest, method_args, module


def method_module(method: str):
    from . import photo, style, transfer

    return {"lbfgs": transfer, "adam": style, "photo": photo}[method]


def row_parser(method: str, rest: Sequence[str]):
    """A function from a manifest row's extra cells to that row's API options, validated by
    the method's own parser (so a bad value gives the CLI's message, for that row only)."""
    module = method_module(method)
    actions = {a.dest: a for a in module.build_parser()._actions if a.option_strings}
    aliases = ALIASES[method]

    def columns_known(names: Sequence[str]) -> None:
        for name in names:
            dest = aliases.get(name, name)
            if dest in WHOLE_BATCH:
                raise StyleflowError(f"--manifest: column '{name}' applies to the whole batch "
                                     f"(give --{dest.replace('_', '-')} on the command line)")
            if dest in actions and actions[dest].option_strings[-1] in NOT_IN_BATCH:
                raise StyleflowError(f"--manifest: column '{name}' is not available in a "
                                     "batch (each row has one content, one style and one "
                                     "output)")
            if dest not in actions:
                raise StyleflowError(f"--manifest: unknown column '{name}'; columns after "
                                     "content,style,output name options of the method, e.g. "
                                     "style_weight")

    def options(cells: dict, folder: Path) -> dict:
        argv, dropped = [], []  # the row's options; the command line's it replaces
        columns = {}  # the parser's name for an option -> the column that gave it
        for name, value in cells.items():
            action = actions[aliases.get(name, name)]
            columns["/".join(action.option_strings)] = name
            flag = action.option_strings[-1]
            if method == "photo" and action.dest in EITHER:
                dropped.append(actions[EITHER[action.dest]])
            if action.dest in ("init", "initial", "content_mask", "style_mask") and not Path(
                    value).is_absolute():
                value = str(folder / value)
            if action.nargs == 0:  # a switch: true/false
                if value.lower() in ("1", "true", "yes", "on"):
                    argv.append(flag)
                elif value.lower() in ("0", "false", "no", "off"):
                    dropped.append(action)  # off for this row, whatever the command line says
                else:
                    raise StyleflowError(f"{name}: '{value}' is not true or false")
            elif action.nargs in ("+", "*"):
                argv += [flag, *value.replace(",", " ").split()]
            else:
                argv.append(f"{flag}={value}")
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                args = module.parse(DUMMY[method] + _without(rest, dropped) + argv, prog=PROG)
        except SystemExit:
            message = err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else ""
            message = message.split("error: ", 1)[-1].replace(" (see --help)", "")
            # "argument --iter: invalid ... '2.5'" -> "column 'iterations' (--iter): ..."
            for option, column in columns.items():
                if message.startswith(f"argument {option}: "):
                    message = (f"column '{column}' ({option.split('/')[-1]}): "
                               + message[len(f"argument {option}: "):])
                    break
            raise StyleflowError(message)
        return module.api_options(args)

    return columns_known, options


def _without(rest: Sequence[str], actions) -> list[str]:
    """The command line's method options `rest` without those of `actions` (and their values:
    "--width 32" and "--width=32" alike)."""
    flags = {flag for action in actions for flag in action.option_strings}
    takes = {flag: action.nargs != 0 for action in actions for flag in action.option_strings}
    kept, skip = [], False
    for token in rest:
        if skip:
            skip = False
            continue
        name = token.split("=", 1)[0]
        if name in flags:
            skip = takes[name] and "=" not in token
            continue
        kept.append(token)
    return kept


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Run `styleflow batch`; returns the exit status."""
    args, rest, method_args, module = parse(sys.argv[1:] if argv is None else argv)
    names = module.flag_names(module.PROG)
    return cc.run_cli(PROG, lambda: _run(args, rest, method_args, module, names), names)


def _pairs(args, rest, method_args, module):
    from ..batch.jobs import check_distinct_outputs, grid_pairs, manifest_pairs

    options = module.api_options(method_args)
    if args.manifest:
        columns_known, row_options = row_parser(args.method, rest)
        pairs = manifest_pairs(args.manifest, options, row_options, columns_known)
        status = args.status or str(Path(args.manifest).with_suffix(".status.jsonl"))
    else:
        pairs = grid_pairs(args.contents, args.styles, args.out, options)
        status = args.status or str(Path(args.out) / "styleflow-status.jsonl")
    check_distinct_outputs(pairs, args.iteration_images)
    # Errors about the log name the option that chose where it is.
    what = ("--status" if args.status else
            "--manifest's status log" if args.manifest else "--out's status log")
    _check_status_path(status, what, pairs, args)
    return pairs, status, what


def _check_status_path(status: str, what: str, pairs, args) -> None:
    """The status log is appended to: never the manifest, an input or an output."""
    from ..batch.jobs import pair_inputs, written
    from ..io import files

    log = files.resolved(status)
    if args.manifest and log == files.resolved(args.manifest):
        raise StyleflowError(f"{what} '{status}' is the manifest; name another file")
    for pair in pairs:
        if any(log == files.resolved(p) for p in pair_inputs(pair)):
            raise StyleflowError(f"{what} '{status}' is an input of {pair.label or 'a pair'} "
                                 f"({pair.content} + {pair.style}); name another file")
        if any(log == files.resolved(p) for p in written(pair, args.iteration_images)):
            raise StyleflowError(f"{what} '{status}' is an output of {pair.label or 'a pair'}"
                                 f" ({pair.output}); name another file")


def _sort(pair, overwrite: bool) -> tuple[str, object]:
    """("skip", pair) for a finished output, else ("do", the pair to run): one look at the
    output. An empty file (what a crash may leave) is done again; a folder, a device or a path
    the system cannot look at fails the pair without running it."""
    from ..batch.jobs import pair_inputs
    from ..io import files

    if pair.error:  # a pair that cannot run fails, whether or not its output exists
        return "do", pair
    inputs = {files.resolved(p): p for p in pair_inputs(pair)}
    if files.resolved(pair.output) in inputs:
        return "do", dataclasses.replace(pair, error=(
            f"output '{pair.output}' is the input file '{inputs[files.resolved(pair.output)]}'"
            "; choose another output name"))
    try:
        info = files.regular_file(pair.output, "output", "write")
    except StyleflowError as exc:
        return "do", dataclasses.replace(pair, error=str(exc))
    if info is not None and info.st_size > 0 and not overwrite:
        return "skip", pair
    return "do", pair


def _run(args, rest, method_args, module, names: dict[str, str]) -> int:
    from ..batch.jobs import Pair
    from ..batch.status import StatusLog
    from ..batch.worker import Settings, record

    pairs, status_path, status_what = _pairs(args, rest, method_args, module)
    # What every pair shares is checked once, before any work: one line, not a failed pair each.
    cc.check_weights(method_args.network if args.method == "adam" else method_args.weights)
    start = getattr(method_args, "initial" if args.method == "adam" else "init", None)
    if start:
        from ..io import images

        images.load_image(start, "initial image")
    made = _made_with(status_path, status_what)
    settings = Settings(method=args.method,
                        weights=method_args.network if args.method == "adam"
                        else method_args.weights,
                        precision=method_args.precision, pooling=method_args.pooling,
                        seed=method_args.seed, iteration_images=args.iteration_images,
                        jit=method_args.jit, bit_depth=method_args.bit_depth,
                        names=tuple(sorted(names.items())))
    skipped: list[Pair] = []
    todo: list[Pair] = []
    for pair in pairs:
        kind, pair = _sort(pair, args.overwrite)
        (skipped if kind == "skip" else todo).append(pair)
    status = StatusLog(status_path, what=status_what)
    report = Report(len(pairs), args.quiet)
    for pair in skipped:
        rec = record(pair, "skipped")
        rec["options"] = _options(settings, pair)
        before = made.get(str(pair.output))
        if before is not None and before != rec["options"]:
            rec["note"] = (f"made with other options ({_differences(before, rec['options'])})"
                           "; --overwrite redoes it")
        status.write(rec)
        report.done(pair, rec)

    def finished(pair: Pair, rec: dict) -> None:
        rec["options"] = _options(settings, pair)
        status.write(rec)
        report.done(pair, rec)

    try:
        if args.engine == "ray":
            from ..batch.ray_engine import run_on_ray

            run_on_ray(todo, settings, finished, address=args.address, workers=args.workers,
                       notes=cc.notes_to_stderr(args.quiet, names), on_start=report.start)
        else:
            from ..batch.local_engine import run_locally

            run_locally(todo, settings, finished, notes=cc.notes_to_stderr(args.quiet, names),
                        on_start=report.start, on_progress=report.progress)
    except KeyboardInterrupt as exc:
        report.close()
        left = ("its iteration images so far kept, not its output" if args.iteration_images
                else "no file written")
        print(f"{PROG}: interrupted; the pair in progress was abandoned ({left}); "
              f"{report.summary()}; rerun the same command to finish", file=sys.stderr)
        return cc.interrupt_code(exc)
    finally:
        report.close()  # an error line then starts a line of its own
        status.close()
    report.finish(f"{report.summary()}; status log {status_path}")
    return cc.EXIT_ERROR if report.counts["failed"] else 0


def _with_row(pair, error: str) -> str:
    """A failed manifest row's error, saying which row unless it says so already."""
    if pair.label.startswith("row ") and not error.startswith("row "):
        return f"{pair.label}: {error}"
    return error


def _jsonable(value):
    """`value` as the status log holds it (paths as text, tuples as lists)."""
    return json.loads(json.dumps(value, default=str))


def _options(settings, pair) -> dict:
    """What a pair's picture depends on: the batch's network settings and the pair's own
    options, as the status log records them."""
    shared = {k: getattr(settings, k) for k in ("method", "weights", "precision", "pooling",
                                                "seed", "bit_depth")}
    return _jsonable({**shared, **pair.options})


def _made_with(status_path: str, what: str) -> dict[str, dict]:
    """Output -> the options of the last run that made it, from an existing status log."""
    from ..batch.status import read_status

    made = {}
    try:
        for rec in read_status(status_path, what):
            if rec.get("status") == "done" and rec.get("options") is not None:
                made[str(rec.get("output"))] = rec["options"]
    except OSError:
        pass
    return made


def _differences(before: dict, now: dict) -> str:
    """'iterations 10, now 5; height 200, now 300' for the options that changed."""
    changed = [k for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)]
    return "; ".join(f"{k} {before.get(k)}, now {now.get(k)}" for k in changed)


class Report:
    """What the user sees: a bar over pairs (with the current pair's progress) on a terminal,
    a line per pair otherwise, nothing but errors with --quiet; and the counts."""

    def __init__(self, total: int, quiet: bool):
        from .recorder import BAR, BAR_FORMAT, QUIET, choose_mode, terminal_bar

        self.total = total
        self.mode = choose_mode(quiet, sys.stdout)
        self.quiet = self.mode == QUIET
        self.counts = {"done": 0, "skipped": 0, "failed": 0}
        self.began = time.perf_counter()
        self.bar = None
        if self.mode == BAR:
            self.bar = terminal_bar(total, "pairs", sys.stdout, BAR_FORMAT)
        self._current = ""

    def start(self, pair) -> None:
        self._current = Path(pair.output).name
        if self.bar is not None:
            self.bar.set_postfix_str(self._current)

    def progress(self, done: int, total: int) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self._current} {done}/{total}")

    def done(self, pair, rec: dict) -> None:
        self.counts[rec["status"]] += 1
        n = sum(self.counts.values())
        detail = {"done": lambda: f"{rec['seconds']:.1f}s, loss {rec['loss']:.4e}",
                  "skipped": lambda: "output exists" + (f"; {rec['note']}"
                                                         if rec.get("note") else ""),
                  "failed": lambda: _with_row(pair, rec["error"] or "")}[rec["status"]]()
        line = f"[{n}/{self.total}] {rec['status']} {pair.output} ({detail})"
        if rec["status"] == "failed":  # an error: on stderr, whatever the display
            if self.bar is not None:
                self.bar.write(f"{PROG}: {line}", file=sys.stderr)
                self.bar.update(1)
            else:
                print(f"{PROG}: {line}", file=sys.stderr, flush=True)
        elif self.bar is not None:
            self.bar.write(line, file=sys.stdout)
            self.bar.update(1)
        elif not self.quiet:
            print(line, flush=True)

    def summary(self) -> str:
        from .recorder import format_duration

        c = self.counts
        return (f"{c['done']} done, {c['skipped']} skipped, {c['failed']} failed of "
                f"{self.total} pairs in {format_duration(time.perf_counter() - self.began)}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def finish(self, text: str) -> None:
        self.close()
        if not self.quiet:
            print(f"batch: {text}", flush=True)
