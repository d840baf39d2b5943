"""`styleflow photo`: a photograph restyled by another photograph and kept a photograph (Deep
Photo Style Transfer, Luan et al. 2017), optionally region by region with segmentation masks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from ..errors import StyleflowError
from . import common as cc

PROG = "styleflow photo"


def build_parser(prog: str = PROG) -> cc.ArgumentParser:
    """The command line of `styleflow photo`."""
    from ..defaults import (EVALUATIONS_PER_ITERATION, FULL_STYLE_LAYERS, LITE_CONTENT_LAYER,
                            LITE_STYLE_LAYERS, PHOTO_CONTENT_LAYERS, PHOTO_DEFAULTS, POOLINGS)

    D = PHOTO_DEFAULTS
    p = cc.ArgumentParser(
        prog=prog,
        description="Photorealistic style transfer (Luan et al., Deep Photo Style Transfer): "
                    "the light, colours and look of STYLE moved onto the photograph CONTENT, "
                    "whose edges and textures stay as they were. With --content-mask and "
                    "--style-mask (colour-coded segmentations: a colour per region) each "
                    "region takes the look of the same-coloured region of the style.")
    p.add_argument("content", help="the photograph to restyle")
    p.add_argument("style", help="the photograph whose look it takes")
    p.add_argument("output", help="output image (.png, .jpg, .tif, ...)")
    p.add_argument("--content-mask", metavar="PNG",
                   help="segmentation of the content: one flat colour per region (sky, "
                        "building, ...), same aspect ratio as the content")
    p.add_argument("--style-mask", metavar="PNG",
                   help="segmentation of the style with the same colours for the matching "
                        "regions")
    p.add_argument("--photorealism", type=cc.nonnegative_float, default=D["photorealism"],
                   metavar="LAMBDA",
                   help="weight of the term that keeps every 3x3 window an affine colour "
                        "transform of the content's (the matting Laplacian); 0 paints freely "
                        "(default: %(default)g)")
    p.add_argument("--iterations", type=cc.positive_int, default=D["iterations"],
                   help=f"L-BFGS iterations of {EVALUATIONS_PER_ITERATION} evaluations each "
                        "(default: %(default)s)")
    p.add_argument("--stages", type=int, choices=(1, 2), default=D["stages"],
                   help="2: the paper's two stages, the first half of the iterations without "
                        "the photorealism term, the rest with it; 1: with it throughout "
                        "(default: %(default)s)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--width", type=cc.positive_int,
                      help=f"output width in pixels (default: {D['width']})")
    size.add_argument("--height", type=cc.positive_int, help="output height in pixels")
    p.add_argument("--content-weight", type=cc.nonnegative_float, default=D["content_weight"],
                   help="(default: %(default)g)")
    p.add_argument("--style-weight", type=cc.nonnegative_float, default=D["style_weight"],
                   help="(default: %(default)g)")
    p.add_argument("--tv-weight", type=cc.nonnegative_float, default=D["tv_weight"],
                   help="total variation weight (default: %(default)g)")
    p.add_argument("--weights", default="auto", metavar="auto|imagenet|lite|random|PATH",
                   help="VGG19 weights, as `styleflow transfer` takes them (default: "
                        "%(default)s)")
    p.add_argument("--content-layers", nargs="+", metavar="LAYER",
                   help=f"default: {' '.join(PHOTO_CONTENT_LAYERS)}; {LITE_CONTENT_LAYER} "
                        "with lite weights")
    p.add_argument("--style-layers", nargs="+", metavar="LAYER",
                   help=f"default: {' '.join(FULL_STYLE_LAYERS)}; "
                        f"{' '.join(LITE_STYLE_LAYERS)} with lite weights")
    p.add_argument("--init", metavar="FILE",
                   help="start from this image instead of the content, e.g. to resume from an "
                        "interrupted result")
    p.add_argument("--pooling", choices=POOLINGS, default="max", help="(default: %(default)s)")
    cc.add_engine_options(p, prog)
    cc.add_size_options(p)
    p.add_argument("--seed", type=cc.nonnegative_int, default=None,
                   help="seed for random weights; the same command and seed give the same "
                        "file (default: 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    cc.add_run_options(p)
    return p


def parse(argv: Sequence[str] | None = None, prog: str = PROG):
    """Parse and check the command line (usage errors exit with status 2, as argparse)."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if (args.content_mask is None) != (args.style_mask is None):
        parser.error("arguments --content-mask and --style-mask go together")
    cc.require_some_weight(parser, {"--content-weight": args.content_weight,
                                    "--style-weight": args.style_weight,
                                    "--tv-weight": args.tv_weight,
                                    "--photorealism": args.photorealism})
    args.content_layers = cc.split_list(args.content_layers)
    args.style_layers = cc.split_list(args.style_layers)
    return args


def flag_names(prog: str = PROG) -> dict[str, str]:
    """The library's parameter names as this command spells them (for its messages)."""
    return cc.flag_names(build_parser(prog))


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Run the CLI; returns the exit status."""
    args = parse(argv, prog)
    names = flag_names(prog)
    # The masks' and --init's messages name the files given (the content and style images'
    # name theirs already).
    for param, flag, path in (("content_mask", "--content-mask", args.content_mask),
                              ("style_mask", "--style-mask", args.style_mask),
                              ("init", "--init", args.init)):
        if path:
            names[param] = f"{flag} '{path}'"
    return cc.run_cli(prog, lambda: _run(args, prog, names), names)


def api_options(args) -> dict:
    """Stylizer.iter_photo's keyword arguments from the parsed options (also used by
    `styleflow batch --method photo`)."""
    return dict(photorealism=args.photorealism, iterations=args.iterations, stages=args.stages,
                content_weight=args.content_weight, style_weight=args.style_weight,
                tv_weight=args.tv_weight, height=args.height, width=args.width,
                content_layers=args.content_layers, style_layers=args.style_layers,
                init=args.init, content_mask=args.content_mask, style_mask=args.style_mask,
                **cc.size_api_options(args))


def _run(args, prog: str, names: dict[str, str]) -> int:
    from ..io import files, images

    output = Path(args.output)
    images.check_image_extension(output, "output")
    images.bit_depth_for(output, args.bit_depth)
    if files.exists(output) and not args.overwrite and not os.path.isdir(output):
        raise StyleflowError(f"output '{output}' exists; pass --overwrite to replace it")
    inputs = [args.content, args.style, args.content_mask, args.style_mask, args.init]
    interrupted = files.interrupted_name(str(output.with_suffix("")), output.suffix, inputs)
    files.refuse_overwriting_inputs([output, interrupted], inputs)
    files.prepare_output_dir(output, "output")
    cc.check_run_outputs(args, inputs, [("the output", output),
                                        ("where an interruption keeps its image", interrupted)])
    # Inputs are read before TensorFlow loads: a bad one is one line at once.
    cc.check_weights(args.weights)
    content = images.load_image(args.content, "content image")
    style = images.load_image(args.style, "style image")
    options = api_options(args)
    if args.content_mask:
        options["content_mask"] = images.load_image(args.content_mask, "content mask")
        options["style_mask"] = images.load_image(args.style_mask, "style mask")
    if args.init:
        options["init"] = images.load_image(args.init, "initial image")

    stylizer = cc.make_stylizer(args, args.weights, names)
    recorder = None
    run = stylizer.iter_photo(
        content, style, **options,
        on_evaluation=None if args.quiet else lambda n, loss: recorder.step(
            min(n, run.total), loss),
        on_scale=lambda scale: cc.record_scale(recorder, scale, "evaluations"))
    recorder = cc.recorder_for(args, run.total, "evaluations",
                               title=f"{output.name}: loss per iteration", prog=prog,
                               parts=("photo",) if args.photorealism > 0 else ())
    regions = "masked" if args.content_mask else "whole images"
    kind = ("photorealistic L-BFGS" if args.photorealism > 0
            else "L-BFGS without the photorealism term")
    recorder.line(cc.describe_run(run, label=f"{kind}, {regions}"))
    if run.stages_report:
        recorder.line(run.stages_report)
    if cc.describe_layout(run, args):
        recorder.line(cc.describe_layout(run, args))
    try:
        for it in run:
            if it.iteration == 1 and run.times_jit:
                recorder.line(run.jit_report)
            recorder.iteration(
                it.iteration, it.parts, it.seconds, it.evaluations,
                image=it.array if args.gif else None,
                text=f"iteration {it.iteration}/{args.iterations}: {cc.format_parts(it.parts)} "
                     f"{it.seconds:.1f}s")
    except KeyboardInterrupt as exc:
        return cc.finish_interrupted(prog, exc, run, interrupted, recorder, args.log,
                                     show_loss=True, finished="iterations",
                                     bit_depth=args.bit_depth,
                                     # Stage 2 under way: going on must keep the term in.
                                     resume="--stages 1 --init" if run.stage == 2 else "--init")
    result = run.result()
    cc.save_named(result, output, args.bit_depth, "output")
    for stage, done, last, why in run.stage_stops:
        first = run.first_stage + 1 if stage == 2 else 1
        said = f"stage {stage}: " if run.stages == 2 else ""
        repeat = (f"iteration {last} repeats" if last == done + 1
                  else f"iterations {done + 1}-{last} repeat")
        recorder.line(f"{said}L-BFGS stopped after {done - first + 1} of its {last - first + 1} "
                      f"iterations: {why}; {repeat} its last image")
    recorder.line(f"final loss {result.parts.total:.4e} -> {output}")
    recorder.finish()
    return cc.finish_code(recorder)

