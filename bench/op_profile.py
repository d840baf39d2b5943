"""Where one loss+gradient evaluation's time goes: TensorFlow's profiler over a few evaluations
of the full objective (as bench/peer_pytorch.py times it: full layers, random weights, float32,
one operation at a time as `import styleflow` asks), each operation's time summed by kind and
divided by the evaluations profiled. With one operation at a time the kinds add up to the
evaluation, so the table says what each part of the engine costs, and the rates say how close
its products run to this machine's large-matmul rate (`common.matmul_gflops`) and what rate a
direct convolution would need to match it (the same convolutions without Winograd, counted by
`common.conv_gflop`).

    python bench/op_profile.py [--sizes 400x300 800x600] [--evals 5] [--types 12]
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import tempfile

import numpy as np

from common import conv_gflop, layer_choice, matmul_gflops, median_seconds, ours_objective, pair
from cpu import cpu_description
from timing import parse_size

import tensorflow as tf

from styleflow.model import winograd
from styleflow.model.layout import conv_maps
from styleflow.model.weights import random_weights

# TensorFlow's op types (oneDNN's where it renames them), grouped by what they do here.
KINDS = {
    "Winograd products": ("_MklBatchMatMulV2", "BatchMatMulV2"),
    "tile transforms (Numba)": ("PyFuncStateless", "PyFunc", "EagerPyFunc"),
    "Gram products, block1_conv1's gradient": ("_MklMatMul", "MatMul"),
    "direct convolutions": ("_MklNativeFusedConv2D", "_MklNativeConv2D", "Conv2D",
                            "_MklNativeConv2DBackpropInput", "Conv2DBackpropInput"),
    "pooling": ("_MklNativeMaxPool", "_MklNativeMaxPoolGrad", "MaxPool", "MaxPoolGrad"),
    "Winograd kernel check": ("Equal", "All"),
    "XLA-compiled passes": ("ExecuteAsyncOnStream",),
}


XLA_RUN = "CpuExecutable::ExecuteAsyncOnStream"


def winograd_gflop(size: tuple[int, int], deepest: str) -> float:
    """GFLOP of the Winograd layers' products in one evaluation (forward and back), as
    `winograd.convolves` picks the layers for an untiled pass."""
    total = 0.0
    for name, h, w, cin, cout in conv_maps(size, deepest):
        narrow = winograd.narrow(cin, cout) and winograd.narrow_pays(h, w, cin, cout)
        if winograd.convolves(h, w, cin, cout, narrow):
            tiles = -(-h // winograd.TILE) * -(-w // winograd.TILE)
            total += 2 * 2.0 * winograd.ALPHA ** 2 * tiles * cin * cout
    return total / 1e9


def op_times(objective, x, evals: int) -> collections.Counter:
    """{op type: milliseconds per evaluation} from TensorFlow's profiler."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    with tempfile.TemporaryDirectory() as log:
        tf.profiler.experimental.start(log)
        for _ in range(evals):
            objective.loss_and_grads(x)
        tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        with open(glob.glob(os.path.join(log, "**", "*.xplane.pb"), recursive=True)[0],
                  "rb") as f:
            space.ParseFromString(f.read())
    times = collections.Counter()
    for plane in space.planes:
        if "/host:CPU" not in plane.name:
            continue
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                # Operations are "name:type"; the spans of function calls and of the executor
                # hold them ("Class::method"), except XLA's, which runs compiled code itself.
                if name == XLA_RUN or ":" in name and "::" not in name and not name.startswith(
                        "EagerLocalExecute"):
                    times[name.rsplit(":", 1)[-1]] += event.duration_ps / 1e9 / evals
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["400x300", "800x600"], help="WxH")
    parser.add_argument("--evals", type=int, default=5, help="evaluations profiled (and timed)")
    parser.add_argument("--types", type=int, default=12, help="op types listed")
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}")
    peak = matmul_gflops()
    print(f"large-matmul rate (4096x4096, float32): {peak:.0f} GFLOP/s")
    content_layer, style_layers = layer_choice("full")
    for text in args.sizes:
        size = parse_size(text)
        content, style = pair(size)
        x = tf.constant(content + np.random.default_rng(0).normal(0, 10, content.shape)
                        .astype(np.float32))
        objective = ours_objective(random_weights(0).layers, content_layer, list(style_layers),
                                   content, style)
        seconds = median_seconds(lambda: objective.loss_and_grads(x), args.evals, warmup=3)
        times = op_times(objective, x, args.evals)
        total = sum(times.values())
        print(f"\n{text}: {seconds * 1e3:.1f} ms per evaluation unprofiled, "
              f"{total:.1f} ms of operations profiled")
        kinds = collections.Counter()
        for op, ms in times.items():
            kind = next((k for k, types in KINDS.items() if op in types), "everything else")
            kinds[kind] += ms
        for kind, ms in kinds.most_common():
            print(f"  {kind:<40} {ms:8.1f} ms  {ms / total:6.1%}")
        products = kinds["Winograd products"]
        gflop = winograd_gflop(size, content_layer)
        if products:
            print(f"  Winograd products: {gflop:.1f} GFLOP at {gflop / products * 1e3:.0f} "
                  f"GFLOP/s ({gflop / products * 1e3 / peak:.0%} of the large-matmul rate)")
        direct = conv_gflop(size, content_layer)
        print(f"  the same convolutions direct: {direct:.1f} GFLOP; to match this evaluation "
              f"they alone would run at {direct / seconds:.0f} GFLOP/s")
        print("  by op type:")
        for op, ms in times.most_common(args.types):
            print(f"    {op:<38} {ms:8.1f} ms")


if __name__ == "__main__":
    main()
