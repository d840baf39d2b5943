"""Keras 3 backends for the same model: seconds per loss+gradient evaluation of the Keras
example's objective with styleflow's own VGG19 feature extractor (`network.build_extractor`,
plain Keras layers) under the TensorFlow backend (styleflow's compiled objective) and under the
JAX backend (`jax.jit(jax.value_and_grad)` over the model's stateless call), each in a fresh
process, measured in one run. Random weights, full layers, float32.

JAX is a benchmark dependency only (`pip install -r requirements-bench.txt`); without it its
row says so.

    python bench/backends.py [--sizes 400x300 800x600] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cpu import cpu_description  # noqa: E402
from timing import parse_size, run_child  # noqa: E402

COMMON = r"""
import json
from timing import median_seconds
import numpy as np
from styleflow.defaults import FULL_CONTENT_LAYER, FULL_STYLE_LAYERS
from styleflow.model.network import KERAS_INPUT, build_extractor
from styleflow.model.weights import random_weights
layers = [FULL_CONTENT_LAYER, *FULL_STYLE_LAYERS]
extractor = build_extractor(random_weights(0).layers, layers, convolution="keras")
rng = np.random.default_rng(0)
h, w = {h}, {w}
content = KERAS_INPUT.preprocess(rng.integers(0, 256, (h, w, 3)).astype(np.uint8))
style = KERAS_INPUT.preprocess(rng.integers(0, 256, (h, w, 3)).astype(np.uint8))
x = content + rng.normal(0, 5, content.shape).astype(np.float32)
repeats = {repeats}
"""

TENSORFLOW = COMMON + r"""
from styleflow.objective.objective import Objective
objective = Objective(extractor, content, [style], {{FULL_CONTENT_LAYER: 1.0}},
                      {{n: 1 / len(FULL_STYLE_LAYERS) for n in FULL_STYLE_LAYERS}}, 0.025, 1.0, 1.0)
seconds = median_seconds(lambda: objective.loss_and_grads(x), repeats)
print(json.dumps(dict(seconds=seconds, loss=objective.loss_and_grads(x)[0].total)))
"""

JAX = COMMON + r"""
import jax, jax.numpy as jnp
trainable = [v.value for v in extractor.trainable_variables]
fixed = [v.value for v in extractor.non_trainable_variables]

def features(image):
    out, _ = extractor.stateless_call(trainable, fixed, image, training=False)
    return out

def gram(f):
    flat = f.reshape(-1, f.shape[-1])
    return flat.T @ flat

targets = features(jnp.asarray(content))
content_target = targets[FULL_CONTENT_LAYER]
style_feats = features(jnp.asarray(style))
grams = [gram(style_feats[n]) for n in FULL_STYLE_LAYERS]
scale = 4.0 * 9.0 * float(h * w) ** 2

def loss(image):
    f = features(image)
    total = 0.025 * jnp.sum(jnp.square(f[FULL_CONTENT_LAYER] - content_target))
    for name, target in zip(FULL_STYLE_LAYERS, grams):
        total += jnp.sum(jnp.square(gram(f[name]) - target)) / scale / len(FULL_STYLE_LAYERS)
    corner = image[:, :-1, :-1, :]
    dy = jnp.square(corner - image[:, 1:, :-1, :])
    dx = jnp.square(corner - image[:, :-1, 1:, :])
    return total + jnp.sum(jnp.power(dy + dx, 1.25))

step = jax.jit(jax.value_and_grad(loss))
image = jnp.asarray(x)
seconds = median_seconds(lambda: jax.block_until_ready(step(image)), repeats)
print(json.dumps(dict(seconds=seconds, loss=float(step(image)[0]))))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["400x300", "800x600"], help="WxH")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}")
    print("full layers, float32, random weights, median of", args.repeats,
          "(oneDNN as styleflow sets it: on)")
    print(f"{'size':>9} {'TensorFlow s/eval':>18} {'JAX s/eval':>11} {'TF/JAX':>7} "
          f"{'loss diff':>10}")
    for text in args.sizes:
        h, w = parse_size(text)
        fill = dict(h=h, w=w, repeats=args.repeats)
        tf_row = run_child(TENSORFLOW.format(**fill), KERAS_BACKEND="tensorflow")
        jax_row = run_child(JAX.format(**fill), KERAS_BACKEND="jax")
        if isinstance(tf_row, str) or isinstance(jax_row, str):
            print(f"{text:>9} TensorFlow: {tf_row if isinstance(tf_row, str) else 'ok'}; "
                  f"JAX: {jax_row if isinstance(jax_row, str) else 'ok'}", flush=True)
            continue
        diff = abs(tf_row["loss"] - jax_row["loss"]) / abs(tf_row["loss"])
        print(f"{text:>9} {tf_row['seconds']:18.3f} {jax_row['seconds']:11.3f} "
              f"{tf_row['seconds'] / jax_row['seconds']:6.2f}x {100 * diff:9.3f}%", flush=True)


if __name__ == "__main__":
    main()
