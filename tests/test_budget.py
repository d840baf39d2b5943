"""Fitting a run into a memory budget: one pass when it fits, else exact tiles that fit, with
L-BFGS's history shortened only when it must be; refusals in one line."""

import numpy as np
import pytest
from PIL import Image

from conftest import assert_clean_error, call_cli, make_image
from styleflow.objective import tiling
from styleflow.model import machine
from styleflow.plan import budget
from styleflow.defaults import FULL_CONTENT_LAYER, FULL_STYLE_LAYERS, LBFGS_HISTORY
from styleflow.errors import StyleflowError
from styleflow.plan.memory import estimate_bytes

FULL = [FULL_CONTENT_LAYER, *FULL_STYLE_LAYERS]
GB = 2**30


def choose(size, optimiser="lbfgs", **kw):
    kw.setdefault("resident", 800 * 2**20)
    return budget.choose(size, FULL, [FULL_CONTENT_LAYER], "float32", optimiser, **kw)


def test_one_pass_when_it_fits():
    layout = choose((300, 400), max_memory=4)
    assert layout.tile is None and layout.history == LBFGS_HISTORY
    assert layout.need == estimate_bytes((300, 400), FULL)


@pytest.mark.parametrize("optimiser,gb", [("lbfgs", 6), ("adam", 4)])
def test_tiles_that_fit_when_one_pass_does_not(optimiser, gb):
    size = (1536, 2048)
    assert estimate_bytes(size, FULL, "float32", optimiser) > gb * GB
    layout = choose(size, optimiser, max_memory=gb)
    assert layout.tile is not None and layout.need <= gb * GB
    # Not needlessly small: the halos add well under the image's own pixels again.
    assert tiling.computed_pixels(*size, FULL, layout.tile) < 1.8 * size[0] * size[1]
    # A larger budget gives larger tiles.
    bigger = choose(size, optimiser, max_memory=gb + 2)
    assert bigger.tile is None or np.prod(bigger.tile) > np.prod(layout.tile)


def test_lbfgs_history_shortens_to_fit_and_adams_moments_count():
    # 4096x3072: L-BFGS-B's state (optimiser_bytes) is 9.7 GB at m=10.
    size = (3072, 4096)
    layout = choose(size, "lbfgs", max_memory=8)
    assert budget.MIN_HISTORY <= layout.history < LBFGS_HISTORY and layout.need <= 8 * GB
    assert f"L-BFGS history {layout.history}" in layout.describe("lbfgs")
    roomy = choose(size, "lbfgs", max_memory=15)
    assert roomy.history == LBFGS_HISTORY
    # Adam's image-sized state (about 40 bytes a value) is in its estimate too.
    adam = choose(size, "adam", max_memory=4)
    assert adam.need <= 4 * GB
    assert budget.optimiser_bytes("adam", 10) * 3 * 4096 * 3072 < adam.need


def test_refused_only_when_the_smallest_tile_cannot_fit():
    with pytest.raises(StyleflowError) as caught:
        choose((3072, 4096), "lbfgs", max_memory=4)
    message = str(caught.value)
    assert "4096x3072" in message and "smallest tiles" in message and "max_memory" in message
    assert "--" not in message  # the library's words; the command lines name their flags
    assert "\n" not in message
    with pytest.raises(StyleflowError, match="GB is available"):
        choose((60000, 90000), "adam", available=8 * GB)


def test_no_single_pass_above_the_crash_limit(monkeypatch):
    # One eager pass over 11.3 MP crashed TensorFlow: large images are tiled whatever the budget.
    monkeypatch.setattr(machine, "MAX_PASS_PIXELS", 400 * 400)
    layout = choose((800, 800), "adam", max_memory=100)
    assert layout.tile is not None
    align = tiling.crop_align(FULL)
    assert max(t.pixels for t in tiling.plan(800, 800, FULL, layout.tile, align)) <= 400 * 400


def test_passes_stay_within_onednn_gemm_limit(monkeypatch):
    # Where oneDNN convolves by GEMM, a pass above its limit would crawl through a reference
    # loop: every pass (backward tiles and the forward Gram tiles) stays within it.
    from styleflow.model import machine

    limit = 300_000
    monkeypatch.setattr(machine, "onednn_pass_pixels", lambda precision="float32": limit)
    assert choose((400, 500), max_memory=100).tile is None
    layout = choose((768, 1024), max_memory=100)
    assert layout.tile is not None
    align = tiling.crop_align(FULL)
    for core in (layout.tile, layout.forward_tile):
        assert max(t.pixels for t in tiling.plan(768, 1024, FULL, core, align)) <= limit
    with pytest.raises(StyleflowError, match="tile=") as caught:
        choose((768, 1024), tile=700, max_memory=100)
    suggested = int(str(caught.value).split("tile=")[-1].split()[0])
    assert tiling.largest_crop(768, 1024, FULL, suggested, align) <= limit
    assert choose((768, 1024), tile=suggested, max_memory=100).tile == (suggested, suggested)


def test_tile_forces_tiles_and_bad_values_are_refused():
    assert choose((300, 400), tile=128, max_memory=4).tile == (128, 128)
    with pytest.raises(StyleflowError, match="max_memory: must be above 0 GB"):
        choose((300, 400), max_memory=0)


@pytest.mark.slow
def test_cli_runs_tiled_in_a_small_budget_and_says_so(tmp_path):
    base = make_image(tmp_path / "b.png", (64, 48), 1)
    ref = make_image(tmp_path / "s.png", (40, 40), 2)
    common = [base, ref, "--weights", "random", "--iter", "1", "--height", "48", "--seed", "1"]
    plain = call_cli("neural_style_transfer.py", *common[:2], tmp_path / "p", *common[2:])
    tiled = call_cli("neural_style_transfer.py", *common[:2], tmp_path / "t", *common[2:],
                     "--tile", "32")
    assert plain.returncode == 0 and tiled.returncode == 0, tiled.stderr
    assert "memory: tiles of 32x32 px (exact)" in tiled.stdout
    assert "memory:" not in plain.stdout  # the script's output is unchanged without them
    a = np.asarray(Image.open(tmp_path / "p_at_iteration_00.png"), float)
    b = np.asarray(Image.open(tmp_path / "t_at_iteration_00.png"), float)
    assert np.abs(a - b).mean() < 0.5  # same optimisation, rounding apart


@pytest.mark.parametrize("args, needle", [(["--max-memory", "0"], "--max-memory"),
                                          (["--tile", "-3"], "--tile"),
                                          (["--scales", "0"], "--scales")])
def test_cli_option_values_are_checked(args, needle, tiny, tmp_path):
    proc = call_cli("neural_style.py", "--content", tiny[0], "--styles", tiny[1], "--output",
                    tmp_path / "o.png", "--network", "random", *args)
    assert_clean_error(proc, needle)


def test_gpu_free_memory_is_read_for_the_gpu_tensorflow_uses(monkeypatch):
    import subprocess

    from styleflow.plan import host

    asked = []

    def smi(free, code=0):
        def run(command, **kw):
            asked.append(command)
            return subprocess.CompletedProcess(command, code, free, "")
        return run

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    found = host.gpu_available_bytes(smi("40536\n"))
    assert found >= 40536 * 2**20 and asked[-1][-2:] == ["-i", "3"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    host.gpu_available_bytes(smi("100\n"))
    assert asked[-1][-2:] == ["-i", "0"]
    assert host.gpu_available_bytes(smi("", 9)) is None  # nvidia-smi failed
    assert host.gpu_available_bytes(smi("[N/A]\n")) is None

    def missing(command, **kw):
        raise FileNotFoundError(command[0])
    assert host.gpu_available_bytes(missing) is None


@pytest.mark.parametrize("free_gb", [3, None])
def test_on_a_gpu_the_tiles_follow_its_free_memory(monkeypatch, free_gb):
    """On a GPU the host's memory does not decide the tiles: the device's free memory does,
    and where it cannot be read, one pass as before (TensorFlow's own error if it fails)."""
    from styleflow.api import problem
    from styleflow.api.networks import Network
    from styleflow.model import machine
    from styleflow.plan import host

    monkeypatch.setattr(machine, "gpu_visible", lambda: True)
    monkeypatch.setattr(host, "gpu_available_bytes",
                        lambda: None if free_gb is None else free_gb * GB)
    monkeypatch.setattr(host, "available_bytes", lambda: 100 * GB)  # the host: roomy
    network = Network(None, None, None, [FULL_CONTENT_LAYER], list(FULL_STYLE_LAYERS))
    layout = problem.check_size((1536, 2048), network, "output size", "adam")
    if free_gb is None:
        assert layout.tile is None
    else:
        assert layout.tile is not None and layout.need <= free_gb * GB


def test_lbfgs_gives_its_history_for_tiles_when_none_is_comfortable(monkeypatch):
    """When no history reaches a comfortable crop, the shortest one buys the largest tiles (the
    halos would dominate the run's time otherwise)."""
    size = (1536, 2048)
    monkeypatch.setattr(budget, "COMFORTABLE_CROP", 10**9)  # unreachable in 4 GB
    monkeypatch.setattr(budget, "SPLITS", ())  # tiles of the whole network
    layout = choose(size, "lbfgs", max_memory=4)
    assert layout.history == budget.MIN_HISTORY and layout.need <= 4 * GB
    longest = budget._bisect(  # the largest crop the full history leaves room for
        lambda crop: budget.tiled_need(size, crop, FULL, [FULL_CONTENT_LAYER], "float32",
                                       "lbfgs", LBFGS_HISTORY), 4 * GB, size[0] * size[1] * 4 + 1)
    assert np.prod(layout.tile) > 0 and (longest is None or tiling.computed_pixels(
        *size, FULL, layout.tile) <= tiling.computed_pixels(
        *size, FULL, tiling.best_core(*size, FULL, longest)))


def test_the_loss_is_split_where_the_deep_layers_fit_whole():
    """Full layers at 2048x1536 in 4 GB: the deep layers run whole past a pooling layer, the
    shallow ones over comfortable tiles; the shallowest split that fits is taken, a larger
    budget moves it up; the lite layers (measured no faster split) and a forced tile keep
    tiles of the whole network."""
    size = (1536, 2048)
    layout = choose(size, "adam", max_memory=4)
    assert layout.split in budget.SPLITS and layout.need <= 4 * GB
    assert layout.tile is not None  # the targets' tiles
    from styleflow.model.layout import STAGES, stage

    at = STAGES.index(stage(layout.split))
    shallow = [n for n in FULL if STAGES.index(stage(n)) < at] + [layout.split]
    assert tiling.largest_crop(*size, shallow, layout.split_tile) >= budget.SPLIT_MIN_CROP
    assert "up to block" in layout.describe("adam")
    roomy = choose(size, "adam", max_memory=9)
    assert budget.SPLITS.index(roomy.split) < budget.SPLITS.index(layout.split)
    # Each candidate's estimate grows with the work left whole: a shallower split needs more.
    needs = [budget.split_need(size, 512 * 512, FULL, [FULL_CONTENT_LAYER], "float32", "adam",
                               LBFGS_HISTORY, split) for split in budget.SPLITS]
    assert needs == sorted(needs, reverse=True)
    from styleflow.defaults import LITE_CONTENT_LAYER, LITE_STYLE_LAYERS
    lite = budget.choose(size, [LITE_CONTENT_LAYER, *LITE_STYLE_LAYERS], [LITE_CONTENT_LAYER],
                         "float32", "adam", max_memory=4, resident=0)
    assert lite.tile is not None and lite.split is None
    assert choose(size, "adam", max_memory=4, tile=512).split is None
