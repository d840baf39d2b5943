"""`styleflow`: one command with a subcommand per way of working.

    styleflow transfer BASE REF PREFIX ...   neural_style_transfer.py's options (L-BFGS)
    styleflow style --content ... ...        neural_style.py's options (Adam, several styles)
    styleflow photo CONTENT STYLE OUTPUT     photorealistic transfer (Deep Photo Style Transfer)
    styleflow video INPUT STYLE OUTPUT       a video, temporally consistent, resumable
    styleflow batch --manifest pairs.csv     many pairs, resumable (local or Ray)
    styleflow serve [--port 8080]            a web page with a job queue (the [web] extra)

Help and argument errors answer without importing TensorFlow.
"""

from __future__ import annotations

import sys
from typing import Sequence

from . import common as cc

PROG = "styleflow"
# name: (module, one-line summary); modules are imported only when their command runs.
COMMANDS = {
    "transfer": ("styleflow.cli.transfer",
                 "L-BFGS style transfer of one photo and one painting, an image per iteration "
                 "(neural_style_transfer.py)"),
    "style": ("styleflow.cli.style",
              "Adam style transfer with several blended styles and checkpoints "
              "(neural_style.py)"),
    "photo": ("styleflow.cli.photo",
              "a photograph restyled by another and kept a photograph, optionally region by "
              "region with segmentation masks (Deep Photo Style Transfer)"),
    "video": ("styleflow.cli.video",
              "a video or a folder of frames stylised with temporal consistency (Ruder et "
              "al.), resumable, locally or in segments on Ray"),
    "batch": ("styleflow.cli.batch",
              "many content/style pairs in one process or on a Ray cluster, resumable"),
    "serve": ("styleflow.cli.serve",
              "a web page to upload images, watch each iterate and the loss live, cancel and "
              "download; jobs queued, kept across restarts"),
}


def usage() -> str:
    """The text of `styleflow --help`."""
    from .. import __version__

    width = max(map(len, COMMANDS))
    lines = [f"usage: {PROG} COMMAND [options]   ({PROG} COMMAND --help for its options)", "",
             f"Neural style transfer (Gatys et al.) on TensorFlow / Keras 3, version "
             f"{__version__}.", "", "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "options:", "  -h, --help  show this message and exit",
              "  --version   print the version and exit"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run `styleflow`; returns the exit status."""
    import importlib

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(usage())
        return 0 if argv else cc.EXIT_USAGE
    if argv[0] == "--version":
        from .. import __version__

        print(f"{PROG} {__version__}")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"{PROG}: error: unknown command '{name}'; choose from "
              f"{', '.join(COMMANDS)} (see --help)", file=sys.stderr)
        return cc.EXIT_USAGE
    module = importlib.import_module(COMMANDS[name][0])
    return module.main(argv[1:], prog=f"{PROG} {name}")


if __name__ == "__main__":
    sys.exit(main())
