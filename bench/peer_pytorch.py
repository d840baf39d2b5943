"""Seconds per loss+gradient evaluation: styleflow beside the same objective written in PyTorch,
measured in one run on the same CPU (or GPU), same weights, images, layers and losses.

The PyTorch side is written as well as PyTorch allows for this job: network weights frozen (the
backward pass computes no weight gradients), in-place ReLU, only the layers up to the deepest
one used, targets computed once under inference mode, and channels-last memory format when it
measures faster. Both losses are printed so a reader can see they compute the same thing.

With `--split`, each size is also timed with the objective cut after the layers styleflow
convolves directly on this CPU (block 1; the style layers among them, the content loss on
the last), all objectives timed in the same rounds: there both libraries run the same oneDNN
kernels, so Winograd cannot help, and what the whole ratio can reach follows from it. The
split prints how much faster than PyTorch's rest (the whole minus that head, in the same
layout) ours would have to run for the whole to reach `--goal`.

Each library runs in its own process (two long-lived workers, told in turns which objective
to time), as a user would run it: in one process, PyTorch's OpenMP threads still spinning after
its call slowed our next evaluation by about 10% (docs/performance.md, stop 40).
`--same-process` times everything in this process instead, as the benchmark did before.

The ratio printed is PyTorch's median over ours; beside it, the quartiles of the rounds' own
ratios (each round times both sides within a second or two), which show how far that ratio
moves with the machine's drift during the run.

PyTorch is a benchmark dependency only (`pip install -r requirements-bench.txt`); without it the
script says so and exits.

    python bench/peer_pytorch.py [--sizes 400x300 800x600] [--repeats 5] [--layers full|lite]
                                 [--split] [--goal 2] [--same-process]
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import sys
import time

from cpu import cpu_description

try:
    import torch
except ImportError:  # a benchmark dependency, not a runtime one
    sys.exit("peer_pytorch.py needs PyTorch: pip install -r requirements-bench.txt")

import numpy as np

from common import (CONTENT_WEIGHT, STYLE_WEIGHT, TV_WEIGHT, layer_choice, ours_objective,
                    pair)
from timing import interleaved_times, parse_size, ratio_spread

from styleflow.model import winograd
from styleflow.model.machine import transposed_convolutions
from styleflow.model.layout import conv_maps, deepest, stages_to
from styleflow.model.weights import random_weights



class TorchFeatures(torch.nn.Module):
    """VGG19 up to the deepest wanted layer, with frozen weights taken from Keras' layout."""

    def __init__(self, layer_weights, outputs):
        super().__init__()
        self.outputs = set(outputs)
        last = deepest(outputs)
        self.names, modules = [], []
        for stage in stages_to(last):
            if not stage.conv:
                modules.append(torch.nn.MaxPool2d(2, 2))
                self.names.append(None)
                continue
            name = stage.name
            kernel, bias = layer_weights[name]  # Keras: (3, 3, in, out)
            conv = torch.nn.Conv2d(stage.in_channels, stage.out_channels, 3, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(
                    kernel.transpose(3, 2, 0, 1))))
                conv.bias.copy_(torch.from_numpy(bias))
            modules += [conv, torch.nn.ReLU(inplace=True)]
            self.names += [None, name]  # the ReLU's output is the layer's activation
        self.layers = torch.nn.ModuleList(modules)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x):
        out = {}
        for name, layer in zip(self.names, self.layers):
            x = layer(x)
            if name in self.outputs:
                # The next convolution reads this tensor without modifying it: no copy needed.
                out[name] = x
        return out


def gram(f):
    c = f.shape[1]
    flat = f.reshape(c, -1)
    return flat @ flat.T


class TorchObjective:
    """The Keras example's loss (as `styleflow.objective.losses` defines it) with its gradient."""

    def __init__(self, net, content, style, content_layer, style_layers, channels_last):
        self.net = net
        self.content_layer = content_layer
        self.style_layers = list(style_layers)
        self.format = torch.channels_last if channels_last else torch.contiguous_format
        with torch.inference_mode():
            self.content_target = net(self._tensor(content))[content_layer].clone()
            feats = net(self._tensor(style))
            self.gram_targets = [gram(feats[n]).clone() for n in self.style_layers]
        self.pixels = content.shape[1] * content.shape[2]

    def _tensor(self, image):
        return torch.from_numpy(np.ascontiguousarray(image.transpose(0, 3, 1, 2))).to(
            memory_format=self.format)

    def __call__(self, image):
        x = self._tensor(image).requires_grad_(True)
        feats = self.net(x)
        total = CONTENT_WEIGHT * (feats[self.content_layer] - self.content_target).square().sum()
        scale = 4.0 * 9.0 * float(self.pixels) ** 2
        for name, target in zip(self.style_layers, self.gram_targets):
            term = (gram(feats[name]) - target).square().sum() / scale
            total = total + STYLE_WEIGHT / len(self.style_layers) * term
        corner = x[:, :, :-1, :-1]
        dy = (corner - x[:, :, 1:, :-1]).square()
        dx = (corner - x[:, :, :-1, 1:]).square()
        total = total + TV_WEIGHT * (dy + dx).pow(1.25).sum()
        total.backward()
        return float(total.detach()), x.grad


def direct_head(size, layers) -> str | None:
    """The last layer of the run of layers, from the first, that styleflow convolves directly
    at this image size on this machine (None if it convolves even the first by Winograd).
    Where it keeps Keras' Conv2D (`machine.transposed_convolutions`), every layer is direct."""
    head = None
    winograd_here = transposed_convolutions("float32")
    for name, h, w, cin, cout in conv_maps(size, deepest(layers)):
        if winograd_here and winograd.convolves(h, w, cin, cout,
                                                winograd.narrow_pays(h, w, cin, cout)):
            break
        head = name
    return head


def side_objectives(side: str, layers: str, head: str | None, content, style, x) -> dict:
    """{name: callable} of one side ("ours", "torch", or "both"): the whole objective and,
    with a `head`, the objective cut after it (its style layers, the content loss on it).
    Each callable evaluates loss and gradient once and returns them as PyTorch or TensorFlow
    gave them (`as_result` converts)."""
    content_layer, style_layers = layer_choice(layers)
    weights = random_weights(0).layers
    cuts = [("", content_layer, list(style_layers))]
    if head is not None:
        h, w = x.shape[1:3]
        cuts.append(("head ", head, [n for n in style_layers
                                     if n in {m for m, *_ in conv_maps((h, w), head)}]))
    fns = {}
    for prefix, last, styles in cuts:
        wanted = [last, *styles]
        if side in ("ours", "both"):
            ours = ours_objective(weights, last, styles, content, style)
            fns[f"{prefix}ours"] = lambda o=ours: o.loss_and_grads(x)
        if side in ("torch", "both"):
            net = TorchFeatures(weights, wanted)
            for cl in (False, True):
                peer = TorchObjective(net, content, style, last, styles, cl)
                fns[f"{prefix}{'channels-last' if cl else 'NCHW'}"] = lambda p=peer: p(x)
    return fns


def as_result(value) -> tuple[float, np.ndarray]:
    """(loss, NHWC gradient) of either side's callable's return value."""
    loss, grad = value
    if isinstance(grad, torch.Tensor):
        return float(loss), grad.permute(0, 2, 3, 1).numpy()
    return float(loss.total), np.asarray(grad)


def _worker(conn, side, layers, head, content, style, x) -> None:
    """One side's process: builds its objectives, then times or evaluates them on request."""
    fns = side_objectives(side, layers, head, content, style, x)
    conn.send(list(fns))
    while True:
        command, name = conn.recv()
        if command == "stop":
            return
        if command == "time":
            began = time.perf_counter()
            fns[name]()
            conn.send(time.perf_counter() - began)
        else:
            conn.send(as_result(fns[name]()))


class Workers:
    """Both sides' worker processes for one size; `ask("time", name)` (seconds of one call)
    and `ask("result", name)` (`as_result` of one call) go to the one that holds `name`."""

    def __init__(self, layers, head, content, style, x):
        context = multiprocessing.get_context("spawn")
        self.owner, self.processes = {}, []
        for side in ("ours", "torch"):
            here, there = context.Pipe()
            process = context.Process(target=_worker, daemon=True,
                                      args=(there, side, layers, head, content, style, x))
            process.start()
            self.processes.append((process, here))
            self.owner.update({name: here for name in here.recv()})

    def names(self) -> list[str]:
        return list(self.owner)

    def ask(self, command: str, name: str):
        self.owner[name].send((command, name))
        return self.owner[name].recv()

    def close(self) -> None:
        for process, conn in self.processes:
            try:
                conn.send(("stop", None))
            except OSError:
                pass
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()


# Seconds each timed call waits first, so that the threads of the call before it (the other
# process's, as often as not) have stopped spinning and gone to sleep.
SETTLE = 0.1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["400x300", "800x600"], help="WxH")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--layers", choices=("full", "lite"), default="full")
    parser.add_argument("--split", action="store_true",
                        help="also time the directly convolved head alone, and the bound it sets")
    parser.add_argument("--goal", type=float, default=2.0,
                        help="the PyTorch / styleflow ratio the split's bound is worked out for")
    parser.add_argument("--same-process", action="store_true",
                        help="time both libraries in this process instead of one worker each")
    args = parser.parse_args()

    import tensorflow as tf

    from styleflow.model.machine import onednn_enabled

    content_layer, style_layers = layer_choice(args.layers)
    layers = [content_layer, *style_layers]
    print(f"CPU: {cpu_description()}")
    print(f"TensorFlow {tf.__version__}: oneDNN {'on' if onednn_enabled() else 'off'}, XLA off; "
          f"PyTorch {torch.__version__}: {torch.get_num_threads()} threads, "
          f"mkldnn {'on' if torch.backends.mkldnn.is_available() else 'off'}")
    where = ("both in this process" if args.same_process
             else "each library in its own worker process")
    print(f"layers {args.layers}, float32, random weights, median of {args.repeats} rounds "
          f"(every objective timed once per round, in turns; {where})")
    print(f"{'size':>9} {'ours s/eval':>12} {'PyTorch s/eval':>15} {'layout':>14} "
          f"{'PyTorch/ours':>13} {'rounds 25-75%':>14} {'loss diff':>10} {'grad diff':>10}")
    for text in args.sizes:
        h, w = parse_size(text)
        content, style = pair((h, w))
        x = content + np.random.default_rng(0).normal(0, 5, content.shape).astype(np.float32)
        head = direct_head((h, w), layers) if args.split else None
        if args.same_process:
            fns = side_objectives("both", args.layers, head, content, style, x)
            rounds = interleaved_times(fns, args.repeats)
            results = {name: as_result(fns[name]()) for name in ("ours", "NCHW", "channels-last")}
        else:
            workers = Workers(args.layers, head, content, style, x)
            try:
                rounds = interleaved_times(
                    {name: functools.partial(workers.ask, "time", name)
                     for name in workers.names()},
                    args.repeats, settle=SETTLE, timed_by_callee=True)
                results = {name: workers.ask("result", name)
                           for name in ("ours", "NCHW", "channels-last")}
            finally:
                workers.close()
        timed = {name: float(np.median(t)) for name, t in rounds.items()}
        layout = min(("NCHW", "channels-last"), key=timed.get)
        low, high = ratio_spread(rounds[layout], rounds["ours"])
        (loss_ours, grad_ours), (loss_peer, grad_peer) = results["ours"], results[layout]
        diff = abs(loss_ours - loss_peer) / abs(loss_peer)
        # max |difference| / max |g|: the measure the tiling tests use
        grad_diff = np.abs(grad_ours - grad_peer).max() / np.abs(grad_peer).max()
        print(f"{text:>9} {timed['ours']:12.3f} {timed[layout]:15.3f} {layout:>14} "
              f"{timed[layout] / timed['ours']:12.2f}x {f'{low:.2f}-{high:.2f}x':>14} "
              f"{100 * diff:9.3f}% {grad_diff:10.1e}",
              flush=True)
        if args.split:
            report_split(head, timed, layout, args.goal)


def report_split(head: str | None, timed: dict, layout: str, goal: float) -> None:
    """Print the head's times, the rest's (the whole's minus the head's, PyTorch's in the
    whole's faster layout) and what the rest would need for `goal` (see the docstring)."""
    if head is None:
        print(f"{'':>9} split: styleflow convolves every layer by Winograd here", flush=True)
        return
    o_head, p_head = timed["head ours"], timed[f"head {layout}"]
    o_rest, p_rest = timed["ours"] - o_head, timed[layout] - p_head
    print(f"{'':>9} head (to {head}, direct in both): ours {o_head:.3f} s, PyTorch "
          f"{p_head:.3f} s ({p_head / o_head:.2f}x); the rest: ours {o_rest:.3f} s, PyTorch "
          f"{p_rest:.3f} s ({p_rest / o_rest:.2f}x)", flush=True)
    # The whole reaches the goal when ours_head + ours_rest <= (p_head + p_rest) / goal.
    room = timed[layout] / goal - o_head
    need = (f"the rest {p_rest / room:.2f}x faster than PyTorch's rest" if room > 0 else
            "more than the rest taking no time at all")
    print(f"{'':>9} {goal:g}x overall with this head needs {need}", flush=True)


if __name__ == "__main__":
    main()
