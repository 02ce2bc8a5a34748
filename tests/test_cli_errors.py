"""Every command, fed bad files, bad run folders and bad arguments, as a user would run it.

The promise under test: bad input never gets a Python traceback. It gets a short error that says
what is wrong (with the file), a non-zero exit code (1 for bad input, 2 for a wrong command
line), it answers promptly (no hang, no unbounded memory), and a run folder it refused is left
byte for byte as it was.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import run_cli, snapshot

GOOD_SPEC = "conv8 relu pool2 | dense16 relu\ntrain epochs=1 batch=32 seed=3\n"
TIMEOUT = 60  # seconds: every case here must answer long before (a hang fails the test)


def assert_clean_failure(result, codes=(1, 2), max_lines: int = 10) -> str:
    """Non-zero exit, no traceback, no catch-all 'internal error', a short message; returns it."""
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output[-3000:]
    assert "internal error" not in output, output[-3000:]
    assert result.returncode in codes, (result.returncode, output[-3000:])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, "a failure must say why on stderr"
    assert len(lines) <= max_lines, result.stderr[-3000:]
    # `cnnspec: error: …` (a command-line or run-time problem) or `FILE[:LINE:COL]: error: …`
    assert any(": error: " in line or line.startswith("cnnspec: error:") for line in lines), \
        result.stderr
    return result.stderr



# -- bad spec files, for every command that reads a spec ---------------------------------------


def _make_bad_file(kind: str, tmp: Path) -> str:
    path = tmp / f"{kind}.cnn"
    if kind == "directory":
        path.mkdir()
    elif kind == "missing":
        pass
    elif kind == "non_utf8":
        path.write_bytes(b"conv8 relu \xff\xfe | dense4\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "nul_bytes":
        path.write_bytes(b"conv8\x00 relu | dense4\n")
    elif kind == "binary":
        path.write_bytes(bytes(range(256)) * 8)
    elif kind == "fifo":
        os.mkfifo(path)  # opening it for reading would block forever: must not hang
    elif kind == "dev_zero":
        return "/dev/zero"  # endless: must be refused after a bounded read
    elif kind == "huge_line":
        path.write_text("conv8 " + "relu " * 400_000 + "| dense4\n")  # 2 MB on one line
    elif kind == "syntax":
        path.write_text("conv8 relu ) | dense4\n")
    else:  # pragma: no cover - a typo in the parametrisation
        raise AssertionError(kind)
    return str(path)


BAD_FILES = ["directory", "missing", "non_utf8", "empty", "nul_bytes", "binary", "fifo",
             "dev_zero", "huge_line", "syntax"]

SPEC_COMMANDS = {
    "check": ["check", "{f}"],
    "summary": ["summary", "{f}"],
    "summary_json": ["summary", "--json", "{f}"],
    "fmt": ["fmt", "{f}"],
    "fmt_check": ["fmt", "--check", "{f}"],
    "parse": ["parse", "{f}"],
    "diff_a": ["diff", "{f}", "{good}"],
    "diff_b": ["diff", "{good}", "{f}"],
    "expand": ["expand", "{f}"],
    "train": ["train", "{f}", "--runs-dir", "{tmp}/runs"],
    "run": ["run", "{f}", "--runs-dir", "{tmp}/runs"],
    "sweep": ["sweep", "{f}", "--runs-dir", "{tmp}/runs"],
}


@pytest.mark.parametrize("kind", BAD_FILES)
@pytest.mark.parametrize("command", sorted(SPEC_COMMANDS))
def test_bad_spec_files_get_a_clear_error(tmp_path: Path, command: str, kind: str) -> None:
    bad = _make_bad_file(kind, tmp_path)
    good = tmp_path / "good.cnn"
    good.write_text(GOOD_SPEC)
    args = [a.format(f=bad, good=good, tmp=tmp_path) for a in SPEC_COMMANDS[command]]
    result = run_cli(*args, timeout=TIMEOUT)
    if kind == "empty" and command in ("fmt", "fmt_check", "parse"):
        # an empty file is a valid, empty spec: only commands that build the network refuse it
        # (`fmt --check` may ask for the final newline: exit 1, "would reformat")
        assert result.returncode == (1 if command == "fmt_check" else 0), result.stderr
        assert "Traceback" not in result.stdout + result.stderr
        return
    message = assert_clean_failure(result, codes=(1,))
    # the message names the file (the huge one is echoed as a window, never whole)
    assert Path(bad).name in message or bad in message, message
    assert len(message) < 4000, f"{len(message)} characters of error output"
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir()), \
        "a spec that did not load must not leave a run folder"
    if kind not in ("missing", "fifo", "dev_zero", "directory"):
        assert Path(bad).exists()  # fmt never deletes or truncates what it could not read


def test_fmt_leaves_an_unparsable_file_untouched(tmp_path: Path) -> None:
    bad = tmp_path / "bad.cnn"
    bad.write_bytes(b"conv8 relu ) | dense4\n")
    good = tmp_path / "good.cnn"
    good.write_text("conv8   relu pool2 |  dense16\n")
    result = run_cli("fmt", str(bad), str(good))
    assert_clean_failure(result, codes=(1,))
    assert bad.read_bytes() == b"conv8 relu ) | dense4\n"
    assert good.read_text() == "conv8 relu pool2 | dense16\n"  # the good one is still formatted


# -- bad run folders, for every command that reads one ------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real completed one-epoch run folder (trained once for this module)."""
    tmp = tmp_path_factory.mktemp("finished")
    spec = tmp / "tiny.cnn"
    spec.write_text(GOOD_SPEC)
    out = tmp / "run"
    result = run_cli("train", str(spec), "--limit", "64", "--out", str(out), "--progress", "none")
    assert result.returncode == 0, result.stderr
    return out


def _damage(kind: str, run: Path) -> None:
    if kind == "settings_not_json":
        (run / "settings.json").write_text("{")
    elif kind == "settings_wrong_type":
        (run / "settings.json").write_text("[]\n")
    elif kind == "settings_not_utf8":
        (run / "settings.json").write_bytes(b"\xff\xfe{}")
    elif kind == "history_not_json":
        (run / "history.json").write_text('[{"epoch": 1, "loss": ')
    elif kind == "history_wrong_type":
        (run / "history.json").write_text('{"epoch": 1}\n')
    elif kind == "status_not_json":
        (run / "status.json").write_text("not json")
    elif kind == "state_not_json":
        (run / "checkpoint" / "state.json").write_text("{]")
    elif kind == "spec_missing":
        (run / "spec.cnn").unlink()
    elif kind == "settings_missing":
        (run / "settings.json").unlink()
    else:  # pragma: no cover
        raise AssertionError(kind)


DAMAGE = ["settings_not_json", "settings_wrong_type", "settings_not_utf8", "history_not_json",
          "history_wrong_type", "status_not_json", "state_not_json", "spec_missing",
          "settings_missing"]
RUN_COMMANDS = {
    "resume": ["train", "--resume", "{d}", "--progress", "none"],
    "evaluate": ["evaluate", "{d}"],
    "compare": ["compare", "{d}", "--no-plots"],
}


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("command", sorted(RUN_COMMANDS))
def test_damaged_run_folders_are_refused_and_left_alone(
    finished_run: Path, tmp_path: Path, command: str, damage: str
) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    _damage(damage, run)
    before = snapshot(run)
    result = run_cli(*[a.format(d=run) for a in RUN_COMMANDS[command]], timeout=TIMEOUT)
    after = snapshot(run)
    if result.returncode == 0:
        # a record the command does not need may be damaged: then it must simply work ...
        assert "Traceback" not in result.stdout + result.stderr
    else:
        # ... otherwise it refuses, names the damaged record, and writes nothing
        message = assert_clean_failure(result, codes=(1, 2))
        assert str(run) in message, message
    assert after == before, "a run folder must not be changed by a command that reads it"


@pytest.mark.parametrize("command", sorted(RUN_COMMANDS))
@pytest.mark.parametrize("what", ["missing", "a_file", "empty_folder"])
def test_missing_run_folders_get_a_clear_error(tmp_path: Path, command: str, what: str) -> None:
    target = tmp_path / "target"
    if what == "a_file":
        target.write_text("hello\n")
    elif what == "empty_folder":
        target.mkdir()
    before = snapshot(target)
    result = run_cli(*[a.format(d=target) for a in RUN_COMMANDS[command]], timeout=TIMEOUT)
    message = assert_clean_failure(result, codes=(1, 2))
    assert str(target) in message, message
    assert snapshot(target) == before
    assert target.exists() == (what != "missing")


def test_training_into_an_existing_run_folder_is_refused(finished_run: Path, tmp_path: Path
                                                         ) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    before = snapshot(run)
    spec = tmp_path / "tiny.cnn"
    spec.write_text(GOOD_SPEC)
    result = run_cli("train", str(spec), "--limit", "64", "--out", str(run))
    message = assert_clean_failure(result, codes=(1, 2))
    assert str(run) in message and "resume" in message, message
    assert snapshot(run) == before


# -- bad command lines --------------------------------------------------------------------------


BAD_ARGUMENTS = {
    "no_command": [],
    "unknown_command": ["frobnicate"],
    "check_no_file": ["check"],
    "unknown_flag": ["check", "--frobnicate", "{good}"],
    "max_params_zero": ["check", "--max-params", "0", "{good}"],
    "max_params_word": ["summary", "--max-params", "many", "{good}"],
    "train_no_spec": ["train"],
    "train_spec_and_resume": ["train", "{good}", "--resume", "{tmp}"],
    "epochs_zero": ["train", "{good}", "--epochs", "0"],
    "epochs_word": ["train", "{good}", "--epochs", "ten"],
    "lr_negative": ["train", "{good}", "--lr", "-1"],
    "lr_nan": ["train", "{good}", "--lr", "nan"],
    "batch_zero": ["train", "{good}", "--batch-size", "0"],
    "limit_zero": ["train", "{good}", "--limit", "0"],
    "momentum_word": ["train", "{good}", "--momentum", "lots"],
    "optimizer_unknown": ["train", "{good}", "--optimizer", "lion"],
    "precision_unknown": ["train", "{good}", "--precision", "fp8"],
    "strategy_unknown": ["train", "{good}", "--strategy", "gossip"],
    "cluster_without_strategy": ["train", "{good}", "--cluster", "127.0.0.1:1,127.0.0.1:2"],
    "task_index_negative": ["train", "{good}", "--strategy", "multiworker", "--cluster",
                            "127.0.0.1:1,127.0.0.1:2", "--task-index", "-1"],
    "task_index_out_of_range": ["train", "{good}", "--strategy", "multiworker", "--cluster",
                                "127.0.0.1:1,127.0.0.1:2", "--task-index", "5"],
    "adam_with_momentum": ["train", "{good}", "--optimizer", "adam", "--momentum", ".9"],
    "sample_zero": ["expand", "{good}", "--sample", "0"],
    "max_variants_zero": ["expand", "{good}", "--max-variants", "0"],
    "diff_one_file": ["diff", "{good}"],
    "evaluate_nothing": ["evaluate"],
    "compare_nothing_here": ["compare", "--runs-dir", "{tmp}/no-runs-here"],
    "compare_bad_sort": ["compare", "{tmp}", "--sort", "shoe_size"],
    "compare_dirs_and_study": ["compare", "{tmp}", "--study", "s"],
    "compare_study_no_storage": ["compare", "--study", "s", "--runs-dir", "{tmp}/none"],
    "compare_study_bad_url": ["compare", "--study", "s", "--storage", "nosuchdb://x/y"],
    "sweep_trials_without_tpe": ["sweep", "{sweep}", "--study", "s", "--trials", "2",
                                 "--runs-dir", "{tmp}/runs"],
    "sweep_tpe_without_trials": ["sweep", "{sweep}", "--study", "s", "--search", "tpe",
                                 "--runs-dir", "{tmp}/runs"],
    "sweep_grace_below_heartbeat": ["sweep", "{sweep}", "--study", "s", "--heartbeat", "10",
                                    "--grace", "5", "--runs-dir", "{tmp}/runs"],
    "sweep_search_without_study": ["sweep", "{sweep}", "--search", "tpe", "--trials", "2",
                                   "--runs-dir", "{tmp}/runs"],
    "sweep_memory_storage": ["sweep", "{sweep}", "--study", "s", "--storage", "sqlite://",
                             "--runs-dir", "{tmp}/runs"],
    "sweep_journal_no_file": ["sweep", "{sweep}", "--study", "s", "--storage", "journal:///",
                              "--runs-dir", "{tmp}/runs"],
    "sweep_over_the_limit": ["sweep", "{sweep}", "--max-variants", "1",
                             "--runs-dir", "{tmp}/runs"],
    "train_a_sweep": ["train", "{sweep}", "--runs-dir", "{tmp}/runs"],
    "run_a_sweep": ["run", "{sweep}", "--runs-dir", "{tmp}/runs"],
}


@pytest.mark.parametrize("case", sorted(BAD_ARGUMENTS))
def test_bad_command_lines_get_a_clear_error(tmp_path: Path, case: str) -> None:
    good = tmp_path / "good.cnn"
    good.write_text(GOOD_SPEC)
    sweep = tmp_path / "sweep.cnn"
    sweep.write_text("conv8 relu drop{.1,.2} | dense16\ntrain epochs=1\n")
    args = [a.format(good=good, tmp=tmp_path, sweep=sweep) for a in BAD_ARGUMENTS[case]]
    result = run_cli(*args, timeout=TIMEOUT)
    # the error and a hint (argparse's usage block before it was up to 22 lines for `sweep`)
    assert_clean_failure(result, codes=(1, 2), max_lines=2)
    assert not (Path.cwd() / "runs" / "good").exists()
    assert not list(tmp_path.glob("runs/*")), "a refused command must not start a run folder"


@pytest.mark.parametrize("where", ["missing", "empty_folder", "a_file"])
def test_bad_data_folders_are_refused_before_training(tmp_path: Path, where: str) -> None:
    good = tmp_path / "good.cnn"
    good.write_text(GOOD_SPEC)
    data = tmp_path / "data"
    if where == "empty_folder":
        data.mkdir()
    elif where == "a_file":
        data.write_text("not a folder")
    result = run_cli("train", str(good), "--data", str(data), "--runs-dir", str(tmp_path / "r"))
    message = assert_clean_failure(result, codes=(1, 2))
    assert str(data) in message, message
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_run_leaves_no_empty_folder_for_a_spec_refused_before_training(tmp_path: Path) -> None:
    good = tmp_path / "good.cnn"
    good.write_text(GOOD_SPEC)
    wrong = tmp_path / "wrong.cnn"
    wrong.write_text("classes 5\n" + GOOD_SPEC)  # checks, but CIFAR-10's labels go up to 9
    runs = tmp_path / "runs"
    result = run_cli("run", str(good), str(wrong), "--limit", "64", "--runs-dir", str(runs),
                     "--no-plots", "--progress", "none")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "wrong" in result.stderr and "classes 5" in result.stderr, result.stderr
    folders = sorted(p.name for p in runs.iterdir() if p.is_dir())
    assert len(folders) == 1 and folders[0].startswith("good-"), folders


def test_a_wrong_command_line_shows_control_characters_as_signs() -> None:
    """argparse quotes the words it refuses (`unrecognized arguments: …`) as given: an ESC
    in them reached the terminal."""
    result = run_cli("check", "a.cnn", "--x\x1b[31m", timeout=TIMEOUT)
    assert result.returncode == 2
    assert "\x1b" not in result.stderr and "--x\u241b[31m" in result.stderr


def test_an_unknown_option_of_a_command_points_at_the_commands_help() -> None:
    """argparse reports a command's unknown option from the top (`cnnspec: error:
    unrecognized arguments`), whose own --help does not list the command's options."""
    result = run_cli("check", "a.cnn", "--bogus", timeout=TIMEOUT)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "cnnspec: error: unrecognized arguments: --bogus",
        "  hint: `cnnspec --help` lists the commands, `cnnspec COMMAND --help` what each takes"]
    assert run_cli("check", timeout=TIMEOUT).stderr.splitlines()[1] == (
        "  hint: `cnnspec check --help` lists what it takes")


def test_a_usage_error_with_standard_error_closed_still_exits_2() -> None:
    """argparse's message had nowhere to go (`2>&-`: sys.stderr is None), and the
    AttributeError that made ended the command with 1."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "cnnspec", "--bogus"], capture_output=False,
                          stdout=subprocess.DEVNULL, preexec_fn=lambda: __import__("os").close(2),
                          timeout=TIMEOUT)
    assert done.returncode == 2
