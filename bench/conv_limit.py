"""Where one eager 3x3 convolution (64 -> 64 channels, VGG19's block1_conv2) stops working on
this CPU: each size in a fresh process, with TensorFlow's oneDNN kernels on and off, and the
seconds it took. The exit status is printed (-11: segmentation fault), with the output tensor's
size in bytes, as the suspected limit is 2 GiB (2^31 bytes) per tensor.

Without AVX-512 oneDNN convolves by im2col + GEMM and falls back to its reference loop (about
500x slower) once the input's values times the threads reach 2^28 (see
`styleflow.model.machine.GEMM_SCRATCH_VALUES`). To see that on an AVX-512 machine, cap oneDNN as an
AVX2 CPU: `ONEDNN_MAX_CPU_ISA=AVX2 TF_NUM_INTRAOP_THREADS=8 python bench/conv_limit.py --sides
720 730`.

    python bench/conv_limit.py [--sides 2800 2896 2900 3000] [--timeout 600]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cpu import cpu_description  # noqa: E402

CHILD = r"""
import numpy as np, tensorflow as tf
x = tf.random.uniform((1, {side}, {side}, 64))
k = tf.random.uniform((3, 3, 64, 64))
y = tf.nn.conv2d(x, k, 1, "SAME")
print(float(tf.reduce_sum(y[0, :2, :2, :2])))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[2800, 2896, 2900, 3000])
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}")
    print(f"{'side':>6} {'output bytes':>14} {'vs 2^31':>8} {'oneDNN':>7} {'exit':>6} {'s':>7}")
    for side in args.sides:
        size = side * side * 64 * 4
        for onednn in ("1", "0"):
            env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=onednn, TF_CPP_MIN_LOG_LEVEL="3",
                       CUDA_VISIBLE_DEVICES="")
            began = time.perf_counter()
            try:
                proc = subprocess.run([sys.executable, "-c", CHILD.format(side=side)], env=env,
                                      capture_output=True, text=True, timeout=args.timeout)
                code = str(proc.returncode)
            except subprocess.TimeoutExpired:
                code = "timeout"
            print(f"{side:>6} {size:>14} {size / 2**31:8.3f} {'on' if onednn == '1' else 'off':>7} "
                  f"{code:>6} {time.perf_counter() - began:7.1f}", flush=True)


if __name__ == "__main__":
    main()
