"""What `--precision auto` resolves to on this CPU, from its flags alone (no TensorFlow).

Why a flags rule and not a measurement: a start-up micro-benchmark would cost seconds on every
run and give different answers under load, so two runs of one command could train in different
precisions. The CPU flags are fixed for a machine, read in microseconds, and name exactly the
units that make bfloat16 fast: Intel AMX tiles with bf16 (`amx_bf16`) or AVX-512 BF16
(`avx512_bf16`, Intel Cooper Lake+ and AMD Zen 4+). Without them TensorFlow/oneDNN emulates
bfloat16 and training is several times *slower* than float32 (measured ~10x on an AVX2 CPU),
so auto picks float32 there, and wherever the flags cannot be read (not Linux, no
/proc/cpuinfo).

`parse`, `check` and `summary` import nothing from here; `train`, `run` and `sweep` do, before
TensorFlow starts, so the choice can be printed and refused early.
"""

from __future__ import annotations

import os
from pathlib import Path

# Tests (and users on an odd VM whose /proc/cpuinfo hides flags) set the flags explicitly:
# CNNSPEC_CPU_FLAGS="avx2 fma" makes this machine look AVX2-only, on every machine.
CPU_FLAGS_ENV = "CNNSPEC_CPU_FLAGS"
CPUINFO = Path("/proc/cpuinfo")

# The flag, the reason printed when it decides, in order of preference.
_BF16_UNITS = (
    ("amx_bf16", "this CPU has AMX bf16 units"),
    ("avx512_bf16", "this CPU has AVX-512 BF16 instructions"),
)


def parse_cpu_flags(cpuinfo_text: str) -> frozenset[str]:
    """The `flags` of the first processor in /proc/cpuinfo text (x86; empty if none).

    All cores of one machine report the same flags, so the first line decides. ARM kernels
    call the line `Features`; it is read too (`bf16` there is not an x86 flag and is ignored
    by `choose_precision`, which keeps ARM on float32 until bf16 is measured there).
    """
    for line in cpuinfo_text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_flags() -> frozenset[str] | None:
    """This machine's CPU flags: $CNNSPEC_CPU_FLAGS if set, else /proc/cpuinfo's.

    None when they cannot be known (no /proc/cpuinfo: macOS, Windows; unreadable), which
    `choose_precision` treats as "no native bf16".
    """
    forced = os.environ.get(CPU_FLAGS_ENV)
    if forced is not None:
        return frozenset(forced.replace(",", " ").split())
    try:
        text = CPUINFO.read_text(errors="replace")
    except OSError:
        return None
    return parse_cpu_flags(text)


def choose_precision(flags: frozenset[str] | set[str] | None) -> tuple[str, str]:
    """(precision, reason) that `--precision auto` resolves to for CPU `flags`.

    bf16 (mixed bfloat16) where the CPU has native bf16 math (AMX bf16 or AVX-512 BF16),
    float32 everywhere else, including when the flags are unknown (None).
    """
    if flags is None:
        return "float32", "CPU flags unknown (no /proc/cpuinfo), so no native bf16 is assumed"
    for flag, reason in _BF16_UNITS:
        if flag in flags:
            return "bf16", reason
    if "avx512f" in flags:
        return "float32", "this CPU has AVX-512 but no bf16 units; bf16 would be emulated"
    return "float32", ("this CPU has no native bf16 units, AMX or AVX-512 BF16; bf16 would be "
                       "emulated")


def resolve_precision(requested: str) -> tuple[str, str]:
    """(precision actually used, why) for a requested "auto", "float32" or "bf16"."""
    if requested == "auto":
        precision, reason = choose_precision(cpu_flags())
        return precision, f"auto: {reason}"
    return requested, "asked for"
