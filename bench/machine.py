"""What a bench runs on: the CPU, printed beside its figures, and the data it trains on.

Why: machines here differ (AVX2 only, AVX-512 with bf16, Intel AMX) and oneDNN picks different
kernels on each, so a ratio means little without the CPU that produced it; and a fresh clone may
or may not have ../shared beside it, so every bench picks its data the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar-10-batches-py"

# The flags that decide which kernels oneDNN can use for float32 and bfloat16 math.
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_line(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """`cpu: <model>, N cores, flags: avx2 avx512f …` (only the flags that matter for speed)."""
    model, flags = "unknown model", set()
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown model":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    have = [f for f in KERNEL_FLAGS if f in flags] or ["(none of " + " ".join(KERNEL_FLAGS) + ")"]
    return f"cpu: {model}, {os.cpu_count()} cores, flags: {' '.join(have)}"


def default_data() -> Path:
    """The shared 5,000-image subset when ../shared is beside the clone, else the bundled sample
    (so every bench runs in a fresh clone; its figures then come from 1,000 images)."""
    if SHARED_DATA.is_dir():
        return SHARED_DATA.resolve()
    from cnnspec.training.data import bundled_sample_dir

    return bundled_sample_dir()
