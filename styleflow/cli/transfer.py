"""neural_style_transfer.py: the Keras example's L-BFGS style transfer, one image per iteration."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from . import common as cc

PROG = "neural_style_transfer.py"


def build_parser(prog: str = PROG) -> cc.ArgumentParser:
    """The command line of neural_style_transfer.py (and `styleflow transfer`)."""
    from ..defaults import (DEFAULT_HEIGHT, FULL_CONTENT_LAYER, FULL_STYLE_LAYERS,
                            IMAGENET_FILE, LITE_CONTENT_LAYER, LITE_STYLE_LAYERS, POOLINGS,
                            TRANSFER_DEFAULTS)

    DEFAULTS = dict(TRANSFER_DEFAULTS, iter=TRANSFER_DEFAULTS["iterations"])
    parser = cc.ArgumentParser(
        prog=prog,
        description="Neural style transfer with L-BFGS (Gatys et al.), as in the Keras example. "
                    "Writes PREFIX_at_iteration_NN.png after every iteration.",
)
    parser.add_argument("base", help="content image (a photo)")
    parser.add_argument("ref", help="style reference image (a painting)")
    parser.add_argument("prefix", help="prefix of the output files; may contain folders, which "
                                       "are created")
    parser.add_argument("--iter", type=cc.positive_int, default=DEFAULTS["iter"],
                        help="number of iterations, each 20 loss evaluations, each saving an image "
                             "(default: %(default)s)")
    parser.add_argument("--content_weight", type=cc.nonnegative_float,
                        default=DEFAULTS["content_weight"], help="content weight (default: %(default)s)")
    parser.add_argument("--style_weight", type=cc.nonnegative_float,
                        default=DEFAULTS["style_weight"],
                        help="style weight (default: %(default)s, as the original README "
                             "documents; the original code later defaulted to 2.0)")
    parser.add_argument("--tv_weight", type=cc.nonnegative_float, default=DEFAULTS["tv_weight"],
                        help="total variation weight (default: %(default)s)")
    parser.add_argument("--height", type=cc.positive_int,
                        help=f"output height in pixels (default: {DEFAULT_HEIGHT} when --width "
                             "is not given; one side given, the other keeps the aspect ratio)")
    parser.add_argument("--width", type=cc.positive_int, help="output width in pixels")
    parser.add_argument("--weights", default="auto", metavar="auto|imagenet|lite|random|PATH",
                        help="VGG19 weights: 'imagenet' (Keras downloads "
                             f"{IMAGENET_FILE} once into ~/.keras/models), 'lite' (ImageNet "
                             "weights of blocks 1-3, shipped with styleflow), 'random' (seeded, "
                             "untrained: for tests and benchmarks only), a Keras .h5 or MatConvNet "
                             ".mat file, or 'auto': imagenet when available, else lite "
                             "(default: %(default)s)")
    parser.add_argument("--content_layer", metavar="LAYER",
                        help=f"content layer (default: {FULL_CONTENT_LAYER}; "
                             f"{LITE_CONTENT_LAYER} with lite weights)")
    parser.add_argument("--style_layers", nargs="+", metavar="LAYER",
                        help=f"style layers (default: {' '.join(FULL_STYLE_LAYERS)}; "
                             f"{' '.join(LITE_STYLE_LAYERS)} with lite weights)")
    parser.add_argument("--faithful", action="store_true",
                        help="the original schedule: a fresh L-BFGS run of 20 evaluations per "
                             "iteration and unbounded pixels (clipped only when saving). By "
                             "default one L-BFGS run continues across iterations with pixels "
                             "bounded to 0..255, which reaches the same loss several times sooner")
    parser.add_argument("--init", metavar="FILE",
                        help="start from this image instead of the base image, e.g. to resume "
                             "from an earlier or interrupted result")
    parser.add_argument("--pooling", choices=POOLINGS, default="max",
                        help="VGG pooling (default: %(default)s)")
    cc.add_engine_options(parser, prog)
    cc.add_size_options(parser)
    parser.add_argument("--seed", type=cc.nonnegative_int, default=None,
                        help="seed for random weights; the same command and seed give the same "
                             "files; given, GPU kernels are made deterministic too (default: 0)")
    cc.add_run_options(parser)
    return parser


def parse(argv: Sequence[str] | None = None, prog: str = PROG):
    """Parse and check the command line (usage errors exit with status 2, as argparse)."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    cc.require_some_weight(parser, {"--content_weight": args.content_weight,
                                    "--style_weight": args.style_weight,
                                    "--tv_weight": args.tv_weight})
    args.style_layers = cc.split_list(args.style_layers)
    return args


# The API's parameter names where this command's options are named otherwise.
ALIASES = {"iterations": "iter"}


def flag_names(prog: str = PROG) -> dict[str, str]:
    """The library's parameter names as this command spells them (for its messages)."""
    return cc.flag_names(build_parser(prog), ALIASES)


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Run the CLI; returns the exit status."""
    args = parse(argv, prog)
    names = flag_names(prog)
    return cc.run_cli(prog, lambda: _run(args, prog, names), names)


def api_options(args) -> dict:
    """Stylizer.iter_transfer's keyword arguments from the parsed options (also used by
    `styleflow batch --method lbfgs`)."""
    return dict(iterations=args.iter, content_weight=args.content_weight,
                style_weight=args.style_weight, tv_weight=args.tv_weight, height=args.height,
                width=args.width, content_layer=args.content_layer,
                style_layers=args.style_layers, init=args.init, faithful=args.faithful,
                **cc.size_api_options(args))


def output_name(prefix: str, iteration: int) -> Path:
    """The original's file name for an iteration's image (0-based, as the original)."""
    return Path(f"{prefix}_at_iteration_{iteration:02d}.png")


def _run(args, prog: str, names: dict[str, str]) -> int:
    from ..io import files, images

    outputs = cc.NumberedOutputs(lambda i: output_name(args.prefix, i), range(args.iter))
    inputs = [args.base, args.ref, args.init]
    # PREFIX_interrupted.png; a folder prefix 'out/' gives out/_interrupted.png beside
    # out/_at_iteration_00.png.
    interrupted = files.interrupted_name(args.prefix, ".png", inputs)
    files.refuse_overwriting_inputs(outputs.among(inputs) + [interrupted], inputs)
    files.prepare_output_dir(outputs[0], "prefix")
    files.prepare_output_dir(outputs[-1], "prefix")  # the longest name
    cc.check_run_outputs(args, inputs, [
        *(("an iteration's image", path)
          for path in outputs.among([args.log, args.plot, args.gif])),
        ("where an interruption keeps its image", interrupted)])
    # Inputs are read before TensorFlow loads: a bad one is one line at once.
    cc.check_weights(args.weights)
    base = images.load_image(args.base, "base image")
    ref = images.load_image(args.ref, "style image")
    options = api_options(args)
    if args.init:
        options["init"] = images.load_image(args.init, "initial image")

    stylizer = cc.make_stylizer(args, args.weights, names)
    recorder = None
    run = stylizer.iter_transfer(
        base, ref, **options,
        on_evaluation=lambda n, loss: recorder.step(min(n, run.total), loss),
        on_scale=lambda scale: cc.record_scale(recorder, scale, "evaluations"))
    recorder = cc.recorder_for(args, run.total, "evaluations",
                               title=f"{Path(args.prefix).name}: loss per iteration", prog=prog)
    recorder.line(cc.describe_run(
        run, label=f"{'faithful' if args.faithful else 'continuous'} L-BFGS"))
    if cc.describe_layout(run, args):
        recorder.line(cc.describe_layout(run, args))
    try:
        for it in run:
            if it.iteration == 1 and run.times_jit:
                recorder.line(run.jit_report)
            path = outputs[it.iteration - 1]
            cc.save_named(it, path, args.bit_depth, "prefix")
            recorder.iteration(
                it.iteration, it.parts, it.seconds, it.evaluations, image=it.array,
                image_path=path,
                text=f"iteration {it.iteration}/{args.iter}: {cc.format_parts(it.parts)} "
                     f"{it.seconds:.1f}s -> {path}")
    except KeyboardInterrupt as exc:
        return cc.finish_interrupted(prog, exc, run, interrupted, recorder, args.log,
                                     show_loss=True, finished="iterations",
                                     bit_depth=args.bit_depth,
                                     # the classic script keeps its original lines
                                     resume=None if prog == PROG else "--init")
    if run.stopped is not None:
        done, why = run.stopped
        recorder.line(f"L-BFGS stopped after {done} iteration{'' if done == 1 else 's'}: {why}; "
                      "the later iterations repeat its last image")
    recorder.finish()
    return cc.finish_code(recorder)
