"""The CPU a benchmark ran on: model and the flags that decide TensorFlow's kernels (printed
with every benchmark, as the machine varies between sessions)."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cpu_description() -> str:
    """The CPU model and the flags that decide TensorFlow's kernels."""
    from styleflow.model.machine import cpu_flags

    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from styleflow.model.machine import intra_op_threads, onednn_isa_cap

    flags = cpu_flags()
    wanted = ["avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16"]
    cap = onednn_isa_cap()
    return (f"{model}; flags: "
            f"{' '.join(f for f in wanted if f in flags) or 'none of ' + ','.join(wanted)}; "
            f"{intra_op_threads()} threads"
            + (f"; oneDNN capped at {cap} (ONEDNN_MAX_CPU_ISA)" if cap else ""))
