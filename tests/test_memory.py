"""The memory estimate that refuses images too large to fit, before anything is allocated."""

import pytest

from conftest import assert_clean_error, call_cli, make_image
from styleflow.defaults import FULL_CONTENT_LAYER, FULL_STYLE_LAYERS, LITE_STYLE_LAYERS
from styleflow.errors import StyleflowError
from styleflow.model.layout import activation_elements
from styleflow.plan.host import _cgroup_free
from styleflow.plan.memory import BASE_BYTES, check_fits, estimate_bytes, largest_fitting

FULL = [FULL_CONTENT_LAYER, *FULL_STYLE_LAYERS]


def test_activation_count_by_hand():
    # 32x32 up to block1_conv2: two 64-channel maps at full size.
    assert activation_elements((32, 32), ["block1_conv2"]) == 2 * 32 * 32 * 64
    # ... and up to block2_conv1: plus the pooled map and one 128-channel map at half size.
    assert activation_elements((32, 32), ["block2_conv1"]) == \
        2 * 32 * 32 * 64 + 16 * 16 * 64 + 16 * 16 * 128


def test_estimate_grows_with_size_depth_and_precision():
    # Both sizes convolve the same layers by Winograd with Numba's transforms (block1_conv2's
    # tiles pass Numba's limit at 800x600, so that size counts less for them).
    small, large = estimate_bytes((150, 200), FULL), estimate_bytes((300, 400), FULL)
    assert large > 3 * (small - estimate_bytes((1, 1), FULL))
    large = estimate_bytes((600, 800), FULL)
    assert estimate_bytes((600, 800), LITE_STYLE_LAYERS) < large
    assert estimate_bytes((600, 800), FULL, "bfloat16") < large


def test_check_fits_names_the_limit_and_a_size_that_fits():
    budget = estimate_bytes((768, 1024), FULL)
    check_fits((768, 1024), FULL, available=budget, resident=0)  # fits exactly: no error
    with pytest.raises(StyleflowError, match=r"2048x1536 image needs about .* GB .* available; "
                                             r"use at most about \d+x\d+"):
        check_fits((1536, 2048), FULL, available=budget, resident=0)
    h, w = largest_fitting((1536, 2048), FULL, "float32", budget)
    assert 1000 <= w <= 1024 and abs(w / h - 4 / 3) < 0.01
    assert estimate_bytes((h, w), FULL) <= budget


def test_cli_refuses_an_image_that_cannot_fit_before_allocating(tmp_path):
    base = make_image(tmp_path / "b.png", (48, 32), 1)
    # 90000x60000 would need terabytes; the refusal must come before any image is resized.
    proc = call_cli("neural_style_transfer.py", base, base, tmp_path / "r", "--weights", "random",
                   "--height", "60000")
    assert_clean_error(proc, "90000x60000", "needs about", "available", "--width/--height")
    assert not list(tmp_path.glob("r_*"))


def test_what_is_already_resident_counts_toward_the_base():
    """TensorFlow and the weights are loaded before the check: not counted twice."""
    work = estimate_bytes((768, 1024), FULL) - BASE_BYTES
    check_fits((768, 1024), FULL, available=work + 2**20, resident=BASE_BYTES)
    with pytest.raises(StyleflowError, match="use at most about"):
        check_fits((768, 1024), FULL, available=work + 2**20, resident=0)


def test_too_little_memory_for_anything_says_so_instead_of_1x1():
    with pytest.raises(StyleflowError) as caught:
        check_fits((200, 267), FULL, available=200 * 2**20, resident=0)
    message = str(caught.value)
    assert "not enough for TensorFlow and the network" in message and "1x1" not in message
    # At the other end a size that fits a little budget is suggested, with its aspect.
    with pytest.raises(StyleflowError, match=r"use at most about \d+x\d+") as caught:
        check_fits((1536, 2048), FULL, available=BASE_BYTES, resident=BASE_BYTES // 2)


def test_cgroup_room_leaves_out_reclaimable_page_cache(tmp_path):
    (tmp_path / "memory.max").write_text(f"{4 * 2**30}\n")
    (tmp_path / "memory.current").write_text(f"{3 * 2**30}\n")
    (tmp_path / "memory.stat").write_text(f"anon 1\ninactive_file {2 * 2**30}\nactive_file 5\n")
    assert _cgroup_free(tmp_path) == 3 * 2**30
    (tmp_path / "memory.max").write_text("max\n")
    assert _cgroup_free(tmp_path) is None


def test_style_images_are_checked_too(tmp_path):
    """A style scaled up by --style-scales goes through the network once: checked as well."""
    from styleflow import Stylizer

    content = make_image(tmp_path / "c.png", (48, 32), 1)
    with pytest.raises(StyleflowError, match=r"style image 1 after style_scales: a 96000x64000 "
                                             r"image needs about .* use a smaller style_scales"):
        Stylizer("random").iter_stylize(str(content), str(content), style_scales=[2000])


def test_estimate_follows_tensorflow_s_kernels(monkeypatch):
    """Without oneDNN, TensorFlow's kernels keep more memory (lite 2048x1536: 12.6 GB measured
    against 8.5 GB with it): the estimate follows whichever runs."""
    from styleflow.defaults import LITE_CONTENT_LAYER
    from styleflow.model import machine

    # The machine the figures were measured on, whichever runs the test: an x86 CPU with
    # AVX-512 and no GPU.
    monkeypatch.setattr(machine.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(machine, "gpu_visible", lambda: False)
    monkeypatch.setattr(machine, "onednn_avx512", lambda: True)
    lite = [LITE_CONTENT_LAYER, *LITE_STYLE_LAYERS]
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    assert not machine.onednn_enabled()
    without = estimate_bytes((1536, 2048), lite)
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
    assert machine.onednn_enabled()
    winograd = estimate_bytes((1536, 2048), lite)
    monkeypatch.setattr(machine, "transposed_convolutions", lambda precision: False)
    direct = estimate_bytes((1536, 2048), lite)
    # Each above what bench/memory.py measured there, none far above it: 12.6 GB without
    # oneDNN, 9.59 GB with Winograd from block2_conv2 on (stop 37), 8.47 GB with direct
    # convolutions.
    for estimate, measured in ((without, 12.56), (winograd, 9.59), (direct, 8.47)):
        assert measured < estimate / 2**30 < measured + 1.5


def test_winograd_layers_counted_where_they_run(monkeypatch):
    """Winograd's kept transforms count only for layers whose maps it convolves at that size,
    and only where it is used at all; its transient tiles count beside the activations made
    before their layer, where those and the tiles exceed the whole pass."""
    from styleflow.model import machine
    from styleflow.plan import memory

    monkeypatch.setattr(machine, "transposed_convolutions", lambda precision: True)
    monkeypatch.setattr(machine, "onednn_enabled", lambda: True)
    assert memory.winograd_kept_bytes((24, 24), FULL) == 0  # block2's 12x12 map: direct
    per_activation = memory.BYTES_PER_ACTIVATION[True]["float32"]
    assert memory.pass_bytes((24, 24), FULL) == int(per_activation
                                                    * activation_elements((24, 24), FULL))
    # 128x128 crops of a 2048x1536 image: block2 (64x64), block3 (32x32) and block4 (16x16)
    # by Winograd, block5 (8x8) and block 1 direct.
    crop, whole = (128, 128), (1536, 2048)
    kernels = 64 * 128 + 128 * 128 + 128 * 256 + 3 * 256 * 256 + 256 * 512 + 3 * 512 * 512
    assert memory.winograd_kept_bytes(crop, FULL, whole=whole) == int(
        (1 + 2 * 36 / 9) * 9 * kernels * 4)
    # Each layer's output values at 128x128, and the values of the map Winograd's tiles are
    # counted on where it convolves that layer (0: direct, or a pooling).
    layers = ([(128 * 128 * 64, 0)] * 2 + [(64 * 64 * 64, 0)]
              + [(64 * 64 * 128, 64 * 64 * 128)] * 2 + [(32 * 32 * 128, 0)]
              + [(32 * 32 * 256, 32 * 32 * 256)] * 4 + [(16 * 16 * 256, 0)]
              + [(16 * 16 * 512, 16 * 16 * 512)] * 4 + [(8 * 8 * 512, 0)] * 3)

    def held(stages):  # the tiles beside everything made before their layer
        placed = [per_activation * sum(v for v, _ in stages[:i])
                  + memory.WINOGRAD_TRANSIENT_BYTES * t for i, (_, t) in enumerate(stages) if t]
        return max(placed), per_activation * sum(v for v, _ in stages)

    placed, all_made = held(layers)
    assert all_made == per_activation * activation_elements((128, 128), FULL)
    assert placed > all_made  # here the tiles raise the pass's peak
    assert memory.pass_bytes(crop, FULL, whole=whole) == int(placed)
    # A whole 128x128 image convolves block1_conv2 (64 -> 64) by Winograd too.
    narrow = [layers[0], (128 * 128 * 64, 128 * 128 * 64), *layers[2:]]
    assert memory.winograd_kept_bytes(crop, FULL) == int(
        (1 + 2 * 36 / 9) * 9 * (kernels + 64 * 64) * 4)
    assert memory.pass_bytes(crop, FULL) == int(max(held(narrow)))
    assert (estimate_bytes(crop, FULL) - estimate_bytes((24, 24), FULL)
            > memory.winograd_kept_bytes(crop, FULL) + max(held(narrow)) - all_made)
    # Past the split at block2_pool, beside the deep layers' activations only.
    assert memory.deep_pass_bytes(crop, FULL, "block2_pool") == int(max(held(layers[6:])))
    assert [n for n, *_ in memory.winograd_layers(crop, FULL, whole=whole)][:2] == [
        "block2_conv1", "block2_conv2"]
    assert [n for n, *_ in memory.winograd_layers(crop, FULL)][:2] == [
        "block1_conv2", "block2_conv1"]
    monkeypatch.setattr(machine, "transposed_convolutions", lambda precision: False)
    assert memory.winograd_kept_bytes((2048, 2048), FULL) == 0
    assert memory.winograd_layers((2048, 2048), FULL) == []


PEAK_CHILD = r"""
import json, sys
from styleflow.model.runtime import quiet_tensorflow
quiet_tensorflow()
from styleflow import Stylizer
from styleflow.defaults import LITE_CONTENT_LAYER, LITE_STYLE_LAYERS
images, budget, layers = sys.argv[1], float(sys.argv[2]), sys.argv[3]
kw = (dict(content_layer=LITE_CONTENT_LAYER, style_layers=list(LITE_STYLE_LAYERS))
      if layers == "lite" else {})
run = Stylizer("random", seed=0, precision="float32", jit="off").iter_transfer(
    images + "/base5.jpg", images + "/ref6.jpg", width=1024, height=768, iterations=1,
    max_memory=budget, **kw)
seen = []
def stop_after_three(n, loss):
    seen.append(n)
    if len(seen) == 3:
        raise KeyboardInterrupt
run.on_evaluation = stop_after_three
try:
    for _ in run:
        pass
except KeyboardInterrupt:
    pass
# VmHWM, not ru_maxrss: a child's ru_maxrss starts from its parent's at the fork (pytest's).
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status")
            if line.startswith("VmHWM:"))
print(json.dumps(dict(peak=peak, need=run.layout.need, tiled=run.layout.tile is not None,
                      split=run.layout.split)))
"""


@pytest.mark.slow
@pytest.mark.parametrize("budget,layers", [("1.5", "lite"), ("8", "lite"), ("3", "full")])
def test_estimate_and_measured_peak_agree(budget, layers):
    """The plan's estimate against the peak resident memory of a real run (a child process:
    targets, tracing and three L-BFGS evaluations at 1024x768, the lite layers tiled in a
    1.5 GB budget and in one pass in an 8 GB budget, the full layers' loss split at a pooling
    layer in 3 GB, so what else the machine runs does not change the layout): drift either
    way beyond these bounds (a term the plan misses, or one it counts twice) fails here
    before it fails a user at print size."""
    import json
    import subprocess
    import sys

    from conftest import ROOT, cli_env

    proc = subprocess.run([sys.executable, "-c", PEAK_CHILD, str(ROOT / "images"), budget,
                           layers],
                          capture_output=True, text=True, timeout=900, cwd=ROOT,
                          env=cli_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["tiled"] == (budget != "8")
    assert (result["split"] is not None) == (layers == "full")
    ratio = result["peak"] / result["need"]
    # Measured 1.13 tiled and 0.85 in one pass on a 2-core EPYC (stop 26).
    assert 0.7 <= ratio <= 1.25, f"peak {result['peak'] / 2**30:.2f} GB against an " \
                                 f"estimate of {result['need'] / 2**30:.2f} GB"
