"""A stopped `sweep` (or `run`) continues when the same command is run again with its --out.

- Finished runs (completed, pruned) are kept, not trained again, and told to the local study
  epoch by epoch, so the pruner judges the variants still to train exactly as it did in the
  sweep that was never stopped: same statuses, same pruning reasons, same numbers.
- An interrupted run resumes from its checkpoint; the runs not started train.
- Ctrl-C prints the command that continues the sweep (with the --out it used), and that very
  command finishes it.
- A folder holding another run (a changed flag, other data) is refused before the data is read
  or anything trains, in one message that names what differs; the folder is left as it was.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import ROOT, run_cli, signal_when, snapshot

from cnnspec.training import records

SWEEP = "conv4 relu pool2 drop{.1,.3,.5} | dense8\n"
NAMES = ["s[drop=.1]", "s[drop=.3]", "s[drop=.5]"]
SETTINGS = {"--epochs": "2", "--limit": "128", "--seed": "5", "--prune": "halving",
            "--min-epochs": "1", "--reduction-factor": "2", "--progress": "plain"}


def _flags(**changed: str) -> list[str]:
    """The sweep's flags, some changed (`lr=".1"` for --lr .1)."""
    given = {**SETTINGS, **{f"--{k.replace('_', '-')}": v for k, v in changed.items()}}
    return [x for kv in given.items() for x in kv] + ["--no-plots"]


FLAGS = _flags()
SCORES = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy")
# auto picks float32 on every machine here (an AMX one would pick bf16): the precision
# refusal below needs a known recorded precision
ENV = {"CNNSPEC_CPU_FLAGS": "avx2 fma"}


def _clean(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr[-3000:]


def _pruning_line(stderr: str) -> str:
    (line,) = [ln for ln in stderr.splitlines() if ln.startswith("pruning (halving)")]
    return line


def _table(stdout: str) -> str:
    """The comparison printed after the sweep (the epoch lines before it go to stdout too)."""
    return stdout[stdout.index("3 runs\n"):]


def _runs(out) -> dict[str, tuple]:
    """Per variant: its status, reason and every epoch's numbers, exactly (not its timings)."""
    return {name: (records.read_status(out / name)["status"],
                   records.read_status(out / name)["reason"],
                   [{k: row[k] for k in SCORES} for row in records.read_history(out / name)])
            for name in NAMES}


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory):
    spec = tmp_path_factory.mktemp("spec") / "s.cnn"
    spec.write_text(SWEEP)
    return spec


@pytest.fixture(scope="module")
def reference(tmp_path_factory, sweep_file):
    """The sweep, never stopped: (out folder, its stderr)."""
    out = tmp_path_factory.mktemp("ref") / "out"
    result = run_cli("sweep", str(sweep_file), *FLAGS, "--out", str(out), env=ENV)
    _clean(result)
    assert result.returncode == 0, result.stderr[-2000:]
    return out, result


def test_the_same_command_again_keeps_every_finished_run(reference, sweep_file, tmp_path):
    ref_out, ref = reference
    out = tmp_path / "out"
    shutil.copytree(ref_out, out)
    before = snapshot(out, lock=False)
    again = run_cli("sweep", str(sweep_file), *FLAGS, "--out", str(out), env=ENV)
    _clean(again)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"continuing in {out}: 3 finished run(s) kept, 0 to resume, 0 to train" \
        in again.stderr
    assert "epoch 1/2" not in again.stdout + again.stderr  # nothing trained
    # the study was told the runs as they happened: the same pruning, the same table
    assert _pruning_line(again.stderr) == _pruning_line(ref.stderr)
    assert again.stdout == _table(ref.stdout)
    assert snapshot(out, lock=False) == before


def test_ctrl_c_prints_the_command_that_finishes_the_sweep(reference, sweep_file, tmp_path):
    """Ctrl-C while the first variant trains its second epoch; no --out was given, so the
    printed command names the sweep's folder. Running it resumes that variant from its
    checkpoint (its first epoch told to the study again) and trains the others: every run
    ends as in the sweep that was never stopped."""
    ref_out, ref = reference
    runs = tmp_path / "runs"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "COLUMNS": "400", **ENV}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnnspec", "sweep", str(sweep_file), *FLAGS,
         "--runs-dir", str(runs)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # Ctrl-C as in a terminal: a test runner's worker may ignore SIGINT, and its children
        # would inherit that
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def first_epoch_saved() -> bool:
        states = list(runs.glob("*/s[[]drop=.1]/checkpoint/state.json"))
        return bool(states) and records.read_checkpoint_state(states[0].parents[1]) is not None

    stdout, stderr = signal_when(proc, first_epoch_saved, "the first variant's epoch 1",
                                 signal.SIGINT)
    assert "Traceback" not in stderr, stderr[-3000:]
    assert proc.returncode == 130  # stopped, as `train` says it, not failed
    assert "failed" not in stderr
    (out,) = runs.iterdir()
    assert f"stopped: {NAMES[0]} interrupted (its folder: {out / NAMES[0]})" \
        in stderr.splitlines()
    (hint,) = [ln for ln in stderr.splitlines() if ln.startswith("continue with: ")]
    command = shlex.split(hint.removeprefix("continue with: "))
    assert command[:4] == ["cnnspec", "sweep", "--out", str(out)]
    assert records.read_status(out / NAMES[0])["status"] == "interrupted"

    again = run_cli(*command[1:], env=ENV)
    _clean(again)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"continuing in {out}: 0 finished run(s) kept, 1 to resume, 2 to train" \
        in again.stderr
    assert f"resuming {NAMES[0]} at epoch 2/2" in again.stdout + again.stderr
    assert _runs(out) == _runs(ref_out)
    assert _pruning_line(again.stderr) == _pruning_line(ref.stderr)


@pytest.mark.parametrize(("changed", "message"), [
    ({"epochs": "3"}, "the training settings differ (epochs 2 there, 3 here)"),
    ({"lr": ".1", "seed": "6"}, "the training settings differ (lr .01 there, .1 here; "
                                "seed 5 there, 6 here)"),
    ({"precision": "bf16"}, "precision was float32, not bf16"),
])
def test_a_folder_holding_other_runs_is_refused_before_anything(
        reference, sweep_file, tmp_path, changed, message):
    ref_out, _ = reference
    out = tmp_path / "out"
    shutil.copytree(ref_out, out)
    before = snapshot(out)
    result = run_cli("sweep", str(sweep_file), *_flags(**changed), "--out", str(out), env=ENV)
    _clean(result)
    assert result.returncode == 1
    errors = [ln for ln in result.stderr.splitlines() if "error" in ln]
    assert errors == [f"cnnspec: error: --out {out} holds other runs than this command would "
                      "train, so it cannot continue them:"]
    assert f"  {', '.join(NAMES)}: {message}" in result.stderr.splitlines()
    assert "data:" not in result.stderr  # refused before the data was read
    assert snapshot(out) == before


def test_other_data_are_refused_before_anything_trains(reference, sweep_file, tmp_path):
    ref_out, _ = reference
    out = tmp_path / "out"
    shutil.copytree(ref_out, out)
    before = snapshot(out)
    result = run_cli("sweep", str(sweep_file), *_flags(limit="96"), "--out", str(out), env=ENV)
    _clean(result)
    assert result.returncode == 1
    assert "cnnspec: error: the data differ from those the runs in --out" in result.stderr
    assert "128 training images of" in result.stderr and "here 96 training images" in \
        result.stderr
    assert "epoch 1/2" not in result.stdout + result.stderr
    assert snapshot(out) == before


def test_run_continues_in_its_out_folder_too(tmp_path):
    """`cnnspec run A B --out DIR` again: A's finished run is kept, B trains."""
    a, b = tmp_path / "a.cnn", tmp_path / "b.cnn"
    a.write_text("conv4 relu pool2 | dense8\n")
    b.write_text("conv4 relu pool2 drop.5 | dense8\n")
    out = tmp_path / "out"
    flags = ("--epochs", "1", "--limit", "64", "--seed", "1", "--progress", "plain",
             "--no-plots", "--out", str(out))
    first = run_cli("run", str(a), *flags, env=ENV)
    assert first.returncode == 0, first.stderr[-2000:]
    history = records.read_history(out / "a")
    both = run_cli("run", str(a), str(b), *flags, env=ENV)
    _clean(both)
    assert both.returncode == 0, both.stderr[-2000:]
    assert f"continuing in {out}: 1 finished run(s) kept, 0 to resume, 1 to train" \
        in both.stderr
    assert f"a: completed in {out / 'a'} before; kept" in both.stderr
    assert records.read_history(out / "a") == history
    assert records.read_status(out / "b")["status"] == "completed"


def test_a_damaged_kept_run_fails_alone(reference, sweep_file, tmp_path):
    """A kept run whose history.json is damaged is one failure, named with its file; the
    other finished runs are still kept and compared, and nothing is trained."""
    ref_out, _ = reference
    out = tmp_path / "out"
    shutil.copytree(ref_out, out)
    damaged = out / NAMES[1] / records.HISTORY_JSON
    damaged.write_text('[{"epoch": 1')
    result = run_cli("sweep", str(sweep_file), *FLAGS, "--out", str(out), env=ENV)
    _clean(result)
    assert result.returncode == 1
    assert f"{NAMES[1]} failed: {damaged}: corrupted record, not valid JSON" in \
        result.stderr.replace("\n", " ")
    for name in (NAMES[0], NAMES[2]):
        assert f"{name}: " in result.stderr and f"{out / name} before; kept" in result.stderr
    assert "epoch 1/2" not in result.stdout + result.stderr
    # one failure in the summary: the comparison that leaves the damaged run out does not
    # count it again (it was "2 failed:", then "compare: 1 of 3 ... not compared:" cut off)
    assert "1 failed:" in result.stderr and "compare:" not in result.stderr
    assert "2 runs" in result.stdout  # the other two are compared


def _status(run, **changes) -> None:
    import json

    status = records.read_status(run)
    status.update(changes)
    (run / records.STATUS_FILE).write_text(json.dumps(status))


def test_a_variant_stopped_while_saving_its_pruning_is_finished_as_pruned(
        reference, sweep_file, tmp_path):
    """The pruner stops a variant after its epoch is checkpointed; a Ctrl-C (or a kill) while
    it then writes its final records leaves it `interrupted` at that checkpoint. Continued,
    the study is told that epoch again, prunes it again, and the run ends pruned there, with
    the same reason: it is not trained on."""
    ref_out, _ = reference
    (pruned,) = [n for n in NAMES if records.read_status(ref_out / n)["status"] == "pruned"]
    out = tmp_path / "out"
    shutil.copytree(ref_out, out)
    _status(out / pruned, status="interrupted", reason="interrupted (Ctrl-C)")
    result = run_cli("sweep", str(sweep_file), *FLAGS, "--out", str(out), env=ENV)
    _clean(result)
    assert result.returncode == 0, result.stderr[-2000:]
    said = result.stdout + result.stderr
    assert f"finishing {pruned}: pruned after epoch 1, as decided before it was interrupted" \
        in said
    assert "epoch 2/2" not in said
    assert _runs(out) == _runs(ref_out)


def test_a_damaged_checkpoint_of_a_run_to_resume_fails_that_run_alone(
        reference, sweep_file, tmp_path):
    import json

    ref_out, _ = reference
    out = tmp_path / "out"
    shutil.copytree(ref_out, out)
    run = out / NAMES[0]
    _status(run, status="interrupted")
    state_file = records.checkpoint_dir(run) / records.CHECKPOINT_STATE
    state = json.loads(state_file.read_text())
    state["history"] = 5
    state_file.write_text(json.dumps(state))
    result = run_cli("sweep", str(sweep_file), *FLAGS, "--out", str(out), env=ENV)
    _clean(result)
    assert result.returncode == 1
    assert f"{NAMES[0]} failed: {state_file}: corrupted record" in \
        result.stderr.replace("\n", " ")
    assert "TypeError" not in result.stderr


def test_a_then_train_folder_holding_other_runs_is_refused_with_the_reason(
        reference, sweep_file, tmp_path):
    """The long phase's folder is checked as the sweep's is, before the winners are named."""
    ref_out, _ = reference
    out = tmp_path / "out"
    shutil.copytree(ref_out, out)
    for name in NAMES:  # 2-epoch runs where the long phase would train 1 epoch
        shutil.copytree(ref_out / name, out / "then-train" / name)
    result = run_cli("sweep", str(sweep_file), *FLAGS, "--out", str(out), "--then-train", "1",
                     "--then-epochs", "1", env=ENV)
    _clean(result)
    assert result.returncode == 1
    assert "then-train: --out" in result.stderr
    assert "the training settings differ (epochs 2 there, 1 here)" in result.stderr
    assert "train again for 1 epochs" not in result.stderr  # no winner was announced


def test_new_runs_of_a_continued_sweep_train_in_the_precision_of_its_runs(
        reference, sweep_file, tmp_path):
    """A sweep trained in bf16 (`--precision bf16`, or auto on a CPU with bf16 units),
    continued under auto where auto picks float32: the variant still to train trains in
    bf16 too, and the command says why. (bf16 is emulated here: slow, but the spec is tiny.)"""
    import json

    ref_out, _ = reference
    out = tmp_path / "out"
    shutil.copytree(ref_out, out)
    shutil.rmtree(out / NAMES[2])
    for name in NAMES[:2]:
        path = out / name / records.SETTINGS_FILE
        recorded = json.loads(path.read_text())
        recorded.update(precision="bf16", precision_requested="bf16")
        path.write_text(json.dumps(recorded))
    result = run_cli("sweep", str(sweep_file), *FLAGS, "--out", str(out), env=ENV)
    _clean(result)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (f"precision: bf16 (the precision of the runs in {out}, which this command "
            "continues; auto would pick float32 on this CPU)") in result.stderr.replace(
                "\n", " ")
    trained = json.loads((out / NAMES[2] / records.SETTINGS_FILE).read_text())
    assert trained["precision"] == "bf16"


def test_other_pruning_flags_are_refused_before_anything(reference, sweep_file, tmp_path):
    """The run folders do not record how the sweep pruned; its folder's sweep.json does."""
    import json

    ref_out, _ = reference
    assert json.loads((ref_out / "sweep.json").read_text())["pruning"]["kind"] == "halving"
    out = tmp_path / "out"
    shutil.copytree(ref_out, out)
    before = snapshot(out)
    result = run_cli("sweep", str(sweep_file), *_flags(prune="none"), "--out", str(out),
                     env=ENV)
    _clean(result)
    assert result.returncode == 1
    assert (f"cnnspec: error: --out {out} holds a sweep pruned with `--prune halving "
            "--prune-metric val_accuracy --min-epochs 1 --reduction-factor 2`, and this command "
            "prunes with `--prune none`") in result.stderr.replace("\n", " ")
    assert "data:" not in result.stderr and snapshot(out) == before
    (out / "sweep.json").write_text("{")
    damaged = run_cli("sweep", str(sweep_file), *FLAGS, "--out", str(out), env=ENV)
    _clean(damaged)
    assert damaged.returncode == 1
    assert f"cannot continue in --out {out}: {out / 'sweep.json'}: corrupted record" in \
        damaged.stderr.replace("\n", " ")
    # a folder from before sweep.json existed continues, and gets one
    (out / "sweep.json").unlink()
    again = run_cli("sweep", str(sweep_file), *FLAGS, "--out", str(out), env=ENV)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((out / "sweep.json").read_text())["pruning"]["eta"] == 2


def test_a_second_sweep_on_an_out_being_written_is_refused_at_once(
        reference, sweep_file, tmp_path):
    """Two sweeps given one --out: the second is refused before it reads the data, naming
    the first; the first is unharmed and ends as the sweep that ran alone did."""
    ref_out, _ = reference
    out = tmp_path / "out"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "COLUMNS": "400", **ENV}
    first = subprocess.Popen(
        [sys.executable, "-m", "cnnspec", "sweep", str(sweep_file), *FLAGS, "--out", str(out)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (out / NAMES[0] / records.SETTINGS_FILE).exists():  # the first one trains
            assert first.poll() is None, first.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the first sweep never started training"
            time.sleep(0.05)
        second = run_cli("sweep", str(sweep_file), *FLAGS, "--out", str(out), env=ENV)
        stdout, stderr = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    _clean(second)
    assert second.returncode == 1
    errors = [ln for ln in second.stderr.splitlines() if "error" in ln]
    assert errors == [f"cnnspec: error: --out {out} is being written by pid {first.pid} on "
                      f"{socket.gethostname()}, another `cnnspec sweep` or `run`; one command "
                      "at a time may write it. Wait for it to finish (or stop it), then run "
                      "this command again to continue there; or pick another --out"]
    assert "data:" not in second.stderr  # refused before the data was read
    assert "Traceback" not in stderr, stderr[-3000:]
    assert first.returncode == 0, stderr[-2000:]
    assert _runs(out) == _runs(ref_out)


@pytest.mark.parametrize("command", ["sweep", "run"])
def test_an_out_that_is_a_file_is_refused_before_anything(sweep_file, tmp_path, command):
    out = tmp_path / "out"
    out.write_text("notes\n")
    spec = sweep_file if command == "sweep" else ROOT / "specs" / "exp1.cnn"
    flags = FLAGS if command == "sweep" else ["--epochs", "1", "--limit", "64"]
    result = run_cli(command, str(spec), *flags, "--out", str(out), env=ENV)
    _clean(result)
    assert result.returncode == 1
    assert f"cnnspec: error: {out}: cannot use it as an --out folder (File exists)" \
        in result.stderr.splitlines()
    assert "data:" not in result.stderr
    assert out.read_text() == "notes\n"


@pytest.mark.parametrize("command", ["sweep", "run"])
def test_an_out_holding_other_files_is_refused_before_anything(sweep_file, tmp_path, command):
    """A folder of the user's own files: the comparison plots would replace files of their
    names, and a sweep's folder is no place for them; refused, nothing written."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "compare_curve.png").write_bytes(b"mine")
    (out / "notes.txt").write_text("notes\n")
    before = snapshot(out)
    spec = sweep_file if command == "sweep" else ROOT / "specs" / "exp1.cnn"
    flags = FLAGS if command == "sweep" else ["--epochs", "1", "--limit", "64"]
    result = run_cli(command, str(spec), *flags, "--out", str(out), env=ENV)
    _clean(result)
    assert result.returncode == 1
    assert [ln for ln in result.stderr.splitlines() if "error" in ln] == [
        f"cnnspec: error: --out {out} holds files that are not a sweep's or `run`'s "
        "(compare_curve.png, notes.txt); pick a new or empty folder, or move them away"]
    assert "data:" not in result.stderr
    assert snapshot(out) == before


def test_a_sweep_into_the_folder_of_one_run_is_refused(reference, sweep_file, tmp_path):
    ref_out, _ = reference
    run = tmp_path / "run"
    shutil.copytree(ref_out / NAMES[0], run)
    before = snapshot(run)
    for command, spec, flags in (("sweep", sweep_file, FLAGS),
                                 ("run", ROOT / "specs" / "exp1.cnn", ["--epochs", "1"])):
        result = run_cli(command, str(spec), *flags, "--out", str(run), env=ENV)
        _clean(result)
        assert result.returncode == 1
        assert f"cnnspec: error: --out {run} is the folder of one run (`cnnspec train`); a " \
            "sweep or `run` writes a folder per spec under --out, so pick another folder" \
            in result.stderr.splitlines()
        assert snapshot(run) == before


def test_train_into_a_sweeps_folder_or_other_files_is_refused(reference, tmp_path):
    """`train --out` writes history.csv, metrics.json, … into the folder: into a sweep's
    --out it would mix a run into the sweep, into a folder of one's own files it would
    replace them. Both refused before the data are read; nothing changes."""
    ref_out, _ = reference
    sweep_out = tmp_path / "sweep"
    shutil.copytree(ref_out, sweep_out)
    own = tmp_path / "own"
    own.mkdir()
    (own / "history.csv").write_text("my own numbers\n")
    (own / "metrics.json").write_text("{}\n")
    spec = ROOT / "specs" / "exp1.cnn"
    for out, what in ((sweep_out, "the runs of a `cnnspec sweep` or `run`"),
                      (own, "files that are not a run's (history.csv, metrics.json)")):
        before = snapshot(out)
        result = run_cli("train", str(spec), "--epochs", "1", "--limit", "64", "--out",
                         str(out), env=ENV)
        _clean(result)
        assert result.returncode == 1
        assert result.stderr.splitlines() == [
            f"cnnspec: error: {out} holds {what}; a new run writes its records into its "
            "folder, so pick a new or empty folder"]
        assert snapshot(out) == before


def test_a_sweep_continues_past_what_a_killed_writer_left(reference, sweep_file, tmp_path):
    """Killed mid-write, a sweep leaves a plot's temporary in --out and a variant folder
    holding only its spec.cnn (stopped before its settings.json): neither stops the sweep
    from continuing, nor does a user's .gitkeep; the variant trains as if new."""
    ref_out, ref = reference
    out = tmp_path / "out"
    shutil.copytree(ref_out, out)
    (out / ".compare_curves.k2j3h4.tmp.png").write_bytes(b"half a png")
    (out / ".gitkeep").touch()
    started = out / NAMES[2]
    shutil.rmtree(started)
    started.mkdir()
    (started / records.SPEC_FILE).write_text(SWEEP)
    again = run_cli("sweep", str(sweep_file), *FLAGS, "--out", str(out), env=ENV)
    _clean(again)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"continuing in {out}: 2 finished run(s) kept, 0 to resume, 1 to train" \
        in again.stderr
    assert _runs(out) == _runs(ref_out)
