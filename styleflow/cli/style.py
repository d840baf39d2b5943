"""neural_style.py: Adam-based style transfer with several styles (anishathalye/neural-style)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..errors import StyleflowError
from . import common as cc

PROG = "neural_style.py"
GIF_FRAMES = 50


def build_parser(prog: str = PROG) -> cc.ArgumentParser:
    """The command line of neural_style.py (and `styleflow style`)."""
    from ..defaults import (FULL_STYLE_LAYERS, LITE_CONTENT_LAYER, LITE_STYLE_LAYERS,
                            NS_CONTENT_LAYERS, POOLINGS, STYLIZE_DEFAULTS)

    DEFAULTS = dict(STYLIZE_DEFAULTS, pooling="max")
    p = cc.ArgumentParser(
        prog=prog,
        description="Neural style transfer with Adam and several blended styles, as in "
                    "anishathalye/neural-style.")
    p.add_argument("--content", required=True, help="content image")
    p.add_argument("--styles", required=True, nargs="+", help="one or more style images")
    p.add_argument("--output", required=True, help="output image (.png, .jpg, ...)")
    p.add_argument("--iterations", type=cc.positive_int, default=DEFAULTS["iterations"],
                   help="Adam steps (default: %(default)s)")
    p.add_argument("--print-iterations", type=cc.positive_int, metavar="N",
                   help="print the loss parts every N steps (always at the end)")
    p.add_argument("--checkpoint-output", metavar="PATTERN",
                   help="checkpoint file name containing %%s, replaced by the step number")
    p.add_argument("--checkpoint-iterations", type=cc.positive_int, metavar="N",
                   help="write a checkpoint (the best image so far) every N steps")
    p.add_argument("--width", type=cc.positive_int,
                   help="resize the content image to this width, keeping its aspect")
    p.add_argument("--style-scales", type=cc.positive_float, nargs="+", metavar="SCALE",
                   help="one per style: resize the style to SCALE x the content width "
                        "(default: 1.0 each)")
    p.add_argument("--style-blend-weights", type=cc.nonnegative_float, nargs="+",
                   metavar="WEIGHT", help="one per style, normalised to sum to 1 "
                                          "(default: equal)")
    p.add_argument("--style-masks", nargs="+", metavar="MASK",
                   help="one grey image per style, the content's aspect ratio: where on the "
                        "output that style paints (white: fully, black: not; grey blends)")
    p.add_argument("--content-weight", type=cc.nonnegative_float,
                   default=DEFAULTS["content_weight"],
                   help="weight of the content loss (keeping the photo's shapes; default: "
                        "%(default)s)")
    p.add_argument("--content-weight-blend", type=cc.unit_float,
                   default=DEFAULTS["content_weight_blend"],
                   help="share of block4_conv2 (relu4_2) in the content loss, the rest going to "
                        "block5_conv2 (relu5_2) (default: %(default)s)")
    p.add_argument("--style-weight", type=cc.nonnegative_float, default=DEFAULTS["style_weight"],
                   help="weight of the style loss (taking the paintings' textures; default: "
                        "%(default)s)")
    p.add_argument("--style-layer-weight-exp", type=cc.positive_float,
                   default=DEFAULTS["style_layer_weight_exp"],
                   help="style layer l weighs EXP^l (scaled to average 1); above 1 favours "
                        "deeper layers, i.e. coarser style (default: %(default)s)")
    p.add_argument("--tv-weight", type=cc.nonnegative_float, default=DEFAULTS["tv_weight"],
                   help="total variation weight (default: %(default)s)")
    p.add_argument("--learning-rate", type=cc.positive_float, default=DEFAULTS["learning_rate"],
                   help="Adam step size, in pixel units (default: %(default)s)")
    p.add_argument("--beta1", type=cc.below_one_float, default=DEFAULTS["beta1"],
                   help="Adam's decay rate for its running mean of gradients, 0 to below 1 "
                        "(default: %(default)s)")
    p.add_argument("--beta2", type=cc.below_one_float, default=DEFAULTS["beta2"],
                   help="Adam's decay rate for its running mean of squared gradients, 0 to "
                        "below 1 (default: %(default)s)")
    p.add_argument("--epsilon", type=cc.positive_float, default=DEFAULTS["epsilon"],
                   help="Adam's guard against dividing by zero, above 0 (default: "
                        "%(default)s)")
    p.add_argument("--initial", metavar="FILE",
                   help="start image (e.g. an earlier or interrupted result, to resume); "
                        "default: seeded Gaussian noise")
    p.add_argument("--initial-noiseblend", type=cc.unit_float, metavar="R",
                   help="start from (1-R) x initial + R x noise (default: 1 without --initial, "
                        "0 with it)")
    p.add_argument("--preserve-colors", action="store_true",
                   help="keep the content's colours: only the stylised luminance is used")
    p.add_argument("--pooling", choices=POOLINGS, default=DEFAULTS["pooling"],
                   help="(default: %(default)s)")
    p.add_argument("--network", default="auto", metavar="auto|imagenet|lite|random|PATH",
                   help="VGG19 weights: MatConvNet imagenet-vgg-verydeep-19.mat (as the "
                        "original used), a Keras .h5 file, 'imagenet' (Keras download), 'lite' "
                        "(shipped ImageNet blocks 1-3), 'random' (seeded, for tests), or 'auto': "
                        "imagenet when available, else lite (default: %(default)s)")
    p.add_argument("--content-layers", nargs="+", metavar="LAYER",
                   help=f"default: {' '.join(NS_CONTENT_LAYERS)}; {LITE_CONTENT_LAYER} with "
                        "lite weights")
    p.add_argument("--style-layers", nargs="+", metavar="LAYER",
                   help=f"default: {' '.join(FULL_STYLE_LAYERS)}; "
                        f"{' '.join(LITE_STYLE_LAYERS)} with lite weights")
    cc.add_engine_options(p, prog)
    cc.add_size_options(p)
    p.add_argument("--seed", type=cc.nonnegative_int, default=None,
                   help="seed for the start noise and random weights; the same command and seed "
                        "give the same files; given, GPU kernels are made deterministic too "
                        "(default: 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    cc.add_run_options(p)
    return p


def parse(argv: Sequence[str] | None = None, prog: str = PROG):
    """Parse and check the command line (usage errors exit with status 2, as argparse)."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.checkpoint_output is not None and "%s" not in args.checkpoint_output:
        parser.error("argument --checkpoint-output: must contain %s (replaced by the step number)")
    if (args.checkpoint_output is None) != (args.checkpoint_iterations is None):
        parser.error("arguments --checkpoint-output and --checkpoint-iterations go together")
    cc.require_some_weight(parser, {"--content-weight": args.content_weight,
                                    "--style-weight": args.style_weight,
                                    "--tv-weight": args.tv_weight})
    args.content_layers = cc.split_list(args.content_layers)
    args.style_layers = cc.split_list(args.style_layers)
    return args


# The API's parameter names where this command's options are named otherwise.
ALIASES = {"weights": "network"}


def flag_names(prog: str = PROG) -> dict[str, str]:
    """The library's parameter names as this command spells them (for its messages)."""
    return cc.flag_names(build_parser(prog), ALIASES)


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Run the CLI; returns the exit status."""
    args = parse(argv, prog)
    names = flag_names(prog)
    return cc.run_cli(prog, lambda: _run(args, prog, names), names)


def api_options(args) -> dict:
    """Stylizer.iter_stylize's keyword arguments from the parsed options (also used by
    `styleflow batch --method adam`)."""
    return dict(iterations=args.iterations, width=args.width, style_scales=args.style_scales,
                style_blend_weights=args.style_blend_weights,
                content_weight=args.content_weight,
                content_weight_blend=args.content_weight_blend, style_weight=args.style_weight,
                style_layer_weight_exp=args.style_layer_weight_exp, tv_weight=args.tv_weight,
                learning_rate=args.learning_rate, beta1=args.beta1, beta2=args.beta2,
                epsilon=args.epsilon, content_layers=args.content_layers,
                style_layers=args.style_layers, initial=args.initial,
                initial_noiseblend=args.initial_noiseblend,
                preserve_colors=args.preserve_colors,
                **cc.size_api_options(args))


def checkpoint_name(pattern: str, step: int) -> Path:
    """The checkpoint file for a step: the pattern's %s replaced by the step number."""
    return Path(pattern.replace("%s", str(step), 1))


def _save_checkpoint(step, path: Path, bit_depth: int) -> None:
    try:
        step.save(path, bit_depth)
    except StyleflowError as exc:  # worded for the file alone: say which file it is
        raise StyleflowError(f"--checkpoint-output: {exc}") from None


def _run(args, prog: str, names: dict[str, str]) -> int:
    from ..io import files, images

    output = Path(args.output)
    images.check_image_extension(output, "--output")
    images.bit_depth_for(output, args.bit_depth)
    if files.exists(output) and not args.overwrite:
        raise StyleflowError(f"--output '{output}' exists; pass --overwrite to replace it")
    if args.checkpoint_output:
        images.check_image_extension(checkpoint_name(args.checkpoint_output, 0),
                                     "--checkpoint-output")
    # Named as they are needed: --iterations 1000000000 --checkpoint-iterations 1 must start.
    checkpoints = cc.NumberedOutputs(
        lambda i: checkpoint_name(args.checkpoint_output or "", i),
        range(args.checkpoint_iterations, args.iterations + 1, args.checkpoint_iterations)
        if args.checkpoint_output else range(0))
    inputs = [args.content, *args.styles, *(args.style_masks or ()), args.initial]
    interrupted = files.interrupted_name(str(output.with_suffix("")), output.suffix, inputs)
    files.refuse_overwriting_inputs([output, interrupted, *checkpoints.among(inputs)], inputs)
    files.prepare_output_dir(output, "--output")
    for path in {checkpoints[0], checkpoints[-1]} if checkpoints else ():  # the longest name
        files.prepare_output_dir(path, "--checkpoint-output")
    cc.check_run_outputs(args, inputs, [
        ("the --output", output), ("where an interruption keeps its image", interrupted),
        *(("a --checkpoint-output", path)
          for path in checkpoints.among([args.log, args.plot, args.gif]))])
    # Inputs are read before TensorFlow loads: a bad one is one line at once.
    cc.check_weights(args.network)
    content = images.load_image(args.content, "content image")
    styles = [images.load_image(path, f"style image {i + 1}")
              for i, path in enumerate(args.styles)]
    options = api_options(args)
    if args.initial:
        options["initial"] = images.load_image(args.initial, "initial image")
    if args.style_masks:
        if len(args.style_masks) != len(styles):
            raise StyleflowError(f"style_masks: {len(args.style_masks)} masks given for "
                                 f"{len(styles)} styles; give one per style",
                                 params=("style_masks",))
        options["style_masks"] = [images.load_image(path, f"style mask {i + 1}")
                                  for i, path in enumerate(args.style_masks)]

    stylizer = cc.make_stylizer(args, args.network, names)
    recorder = None
    run = stylizer.iter_stylize(
        content, styles, **options,
        on_evaluation=None if args.quiet else lambda n, loss: recorder.step(
            min(n, run.total), loss),
        on_scale=lambda scale: cc.record_scale(recorder, scale, "steps"))
    recorder = cc.recorder_for(args, run.total, "steps",
                               title=f"{output.name}: loss per Adam step", prog=prog)
    recorder.line(cc.describe_run(run, styles=len(args.styles)))
    if cc.describe_layout(run, args):
        recorder.line(cc.describe_layout(run, args))
    # With --gif, about GIF_FRAMES frames of the best image so far, evenly spaced.
    gif_every = max(1, args.iterations // GIF_FRAMES) if args.gif else None
    # A log or plot wants every step; reading four numbers back per step costs little.
    every_step = bool(args.log or args.plot)

    def every(n: int | None, i: int) -> bool:
        return bool(n and i % n == 0)

    since_line = 0.0  # seconds since the last printed line
    checkpoint_every = args.checkpoint_iterations  # None once one could not be written
    try:
        for step in run:
            i = step.iteration
            if i == 1 and run.times_jit:
                recorder.line(run.jit_report)
            since_line += step.seconds
            last = i == args.iterations
            path = line = rgb = None
            if every(checkpoint_every, i):
                path = checkpoint_name(args.checkpoint_output, i)
                rgb = step.array
                # A checkpoint is secondary: a refused one ends the checkpoints, not the run.
                if not recorder.attempt("--checkpoint-output", path,
                                        lambda: _save_checkpoint(step, path, args.bit_depth),
                                        then="the run goes on without checkpoints"):
                    path, checkpoint_every = None, None
            if every(args.print_iterations, i) or path or last:
                line = (f"iteration {i}/{args.iterations}: {cc.format_parts(step.parts)} "
                        f"best {step.best_loss:.4e} {since_line:.1f}s"
                        + (f" -> {path}" if path else ""))
                since_line = 0.0
            if every(gif_every, i) or (gif_every and last):
                rgb = step.array
            if every_step or line or rgb is not None:
                recorder.iteration(i, step.parts, step.seconds, i, text=line, image=rgb,
                                   image_path=path)
    except KeyboardInterrupt as exc:
        return cc.finish_interrupted(prog, exc, run, interrupted, recorder, args.log,
                                     show_loss=False, finished="steps",
                                     bit_depth=args.bit_depth,
                                     # the classic script keeps its original lines
                                     resume=None if prog == PROG else "--initial")
    result = run.result()
    # neural_style.py keeps its original line
    cc.save_named(result, output, args.bit_depth, None if prog == PROG else "--output")
    recorder.line(f"final loss {result.parts.total:.4e} -> {output}")
    recorder.finish()
    return cc.finish_code(recorder)
