"""Shared fixtures: tiny images, the shared data folder, and running the CLIs as users do."""

from __future__ import annotations

import os
import subprocess
import tempfile
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
LITE_H5 = ROOT / "styleflow" / "data" / "vgg19_imagenet_block1-3.h5"
EMPTY_KERAS_HOME = tempfile.mkdtemp(prefix="styleflow-keras-home-")


def make_image(path: Path, size=(48, 32), seed=0, mode="RGB") -> Path:
    """A smooth random colour image (w, h) = size, saved at `path`."""
    rng = np.random.default_rng(seed)
    w, h = size
    small = rng.integers(0, 256, (max(2, h // 8), max(2, w // 8), 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR)
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path)
    return path


@pytest.fixture
def tiny(tmp_path):
    """A 48x32 content image and a style image of another size."""
    return make_image(tmp_path / "base.png", (48, 32), 1), make_image(tmp_path / "style.png", (40, 40), 2)


def cli_env(**extra) -> dict:
    env = dict(os.environ)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    # An unreachable mirror and an empty cache: 'imagenet' fails fast and alike everywhere.
    env["STYLEFLOW_IMAGENET_URL"] = "http://127.0.0.1:9/vgg19_notop.h5"
    env.setdefault("KERAS_HOME", EMPTY_KERAS_HOME)
    env.update(extra)
    return env


def run_cli(script: str, *args, timeout=600, **env) -> subprocess.CompletedProcess:
    """Run one of the top-level scripts as a user would, capturing output."""
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env=cli_env(**env), stdin=subprocess.DEVNULL)


def assert_clean_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """A non-zero exit with one readable error line naming the problem, and no traceback."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle.lower() in lines[0].lower(), lines[0]
