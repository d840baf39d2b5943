"""`styleflow serve`: a web page on which people upload a content image and style images, start
a transfer, watch each iterate and the loss curve live, cancel, and download the result; jobs
are queued and run one after another per worker, each worker loading the network once, in
this process or on Ray actors (--engine ray).

Help and argument errors answer without importing TensorFlow or the web stack.
"""

from __future__ import annotations

import signal
import socket
import sys
from pathlib import Path
from typing import Sequence

from ..defaults import WEIGHT_CHOICES
from ..errors import StyleflowError
from . import common as cc

PROG = "styleflow serve"
ENGINES = ("local", "ray")
INSTALL_HINT = "pip install 'styleflow[web]' (or pip install -r requirements-web.txt)"


def _host_name(text: str) -> str:
    """A name or address as a Host header gives it, without port or scheme."""
    bare = text.strip().strip("[]")
    if not bare or any(c in bare for c in "/@ \t") or ":" in bare and not _ipv6(bare):
        raise cc.argparse.ArgumentTypeError(f"a host name or address without port or "
                                            f"scheme, not '{text}'")
    return bare


def _ipv6(text: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(text).version == 6
    except ValueError:
        return False


def _port(text: str) -> int:
    value = cc.nonnegative_int(text)
    if value > 65535:
        raise cc.argparse.ArgumentTypeError(f"must be from 0 to 65535, not {text}")
    return value


def build_parser() -> cc.ArgumentParser:
    p = cc.ArgumentParser(
        prog=PROG,
        description="Serve a page for style transfer: upload a content image and style "
                    "images, choose the method, size, iterations and weights, watch each "
                    "iterate and the loss live, cancel, download PNG or 16-bit TIFF. Jobs are "
                    "queued and kept in --out (listed again after a restart); the JSON API "
                    "behind the page is in docs/web.md.",
        epilog=f"Needs the web extra: {INSTALL_HINT}.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; anything but this machine's loopback lets "
                        "whoever reaches it use the page (default: %(default)s)")
    p.add_argument("--port", type=_port, default=8080,
                   help="port to listen on; 0 picks a free one (default: %(default)s)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME", type=_host_name,
                   help="a name requests may be addressed to besides this machine's loopback "
                        "names, e.g. the public name a reverse proxy passes on in its Host "
                        "header (repeatable); listening on loopback, requests for any other "
                        "name are refused (421), so that no other site's page can reach the "
                        "server through DNS rebinding")
    p.add_argument("--out", metavar="DIR", default="styleflow-jobs",
                   help="folder for the jobs' uploads and results, kept across restarts "
                        "(default: %(default)s)")
    engine = p.add_argument_group("engine")
    engine.add_argument("--engine", choices=ENGINES, default="local",
                        help="local: each worker is a process of its own that the "
                             "server starts; ray: each "
                             "worker hands its jobs to a Ray actor, one per GPU or --workers "
                             "CPU actors, as `styleflow batch --engine ray` (default: "
                             "%(default)s)")
    engine.add_argument("--workers", type=cc.positive_int, metavar="N",
                        help="jobs run at once, each worker with its own network (default: 1; "
                             "with --engine ray one per GPU, else one per two CPUs)")
    engine.add_argument("--address", metavar="ADDR",
                        help="Ray cluster address, with --engine ray (default: RAY_ADDRESS, "
                             "else a local Ray started with the server)")
    p.add_argument("--weights", default="auto", metavar="|".join(WEIGHT_CHOICES) + "|PATH",
                   help="VGG19 weights, as `styleflow transfer --weights` (default: "
                        "%(default)s)")
    p.add_argument("--precision", choices=("auto", "float32", "bfloat16"), default="auto",
                   help="arithmetic of the VGG pass, as `styleflow transfer --precision` "
                        "(default: %(default)s)")
    p.add_argument("--jit", choices=("auto", "on", "off"), default="off",
                   help="XLA compilation of the loss, as `styleflow transfer --jit`; off by "
                        "default here: a page's jobs are short and of many sizes, so timing "
                        "XLA per size costs more than it saves, and a cancel would wait for a "
                        "compilation (default: %(default)s)")
    limits = p.add_argument_group("limits of one job")
    limits.add_argument("--max-upload-mb", type=cc.positive_float, default=20.0, metavar="MB",
                        help="bytes of one job's uploads together (default: %(default)s)")
    limits.add_argument("--max-pixels", type=cc.positive_int, default=40_000_000, metavar="N",
                        help="pixels of one uploaded image (default: %(default)s)")
    limits.add_argument("--max-width", type=cc.positive_int, default=1024, metavar="PX",
                        help="output width (default: %(default)s)")
    limits.add_argument("--max-iterations", type=cc.positive_int, default=5000, metavar="N",
                        help="iterations (L-BFGS) or steps (Adam) (default: %(default)s)")
    return p


def parse(argv: Sequence[str]):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.engine != "ray" and args.address:
        parser.error("argument --address: only with --engine ray")
    from PIL import Image

    if args.max_pixels > Image.MAX_IMAGE_PIXELS:  # load_image refuses more whatever is asked
        parser.error(f"argument --max-pixels: at most {Image.MAX_IMAGE_PIXELS}, the image "
                     f"reader's own limit, not {args.max_pixels}")
    from ..io.images import MIN_INPUT_SIDE

    if args.max_width < MIN_INPUT_SIDE:  # no job could be given a width
        parser.error(f"argument --max-width: at least {MIN_INPUT_SIDE}, the smallest width a "
                     f"job takes, not {args.max_width}")
    if args.max_upload_mb * 2 ** 20 < 1024:
        parser.error(f"argument --max-upload-mb: at least 0.001 (a kilobyte), not "
                     f"{args.max_upload_mb:g}")
    return args


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Run `styleflow serve` until Ctrl-C; returns the exit status."""
    args = parse(sys.argv[1:] if argv is None else argv)
    return cc.run_cli(PROG, lambda: _serve(args), {"weights": "--weights"})


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket, or a one-line StyleflowError (address in use, unknown host)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise StyleflowError(f"--host {host}: {exc.strerror}") from None
    except UnicodeError:  # Python's IDNA codec, before any lookup: an empty or long label
        raise StyleflowError(f"--host {host}: not a valid host name") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise StyleflowError(f"--host {host} --port {port}: cannot listen there "
                             f"({exc.strerror or exc})") from None
    return sock


def allowed_hosts(host: str, bound: str, allowed: Sequence[str]) -> list[str] | None:
    """The names a server asked to listen on `host` (bound to the address `bound`) answers
    to besides loopback's: `host` and the `allowed` names where it listens on loopback only;
    None (any) where it listens wider, which the person chose and was warned of."""
    from ..web.app import is_loopback

    if not is_loopback(bound):  # where it listens, whatever the name given resolved to
        return None
    return [host, *allowed]


def _serve(args) -> int:
    cc.check_weights(args.weights)
    try:
        import uvicorn

        from ..web.app import create_app
    except ImportError as exc:
        raise StyleflowError(f"serve needs the web stack, which is not installed ({exc.name}): "
                             f"{INSTALL_HINT}") from None
    from ..web.queue import claim

    out = Path(args.out)
    held = claim(out)  # the folder is this server's while the file is open
    try:
        return _run(args, out, uvicorn, create_app)
    finally:
        held.close()


def _run(args, out: Path, uvicorn, create_app) -> int:
    """The server on `out` (claimed), until Ctrl-C."""
    from ..web.form import Limits
    from ..web.queue import JobQueue

    stylizer_options = {"weights": args.weights, "precision": args.precision, "jit": args.jit}
    if args.engine == "ray":
        from ..batch.ray_engine import import_ray
        from ..web.ray_engine import RayEngine

        import_ray()  # a one-line error now if Ray is not installed
        engine = RayEngine(stylizer_options, workers=args.workers, address=args.address)
        sigterm = signal.getsignal(signal.SIGTERM)
        engine.connect()  # here, in the main thread: a local Ray lives as long as it does
        signal.signal(signal.SIGTERM, sigterm)  # Ray's own handler would exit with 15, not 143
    else:
        from ..web.local_engine import LocalEngine

        engine = LocalEngine(stylizer_options, workers=args.workers or 1)

    limits = Limits(max_bytes=int(args.max_upload_mb * 2 ** 20), max_pixels=args.max_pixels,
                    max_width=args.max_width, max_iterations=args.max_iterations)
    jobs = JobQueue(out, engine, limits=limits)
    sock = _listen(args.host, args.port)
    jobs.load()  # once the folder is this server's and the port too: nothing to undo after
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    hosts = allowed_hosts(args.host, host, args.allow_host)
    if hosts is None:
        print(f"{PROG}: warning: listening on {args.host}: anyone who can reach this machine "
              f"on port {port} can upload images and use its processors", file=sys.stderr)
    print(f"{PROG}: http://{shown}:{port}/ (jobs in {out}; Ctrl-C stops)", flush=True)
    config = uvicorn.Config(create_app(jobs, hosts=hosts),
                            log_level="warning", access_log=False,
                            timeout_graceful_shutdown=2, lifespan="on")
    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            jobs.closing.set()  # open event streams end at once instead of at the timeout
            super().handle_exit(sig, frame)

    Server(config).run(sockets=[sock])
    return 0
