"""Byte-identical outputs: both scripts and the `styleflow` subcommands, run with a seed, write
the files whose SHA-256 sums were recorded for this CPU profile (floating-point results differ
between instruction sets, so each profile has its own). A change that alters any output byte
fails here; a deliberate one records new sums:

    python tests/test_checksums.py --record

which runs the same commands and writes tests/checksums.json for the CPU it runs on."""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from pathlib import Path

import pytest

from conftest import ROOT, call_cli

SUMS = Path(__file__).with_name("checksums.json")
IMAGES = ROOT / "images"


def commands(out: Path) -> list[tuple[str, ...]]:
    """(script, arguments...) of each run: the two scripts, the three subcommands, a tiled run
    of each method, coarse-to-fine, a 16-bit TIFF and the faithful schedule among them."""
    i = IMAGES
    return [
        ("neural_style_transfer.py", i / "base1.jpg", i / "ref6.jpg", out / "t", "--iter", "2",
         "--weights", "lite", "--height", "48", "--seed", "0", "--quiet"),
        ("neural_style.py", "--content", i / "base1.jpg", "--styles", i / "ref6.jpg",
         i / "ref7.jpg", "--output", out / "s.png", "--iterations", "5", "--network", "lite",
         "--width", "48", "--seed", "0", "--quiet"),
        ("styleflow", "transfer", i / "base3.jpg", i / "ref7.jpg", out / "st", "--iter", "1",
         "--weights", "random", "--width", "64", "--seed", "1", "--quiet", "--faithful"),
        ("styleflow", "style", "--content", i / "base3.jpg", "--styles", i / "ref6.jpg",
         "--output", out / "ss.tif", "--iterations", "4", "--network", "lite", "--width", "64",
         "--seed", "1", "--quiet", "--scales", "2"),
        ("styleflow", "batch", "--contents", i / "base1.jpg", i / "base3.jpg", "--styles",
         i / "ref6.jpg", "--out", out / "b", "--iter", "1", "--height", "32", "--weights",
         "lite", "--seed", "0", "--quiet"),
        ("neural_style_transfer.py", i / "base5.jpg", i / "ref6.jpg", out / "tt", "--iter", "1",
         "--weights", "lite", "--height", "80", "--tile", "32", "--seed", "0", "--quiet"),
        ("neural_style.py", "--content", i / "base5.jpg", "--styles", i / "ref7.jpg", "--output",
         out / "ts.png", "--iterations", "3", "--network", "random", "--width", "96", "--tile",
         "40", "--seed", "0", "--quiet"),
    ]


def profile() -> str:
    """The CPU profile results depend on: architecture, oneDNN's instruction set (AVX-512 or
    not, ONEDNN_MAX_CPU_ISA included), native bfloat16 (`styleflow` picks it by default), and
    TensorFlow's version."""
    import tensorflow as tf

    from styleflow.model import machine

    isa = "avx512" if machine.onednn_avx512() else "below-avx512"
    bf16 = "+".join(f for f in machine.BF16_CPU_FLAGS if f in machine.cpu_flags()) or "no-bf16"
    return f"{platform.machine()}-{isa}-{bf16}-tf{tf.__version__}"


def run_all(out: Path) -> dict[str, str]:
    """Run every command, writing under `out`; the SHA-256 of every image file written."""
    for command in commands(out):
        proc = call_cli(*command)
        assert proc.returncode == 0, (command, proc.stderr)
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and p.suffix != ".jsonl"}


@pytest.mark.slow
def test_outputs_are_byte_identical_to_the_recorded_ones(tmp_path):
    recorded = json.loads(SUMS.read_text()) if SUMS.exists() else {}
    key = profile()
    if key not in recorded:
        pytest.skip(f"no sums recorded for CPU profile {key}; after checking the outputs, "
                    "record them: python tests/test_checksums.py --record")
    got = run_all(tmp_path)
    assert len(got) == 9, sorted(got)
    assert got == recorded[key]


if __name__ == "__main__" and "--record" in sys.argv:
    import tempfile

    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as folder:
        sums = run_all(Path(folder))
    recorded = json.loads(SUMS.read_text()) if SUMS.exists() else {}
    recorded[profile()] = sums
    SUMS.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
    print(f"recorded {len(sums)} sums for {profile()} in {SUMS}")
