"""`cnnspec train` / `evaluate` on the paths a user gets wrong: each is one clear line, no
traceback, and nothing written or changed that should not be.

One real run (exp1, 1 epoch, 64 bundled images) is trained once as a subprocess; the other
cases copy and damage it. Most refusals happen before TensorFlow is imported, which the
`probe` helper checks directly (`tensorflow` not in sys.modules when the command returns).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import EXAMPLES, ROOT, SPECS, signal_when

from cnnspec.training import records

TF_LOG_MARKERS = ("I0000", "W0000", "E0000", "oneDNN", "cuda", "absl", "InitializeLog",
                  "tensorflow/", "Traceback")

PROBE = textwrap.dedent("""
    import json, sys
    from cnnspec.cli.main import main
    code = main(sys.argv[1:])
    sys.stdout.flush()
    print("\\nPROBE" + json.dumps({"code": code, "tf": "tensorflow" in sys.modules}))
    sys.exit(code)
""")


def _env(home: Path, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if k not in ("CNNSPEC_DATA", "KERAS_HOME", "TF_CONFIG", "CNNSPEC_CPU_DEVICES",
                         "TF_CPP_MIN_LOG_LEVEL", "CNNSPEC_TF_LOGS")}
    # wide enough that rich never wraps a message: "one line" is then checkable
    return {**base, "HOME": str(home), "COLUMNS": "1000", **extra}


def probe(home: Path, *args: str, cwd: Path = ROOT) -> tuple[int, bool, str, str]:
    """Run the CLI in a fresh interpreter: (exit code, TensorFlow imported?, stdout, stderr).

    Deliberately no TF_CPP_MIN_LOG_LEVEL in the environment: what a user gets by default.
    """
    done = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=cwd, env=_env(home),
                          capture_output=True, text=True, timeout=600)
    out, _, tail = done.stdout.rpartition("\nPROBE")
    assert tail, done.stdout + done.stderr
    result = json.loads(tail)
    assert result["code"] == done.returncode
    return result["code"], result["tf"], out, done.stderr


def snapshot(folder: Path, lock: bool = True) -> dict[str, tuple[bytes, int]]:
    """Every file below `folder` with its bytes and mtime: to prove nothing changed.

    lock=False leaves out the folder's (empty, released) lock file, which a resume that takes
    the lock and then finds damaged records leaves behind: it is not a record.
    """
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))
            if p.is_file() and (lock or p.name != records.LOCK_FILE)}


def assert_one_clean_error(stderr: str, *needles: str) -> None:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("cnnspec: error: "), stderr
    for needle in needles:
        assert needle in stderr, (needle, stderr)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def run(home: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A finished 1-epoch run of exp1 on 64 images, trained as a user would (default env)."""
    out = tmp_path_factory.mktemp("runs") / "exp1"
    done = subprocess.run(
        [sys.executable, "-m", "cnnspec", "train", str(SPECS / "exp1.cnn"), "--epochs", "1",
         "--limit", "64", "--out", str(out), "--progress", "plain"],
        cwd=ROOT, env=_env(home), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done.stderr


def _set_status(folder: Path, status: str) -> None:
    record = records.read_status(folder)
    record["status"] = status
    (folder / records.STATUS_FILE).write_text(json.dumps(record))


def copy_run(run: tuple[Path, str], tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(run[0], target)
    (target / records.LOCK_FILE).unlink(missing_ok=True)
    return target


# -- log noise ---------------------------------------------------------------------------------


def test_train_prints_no_tensorflow_log_lines(run: tuple[Path, str]) -> None:
    _, stderr = run
    for marker in TF_LOG_MARKERS:
        assert marker not in stderr, (marker, stderr)
    assert stderr.startswith("data: ")  # our own line is still there


def test_python_api_to_keras_prints_no_tensorflow_log_lines(home: Path, tmp_path: Path) -> None:
    code = ("import cnnspec\n"
            "m = cnnspec.to_keras(cnnspec.parse('input 32x32x3\\nclasses 10\\nconv8 relu | "
            "dense10\\n'))\n"
            "print(m.count_params())\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(home),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    # conv8: 3*3*3*8+8 = 224; flatten 32*32*8 -> dense10: 81,930; the implicit classifier
    # dense10 softmax: 10*10+10 = 110
    assert done.stdout.split() == [str(224 + 32 * 32 * 8 * 10 + 10 + 110)]
    assert done.stderr == "", done.stderr


RETRACING = textwrap.dedent("""
    import cnnspec
    cnnspec.to_keras(cnnspec.parse("input 32x32x3\\nclasses 10\\nconv8 relu | dense10\\n"))
    import tensorflow as tf
    for i in range(8):  # a new tf.function each time, as a sweep's new model per variant
        tf.function(lambda x: x + 1)(tf.constant(float(i)))
    print("traced")
""")


@pytest.mark.parametrize("verbose", [False, True])
def test_tensorflows_retracing_warning_only_with_verbose(verbose: bool, home: Path,
                                                         tmp_path: Path) -> None:
    """TensorFlow's Python logger warns "triggered tf.function retracing" when functions are
    traced again and again, as in a sweep; that is noise between the progress lines, kept
    only for `--verbose` ($CNNSPEC_TF_LOGS=1), like the start-up lines."""
    extra = {"CNNSPEC_TF_LOGS": "1"} if verbose else {}
    done = subprocess.run([sys.executable, "-c", RETRACING], cwd=tmp_path,
                          env=_env(home, **extra), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["traced"]
    assert ("triggered tf.function retracing" in done.stderr) is verbose, done.stderr[-2000:]


def test_an_import_failure_is_still_shown(capfd: pytest.CaptureFixture[str]) -> None:
    from cnnspec.backend.keras_model import _stderr_fd_silenced

    with _stderr_fd_silenced():
        os.write(2, b"chatter\n")
    assert capfd.readouterr().err == ""
    with pytest.raises(ImportError, match="no such library"), _stderr_fd_silenced():
        os.write(2, b"the real reason\n")
        raise ImportError("no such library")
    assert "the real reason" in capfd.readouterr().err
    # Ctrl-C during the import explains nothing: TensorFlow's lines stay hidden
    with pytest.raises(KeyboardInterrupt), _stderr_fd_silenced():
        os.write(2, b"cudart_stub: Could not find cuda drivers\n")
        raise KeyboardInterrupt
    assert capfd.readouterr().err == ""


def test_verbose_keeps_tensorflow_logs(home: Path) -> None:
    snippet = ("import os, sys\nfrom cnnspec.cli.main import build_parser\n"
               "build_parser().parse_args(sys.argv[1:])\n"
               "print(os.environ['TF_CPP_MIN_LOG_LEVEL'], os.environ['CNNSPEC_TF_LOGS'])\n")
    for argv in (["train", "x.cnn", "--verbose"], ["evaluate", "runs/x", "--verbose"]):
        done = subprocess.run([sys.executable, "-c", snippet, *argv], cwd=ROOT,
                              env=_env(home), capture_output=True, text=True, timeout=60)
        assert done.stdout.split() == ["0", "1"], done.stderr


# -- evaluate ----------------------------------------------------------------------------------


def test_evaluate_reports_the_images_the_run_used(run: tuple[Path, str], home: Path) -> None:
    out, _ = run
    code, _, stdout, stderr = probe(home, "evaluate", str(out))
    assert code == 0, stderr
    assert_no_tf_lines(stderr)
    recorded = json.loads((out / "metrics.json").read_text())
    # the bundled sample's test split holds 500 images; the run trained on --limit 64
    assert "on 500 test images" in stdout and "trained on 64 train images" in stdout, stdout
    assert f"test accuracy {recorded['test_accuracy']:.4f}" in stdout
    assert "1,000" not in stdout


def assert_no_tf_lines(stderr: str) -> None:
    for marker in TF_LOG_MARKERS:
        assert marker not in stderr, (marker, stderr)


# -- a folder that already holds a run ---------------------------------------------------------


def test_train_into_a_run_folder_is_refused_and_changes_nothing(
        run: tuple[Path, str], home: Path, tmp_path: Path) -> None:
    folder = copy_run(run, tmp_path)
    before = snapshot(folder)
    code, tf, _, stderr = probe(home, "train", str(SPECS / "exp1.cnn"), "--out", str(folder))
    assert code == 1 and not tf
    assert_one_clean_error(stderr, "already holds a run", f"--resume {folder}",
                           "another folder")
    assert snapshot(folder) == before


@pytest.mark.parametrize("damage", ["missing", "file", "empty", "settings-garbage",
                                    "settings-shape", "state-garbage", "state-null",
                                    "state-list", "state-model-gone", "spec-gone"])
def test_resume_of_a_missing_or_damaged_folder_is_one_clear_error(
        damage: str, run: tuple[Path, str], home: Path, tmp_path: Path) -> None:
    folder = copy_run(run, tmp_path)
    # make it look unfinished, so resume gets as far as reading the checkpoint
    status = records.read_status(folder)
    status["status"] = "interrupted"
    (folder / records.STATUS_FILE).write_text(json.dumps(status))
    expect = {"missing": "no such run folder", "file": "not a directory",
              "empty": "has no settings.json", "settings-garbage": "not valid JSON",
              "settings-shape": "corrupted record", "state-garbage": "not valid JSON",
              # `null` read as "no checkpoint": the run silently started over from epoch 1
              "state-null": "state.json: corrupted record: not a JSON object",
              "state-list": "state.json: corrupted record: not a JSON object",
              "state-model-gone": "model file epoch-0001.keras is missing",
              "spec-gone": "spec.cnn"}[damage]
    state = records.checkpoint_dir(folder) / records.CHECKPOINT_STATE
    if damage == "missing":
        shutil.rmtree(folder)
    elif damage == "file":
        shutil.rmtree(folder)
        folder.write_text("not a folder\n")
    elif damage == "empty":
        shutil.rmtree(folder)
        folder.mkdir()
    elif damage == "settings-garbage":
        (folder / records.SETTINGS_FILE).write_bytes(b'{"spec": \xff\x00 half')
    elif damage == "settings-shape":
        (folder / records.SETTINGS_FILE).write_text('{"spec": 3}')
    elif damage == "state-garbage":
        state.write_text('{"epochs_completed": 1, "model": "ep')
    elif damage == "state-null":
        state.write_text("null")
    elif damage == "state-list":
        state.write_text("[1]")
    elif damage == "state-model-gone":
        (records.checkpoint_dir(folder) / "epoch-0001.keras").unlink()
    elif damage == "spec-gone":
        (folder / records.SPEC_FILE).unlink()
    before = snapshot(folder, lock=False) if folder.is_dir() else None
    code, tf, _, stderr = probe(home, "train", "--resume", str(folder))
    assert code == 1, stderr
    assert not tf  # refused before TensorFlow starts
    assert_one_clean_error(stderr, expect, "cannot resume")
    if before is not None:
        assert snapshot(folder, lock=False) == before
    else:
        assert not folder.is_dir() or damage == "empty"


def test_resume_without_its_checkpoint_folder_says_it_starts_over(
        run: tuple[Path, str], home: Path, tmp_path: Path) -> None:
    """With checkpoint/ deleted nothing can be resumed, so the run trains again from epoch 1:
    said on one line, as the status named a finished epoch (it was silent)."""
    folder = copy_run(run, tmp_path)
    status = records.read_status(folder)
    status["status"] = "interrupted"
    (folder / records.STATUS_FILE).write_text(json.dumps(status))
    shutil.rmtree(records.checkpoint_dir(folder))
    done = subprocess.run(
        [sys.executable, "-m", "cnnspec", "train", "--resume", str(folder), "--progress",
         "plain"], cwd=ROOT, env=_env(home), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    said = done.stdout + done.stderr
    assert (f"no checkpoint in {folder}, though its status names 1 finished epoch(s): "
            "training exp1 again from epoch 1") in said
    assert "resuming" not in said
    assert records.read_status(folder)["status"] == "completed"
    assert [row["epoch"] for row in records.read_history(folder)] == [1]


def test_resume_of_a_run_stopped_while_finishing_says_so(
        run: tuple[Path, str], home: Path, tmp_path: Path) -> None:
    """Every epoch trained, the final records not written (stopped in the last save): it
    said "resuming exp1 at epoch 2/1"."""
    folder = copy_run(run, tmp_path)
    history = records.read_history(folder)
    status = records.read_status(folder)
    status["status"] = "interrupted"
    (folder / records.STATUS_FILE).write_text(json.dumps(status))
    done = subprocess.run(
        [sys.executable, "-m", "cnnspec", "train", "--resume", str(folder), "--progress",
         "plain"], cwd=ROOT, env=_env(home), capture_output=True, text=True, timeout=600)
    said = done.stdout + done.stderr
    assert done.returncode == 0 and "Traceback" not in said, said[-3000:]
    assert "finishing exp1: its 1 epoch is trained; writing its final records" in said
    assert "resuming" not in said
    assert records.read_status(folder)["status"] == "completed"
    assert records.read_history(folder) == history


def test_sigterm_stops_a_run_as_ctrl_c_does(home: Path, tmp_path: Path) -> None:
    """A scheduler preempting the job (or `kill`) sends SIGTERM: the run used to die at once,
    its status left "running" with a dead pid. It now saves, says so and exits 130."""
    import signal

    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnnspec", "train", str(SPECS / "exp1.cnn"), "--epochs", "30",
         "--limit", "64", "--out", str(out), "--progress", "plain"],
        cwd=ROOT, env=_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = signal_when(proc, (out / records.HISTORY_JSON).is_file,
                                 "a checkpointed epoch", signal.SIGTERM)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr[-3000:]
    status = records.read_status(out)
    assert status["status"] == "interrupted" and "interrupted (SIGTERM)" in status["reason"]
    done = len(records.read_history(out))
    assert 1 <= done < 30
    assert f"continue with: cnnspec train --resume {out}" in stdout + stderr


@pytest.mark.parametrize("damage", ["missing", "settings-garbage", "no-model",
                                    "no-model-no-checkpoint", "no-model-completed"])
def test_evaluate_of_a_missing_or_damaged_folder_is_one_clear_error(
        damage: str, run: tuple[Path, str], home: Path, tmp_path: Path) -> None:
    folder = copy_run(run, tmp_path)
    expect = {"missing": "no such run folder", "settings-garbage": "not valid JSON",
              # a checkpoint exists: resume writes model.keras (it said "did not finish an
              # epoch", though one had)
              "no-model": f"no model.keras: the run was stopped before writing it; `cnnspec "
                          f"train --resume {folder}` continues from its last checkpoint",
              "no-model-no-checkpoint": "no model.keras: the run did not finish an epoch",
              # resume returns a completed run as it is: it would not write the file
              "no-model-completed": "no model.keras: the run completed, so the file was "
                                    "removed after it",
              }[damage]
    if damage == "missing":
        shutil.rmtree(folder)
    elif damage == "settings-garbage":
        (folder / records.SETTINGS_FILE).write_text("{{{")
    else:
        (folder / records.MODEL_FILE).unlink()
        if damage == "no-model-no-checkpoint":
            shutil.rmtree(records.checkpoint_dir(folder))
        if damage != "no-model-completed":  # the fixture's run completed
            _set_status(folder, "interrupted")
    code, tf, _, stderr = probe(home, "evaluate", str(folder))
    assert code == 1 and not tf, stderr
    assert_one_clean_error(stderr, "cannot evaluate", expect)


def test_evaluate_of_a_damaged_model_file_is_one_clear_error(
        run: tuple[Path, str], home: Path, tmp_path: Path) -> None:
    folder = copy_run(run, tmp_path)
    (folder / records.MODEL_FILE).write_bytes(b"PK\x03\x04 this is not a keras file")
    code, _, _, stderr = probe(home, "evaluate", str(folder))
    assert code == 1, stderr
    assert_one_clean_error(stderr, "cannot evaluate", "model.keras", "damaged")
    assert_no_tf_lines(stderr)


def test_evaluate_of_a_cut_off_model_file_says_so_before_tensorflow(
        run: tuple[Path, str], home: Path, tmp_path: Path) -> None:
    """A model.keras cut short (a full disk, a partial copy): Keras would say "File not
    found" of a file that is there; the message says what is wrong with it."""
    folder = copy_run(run, tmp_path)
    model = folder / records.MODEL_FILE
    model.write_bytes(model.read_bytes()[:1000])
    code, tf, _, stderr = probe(home, "evaluate", str(folder))
    assert code == 1 and not tf, stderr
    assert_one_clean_error(stderr, "cannot evaluate", f"{model}: not a .keras zip archive "
                           "(cut off or overwritten); the file is damaged")
    assert "not found" not in stderr


# -- refused before TensorFlow and before a run folder exists ----------------------------------


@pytest.mark.parametrize(("header", "message"), [
    ("input 32x32x1\nclasses 10", "declares `input 32x32x1` but the images of"),
    ("input 28x28x3\nclasses 10", "declares `input 28x28x3`"),
    ("input 32x32x3\nclasses 5", "declares `classes 5` but the labels"),
])
def test_spec_that_does_not_fit_the_data_is_refused_before_anything(
        header: str, message: str, home: Path, tmp_path: Path) -> None:
    spec = tmp_path / "mismatch.cnn"
    spec.write_text(f"{header}\nconv8 relu pool2 | dense16 relu\n")
    runs = tmp_path / "runs"
    code, tf, _, stderr = probe(home, "train", str(spec), "--runs-dir", str(runs),
                                "--limit", "64")
    assert code == 1 and not tf, stderr
    assert_one_clean_error(stderr, message)
    assert not runs.exists() or not any(runs.iterdir())


def test_optimizer_override_that_cannot_take_momentum_is_refused(
        home: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    code, tf, _, stderr = probe(home, "train", str(SPECS / "exp1.cnn"), "--optimizer", "adam",
                                "--momentum", ".9", "--runs-dir", str(runs), "--limit", "64")
    assert code == 2 and not tf, stderr
    assert stderr.startswith("cnnspec: error: ") and "Traceback" not in stderr
    assert "momentum" in stderr and "adam" in stderr
    assert not runs.exists() or not any(runs.iterdir())


def test_every_shipped_spec_fits_the_shipped_data() -> None:
    """A shipped example must train with the shipped data: CIFAR-10 is 32x32x3, labels 0..9."""
    import numpy as np

    from cnnspec import load
    from cnnspec.training.data import load_cifar10
    from cnnspec.training.train import check_data

    data = load_cifar10(env={"HOME": "/nonexistent"}, limit=16)
    assert data.origin == "bundled sample"
    assert data.x_train.shape[1:] == (32, 32, 3) and int(np.max(data.y_train)) <= 9
    files = sorted(EXAMPLES.glob("*.cnn")) + sorted(SPECS.glob("*.cnn"))
    assert any(f.name == "lenet5.cnn" for f in files)
    for file in files:
        spec = load(file)
        if spec.has_sweep():
            continue
        assert tuple(spec.input_shape) == (32, 32, 3), file
        check_data(spec, data)


@pytest.mark.parametrize(("flag", "message"), [
    ("--out", "a-file is a file, not a folder"),  # named before the data are read
    ("--runs-dir", "cannot create the runs folder"),
])
def test_run_folder_that_cannot_be_created_is_one_clear_error(
        flag: str, message: str, home: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way\n")
    target = blocker / "run" if flag == "--out" else blocker
    code, tf, _, stderr = probe(home, "train", str(SPECS / "exp1.cnn"), "--limit", "64",
                                flag, str(target))
    assert code == 1 and not tf, stderr
    # the data: and precision: lines are information printed before the folder is made
    assert_one_clean_error("\n".join(line for line in stderr.splitlines()
                                     if not line.startswith(("data: ", "precision: "))), message)


@pytest.mark.parametrize(("name", "content", "message"), [
    ("history.json", '[{"epoch": 1, "loss"', "history.json: corrupted record, not valid JSON"),
    ("history.json", '{"epoch": 1}', "history.json: corrupted record: not a list"),
    ("status.json", '["completed"]', "status.json: corrupted record"),
])
def test_resume_of_a_completed_run_with_a_damaged_record_is_one_clear_error(
        name: str, content: str, message: str, run: tuple[Path, str], home: Path,
        tmp_path: Path) -> None:
    folder = copy_run(run, tmp_path)
    (folder / name).write_text(content)
    before = snapshot(folder, lock=False)
    code, tf, _, stderr = probe(home, "train", "--resume", str(folder))
    assert code == 1 and not tf, stderr
    assert_one_clean_error(stderr, "cannot resume", message)
    assert snapshot(folder, lock=False) == before


# -- what a diverged run blames ----------------------------------------------------------------

def _reason(lr_now: float | None = .01, l2_factors: tuple[float, ...] = (), **settings: object
            ) -> str:
    from cnnspec.language.settings import TrainSettings
    from cnnspec.training.loop import Diverged, divergence_reason

    return divergence_reason("net", Diverged(1, 2, float("nan")), 3, 10,
                             TrainSettings().override(**settings), lr_now=lr_now,
                             l2_factors=l2_factors)


@pytest.mark.parametrize(("weight_decay", "blamed"), [
    (5e-4, False), (200.0, False),  # lr·wd = 2: each weight flips sign, its size kept
    (201.0, True), (1e30, True),
])
def test_a_weight_decay_too_large_for_the_learning_rate_is_named(weight_decay: float,
                                                                 blamed: bool) -> None:
    """Decoupled decay multiplies each weight by 1 - lr·wd every step; past lr·wd = 2 that
    factor's size is over 1 and the weights blow up at any learning rate: lowering lr, as the
    message used to say whatever the cause, is the wrong advice for `weight_decay=1e30`."""
    reason = _reason(weight_decay=weight_decay, lr=.01)
    assert ("weight_decay" in reason) is blamed, reason
    assert ("Lower the learning rate" in reason) is not blamed, reason
    if blamed:
        assert f"= {1 - .01 * weight_decay:.3g}," in reason  # the factor, worked out here


@pytest.mark.parametrize(("settings", "l2", "blamed"), [
    ({}, 60.0, False),  # 1 - 2·.01·60 = -.2: shrinks
    ({}, 1000.0, True),  # 1 - 2·.01·1000 = -19
    ({"momentum": .9}, 150.0, False),  # heavy ball is stable while lr·c < 1 + momentum
    ({"momentum": .9}, 200.0, True),
    ({"optimizer": "adam"}, 1000.0, False),  # Adam scales the gradient: the rule is SGD's
])
def test_an_l2_factor_too_large_for_sgd_is_named(settings: dict[str, object], l2: float,
                                                 blamed: bool) -> None:
    reason = _reason(l2_factors=(.01, l2), lr=.01, **settings)
    assert (f"l2({l2:g}) is too large" in reason) is blamed, reason
    assert ("Lower the learning rate" in reason) is not blamed, reason


def test_without_the_rate_at_the_diverged_step_the_learning_rate_is_blamed() -> None:
    assert "Lower the learning rate, e.g. `train lr=0.001`" in _reason(
        lr_now=None, weight_decay=1e30, lr=.01)


@pytest.mark.parametrize(("train", "layers", "needle"), [
    ("weight_decay=1e30", "conv8 relu pool2 | dense16", "weight_decay=1e+30 is too large"),
    ("", "conv8 relu pool2 | dense16 l2(1e6)", "l2(1e+06) is too large"),
])
def test_a_run_diverged_by_its_decay_says_so(home: Path, tmp_path: Path, train: str,
                                             layers: str, needle: str) -> None:
    """The whole path: the trainer passes the step's learning rate and the spec's l2 factors
    (both runs diverge within a few steps on any CPU: the factor is -1e28 / -2e4 a step)."""
    spec = tmp_path / "decay.cnn"
    spec.write_text(f"train optimizer=sgd lr=.01 {train}\n{layers}\n")
    code, _, _, stderr = probe(home, "train", str(spec), "--epochs", "1", "--limit", "320",
                               "--out", str(tmp_path / "run"), "--progress", "none")
    assert code == 1
    errors = [line for line in stderr.splitlines() if line.startswith("cnnspec: error: ")]
    assert len(errors) == 1 and "training diverged" in errors[0], stderr
    assert needle in errors[0] and "Lower the learning rate" not in errors[0], stderr
    assert json.loads((tmp_path / "run" / "status.json").read_text())["status"] == "failed"
