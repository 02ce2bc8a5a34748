"""`--precision auto`: the CPU-flag rule, the printed choice, its record, resume and seeds.

Every CLI run injects its CPU flags through $CNNSPEC_CPU_FLAGS, so these tests hold on every
machine: an "AMX" run trains in bf16 even on an AVX2-only CPU (emulated, slow, but with 64
images and a tiny spec it takes a second), an "AVX2" run in float32 even on an AMX CPU.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli

from cnnspec.backend.cpu import CPU_FLAGS_ENV, choose_precision, cpu_flags, parse_cpu_flags

# An AVX2-only Intel (Haswell..Coffee Lake), an AMD Zen 4 (AVX-512 BF16, no AMX), an Intel
# Sapphire Rapids (AMX), and an Intel Skylake-SP (AVX-512 without any bf16).
AVX2 = frozenset(["fpu", "sse4_2", "avx", "avx2", "fma", "f16c", "bmi2"])
ZEN4 = AVX2 | frozenset(["avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16"])
SPR = ZEN4 | frozenset(["avx512_fp16", "amx_tile", "amx_int8", "amx_bf16"])
SKX = AVX2 | frozenset(["avx512f", "avx512bw", "avx512vl"])

TINY = ("input 32x32x3\nclasses 10\ntrain batch=32 epochs=2 seed=5\n"
        "conv8 relu bn pool2 drop.25 | dense16 l2(.01) relu drop.5\n")
SCORES = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy")

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


# -- the rule ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("flags", "precision", "why"), [
    (AVX2, "float32", "no native bf16"),
    (SKX, "float32", "AVX-512 but no bf16"),
    (ZEN4, "bf16", "AVX-512 BF16"),
    (SPR, "bf16", "AMX bf16"),
    (frozenset(), "float32", "no native bf16"),
    (None, "float32", "unknown"),
])
def test_auto_picks_bf16_only_where_the_cpu_has_bf16_units(flags, precision, why) -> None:
    chosen, reason = choose_precision(flags)
    assert chosen == precision
    assert why in reason


def test_flags_come_from_the_first_processor_of_cpuinfo() -> None:
    text = ("processor\t: 0\nmodel name\t: Xeon\nflags\t\t: fpu avx2 amx_bf16 amx_tile\n\n"
            "processor\t: 1\nflags\t\t: fpu\n")
    assert parse_cpu_flags(text) == {"fpu", "avx2", "amx_bf16", "amx_tile"}
    assert parse_cpu_flags("processor : 0\n") == frozenset()


def test_the_environment_overrides_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CPU_FLAGS_ENV, "avx2, fma")
    assert cpu_flags() == {"avx2", "fma"}
    monkeypatch.setenv(CPU_FLAGS_ENV, "")
    assert choose_precision(cpu_flags())[0] == "float32"


def test_reading_the_flags_imports_no_tensorflow() -> None:
    code = ("import sys, cnnspec.backend.cpu as c, cnnspec.cli.train; c.resolve_precision('auto'); "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# -- the command line --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "tiny.cnn"
    path.write_text(TINY)
    return path


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return {"HOME": str(tmp_path_factory.mktemp("home")), "CNNSPEC_DATA": ""}


def train(spec: Path, out: Path, home: dict[str, str], flags: frozenset[str], *extra: str):
    result = run_cli("train", str(spec), "--limit", "64", "--out", str(out), "--progress",
                     "plain", *extra, env={**home, CPU_FLAGS_ENV: " ".join(sorted(flags))},
                     timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def scores(run: Path) -> list[tuple]:
    rows = json.loads((run / "history.json").read_text())
    return [tuple(row[k] for k in SCORES) for row in rows]


@pytest.fixture(scope="module")
def runs(spec: Path, home: dict[str, str], tmp_path_factory: pytest.TempPathFactory):
    """Seeded runs of the tiny spec: AMX auto twice, AVX2 auto, AMX explicit float32."""
    base = tmp_path_factory.mktemp("runs")
    return {
        name: (base / name, train(spec, base / name, home, flags, *extra))
        for name, flags, extra in (
            ("amx", SPR, ()),
            ("amx-again", SPR, ()),
            ("avx2", AVX2, ()),
            ("amx-float32", SPR, ("--precision", "float32")),
        )
    }


def test_auto_on_an_amx_cpu_trains_in_bf16_and_says_why(runs) -> None:
    out, result = runs["amx"]
    assert "precision: bf16 (auto: this CPU has AMX bf16 units)" in result.stderr
    assert result.stderr.index("data:") < result.stderr.index("precision:")
    settings = json.loads((out / "settings.json").read_text())
    assert settings["precision"] == "bf16"
    assert settings["precision_requested"] == "auto"
    assert settings["precision_reason"] == "auto: this CPU has AMX bf16 units"


def test_auto_on_an_avx2_cpu_trains_in_float32_with_float32_numbers(runs) -> None:
    out, result = runs["avx2"]
    assert "precision: float32 (auto: this CPU has no native bf16" in result.stderr
    settings = json.loads((out / "settings.json").read_text())
    assert (settings["precision"], settings["precision_requested"]) == ("float32", "auto")
    explicit, said = runs["amx-float32"]
    assert "precision: float32 (asked for)" in said.stderr
    recorded = json.loads((explicit / "settings.json").read_text())
    assert (recorded["precision"], recorded["precision_requested"]) == ("float32", "float32")
    # auto's float32 is the float32: the same numbers to the last digit
    assert scores(out) == scores(explicit)


def test_seeded_auto_runs_repeat_exactly(runs) -> None:
    first, second = runs["amx"][0], runs["amx-again"][0]
    assert scores(first) == scores(second)
    assert scores(first) != scores(runs["avx2"][0])  # bf16 really changed the numerics


def test_a_bf16_run_resumes_in_bf16_on_a_cpu_without_bf16(
        runs, spec: Path, home: dict[str, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Started by auto on "AMX", stopped by Ctrl-C, resumed on "AVX2": still bf16, same numbers."""
    import keras

    from cnnspec import load
    from cnnspec.language.settings import settings_of
    from cnnspec.training.data import load_cifar10
    from cnnspec.training.train import train as train_api

    class CtrlC(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    for key, value in home.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv(CPU_FLAGS_ENV, " ".join(sorted(SPR)))
    tiny = load(spec)
    out = tmp_path / "stopped"
    stopped = train_api(tiny, settings_of(tiny), load_cifar10(env={}, limit=64), out,
                        precision="auto", progress="none", callbacks=[CtrlC()])
    assert stopped.status == "interrupted" and stopped.epochs_completed == 1

    result = run_cli("train", "--resume", str(out), "--progress", "plain",
                     env={**home, CPU_FLAGS_ENV: " ".join(sorted(AVX2))}, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert ("resuming tiny at epoch 2/2 in bf16 (recorded in the run; auto would pick float32 "
            "on this CPU)" in result.stdout)
    assert json.loads((out / "settings.json").read_text())["precision"] == "bf16"
    assert scores(out) == scores(runs["amx"][0])
    # to the last bit of every weight (the resumed model takes the same bf16 speed-ups: fused
    # batch norm, fast dropout, the L2 step folded into plain SGD)
    saved = [keras.models.load_model(run / "model.keras", compile=False).get_weights()
             for run in (out, runs["amx"][0])]
    for resumed, straight in zip(*saved, strict=True):
        assert resumed.tobytes() == straight.tobytes()


def test_the_library_default_stays_float32() -> None:
    import inspect

    from cnnspec.training.train import train as train_api

    assert inspect.signature(train_api).parameters["precision"].default == "float32"
