"""Coarse-to-fine (--scales): sizes, each size starting from the last one's result, what the
CLIs print, log and write, and bad values."""

import numpy as np
import pytest

from conftest import assert_clean_error, call_cli
from styleflow import Stylizer
from styleflow.optim import scales
from styleflow.report.runlog import read_log


def test_sizes_halve_per_side_and_end_at_the_request():
    assert scales.sizes((768, 1024), 3) == [(192, 256), (384, 512), (768, 1024)]
    assert scales.sizes((300, 401), 1) == [(300, 401)]


def test_upsample_is_bicubic_and_keeps_smooth_content():
    y, x = np.mgrid[0:8, 0:10].astype(np.float32)
    image = np.stack([x, y, x + y], -1)[None]
    big = scales.upsample(image, (16, 20))
    assert big.shape == (1, 16, 20, 3)
    assert abs(big[0, 8, 10, 0] - 5.0) < 0.6 and abs(big.mean() - image.mean()) < 0.5


@pytest.fixture(scope="module")
def stylizer():
    return Stylizer("random", seed=1)


@pytest.mark.slow
def test_each_size_starts_from_the_last_result(stylizer, tiny, monkeypatch):
    monkeypatch.setitem(scales.COARSE_EVALUATIONS, "lbfgs", 6)
    seen = []
    run = stylizer.iter_transfer(tiny[0], tiny[1], iterations=1, height=64, scales=3,
                                 on_scale=seen.append)
    assert run.total == 2 * 6 + 20
    content_start = run.problem.start.copy()
    evaluations = []
    run.on_evaluation = lambda n, loss: evaluations.append(n)
    result = None
    for _ in run:
        result = run.result()
    assert [s.size for s in seen] == [(16, 24), (32, 48)] and [s.index for s in seen] == [1, 2]
    assert all(s.count == 3 and s.evaluations >= 6 for s in seen)
    assert result.size == (64, 96)
    # The full size started from the upsampled coarse result, not from the content.
    assert np.abs(run.problem.start - content_start).mean() > 1.0
    assert np.array_equal(run.problem.start, run._coarse_start)
    assert evaluations == sorted(evaluations) and evaluations[-1] >= run.total - 2


@pytest.mark.slow
def test_adam_scales_and_the_noise_start_at_the_coarsest_size(stylizer, tiny, monkeypatch):
    monkeypatch.setitem(scales.COARSE_EVALUATIONS, "adam", 5)
    run = stylizer.iter_stylize(tiny[0], [tiny[1]], iterations=3, width=64, scales=2)
    assert run.total == 5 + 3
    steps = [it.iteration for it in run]
    assert steps == [1, 2, 3] and len(run.scales) == 1 and run.scales[0].size == (21, 32)
    assert run.result().size == (43, 64)


@pytest.mark.slow
def test_transfer_cli_logs_coarse_sizes_before_iteration_00(tiny, tmp_path, monkeypatch):
    monkeypatch.setitem(scales.COARSE_EVALUATIONS, "lbfgs", 5)
    log = tmp_path / "l.csv"
    proc = call_cli("neural_style_transfer.py", tiny[0], tiny[1], tmp_path / "p", "--weights",
                    "random", "--iter", "2", "--height", "64", "--scales", "2", "--log", log)
    assert proc.returncode == 0, proc.stderr
    assert "scale 1/2 at 48x32:" in proc.stdout
    assert proc.stdout.index("scale 1/2") < proc.stdout.index("iteration 1/2")
    rows = read_log(log)
    assert [int(r["iteration"]) for r in rows] == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.glob("p_*")) == ["p_at_iteration_00.png",
                                                            "p_at_iteration_01.png"]


def test_too_many_scales_for_the_layers_is_one_line(tiny, tmp_path):
    proc = call_cli("neural_style_transfer.py", tiny[0], tiny[1], tmp_path / "p", "--weights",
                    "random", "--iter", "1", "--height", "64", "--scales", "4")
    assert_clean_error(proc, "--scales 4", "too small", "fewer scales")
    assert not list(tmp_path.glob("p_*"))


@pytest.mark.slow
def test_adam_takes_smaller_steps_at_the_finer_sizes(stylizer, tiny, monkeypatch):
    """Full rate at the coarsest size (from noise), `FINE_LEARNING_RATE` of it at every finer
    size, reached over `FINE_WARMUP_STEPS`: the upsampled start is already settled."""
    from styleflow.api import runs as api

    rates = []
    real = api.AdamLoop

    def recording(objective, start, settings, *a, **kw):
        rates.append((objective.shape[1:3], settings.learning_rate, settings.warmup))
        return real(objective, start, settings, *a, **kw)

    monkeypatch.setattr(api, "AdamLoop", recording)
    monkeypatch.setitem(scales.COARSE_EVALUATIONS, "adam", 4)
    monkeypatch.setattr(scales, "FINE_WARMUP_STEPS", 3)
    run = stylizer.iter_stylize(tiny[0], [tiny[1]], iterations=2, width=128, scales=3,
                                learning_rate=8.0)
    list(run)
    fine = 8.0 * scales.FINE_LEARNING_RATE
    # The first loop is the full size's, built with the run (then replaced at its start).
    assert [rate for _, rate, _ in rates[1:]] == [8.0, fine, fine]
    assert [warmup for _, _, warmup in rates[1:]] == [0, 3, 3]
    assert [size for size, _, _ in rates[1:]] == [(21, 32), (43, 64), (85, 128)]
    single = []
    monkeypatch.setattr(api, "AdamLoop", lambda o, s, settings, *a, **kw: (
        single.append((settings.learning_rate, settings.warmup)),
        real(o, s, settings, *a, **kw))[1])
    list(stylizer.iter_stylize(tiny[0], [tiny[1]], iterations=1, width=64, learning_rate=8.0))
    assert single == [(8.0, 0)]  # one size: the rate given from the first step, as before
