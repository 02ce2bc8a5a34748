"""The CLI's error paths that no other subprocess test pins by their message (issue 9).

tests/test_cli_errors.py feeds every command bad input and checks for a clean failure; this file
reaches each remaining `UsageError`, `Failure`, argparse, `DataError`, `RunFolderError` and
`DistributedError` path by its exact message, with its exit code (1 bad input or run, 2 command
line), no traceback, and nothing written where nothing may be. Most cases stop before
TensorFlow starts; the few that need a real run folder share one tiny module-scoped run.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, SPECS, snapshot

import cnnspec
from cnnspec.training import records
from cnnspec.training.data import bundled_sample_dir

GOOD = "conv8 relu pool2 | dense16\ntrain epochs=1 seed=3\n"
SWEEP = "conv8 relu drop{.1,.2} | dense16\ntrain epochs=1\n"
SWEEP4 = "conv8 relu drop{.1,.2,.3,.4} | dense16\ntrain epochs=1\n"
TIMEOUT = 120

# A fixed run-folder time stamp, so that the 10,000 folders the CLI tries can all be taken
FIXED_STAMP = """
import sys, time
time.strftime = lambda fmt, t=None: "20260101-000000"
from cnnspec.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty HOME: no Keras cache, so the default data is the bundled sample."""
    return tmp_path_factory.mktemp("home")


def cli(home: Path, *args: str, cwd: Path = ROOT, code: str | None = None,
        **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if k not in ("CNNSPEC_DATA", "KERAS_HOME", "TF_CONFIG", "CNNSPEC_CPU_DEVICES")}
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "cnnspec"]
    return subprocess.run(
        [*command, *args], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT,
        env={**base, "HOME": str(home), "COLUMNS": "1000", "TF_CPP_MIN_LOG_LEVEL": "3", **env})


def refused(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """Exit `code`, no traceback, every needle in stderr; returns stderr."""
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output[-3000:]
    assert result.returncode == code, (result.returncode, output[-3000:])
    assert "error: " in result.stderr, result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)
    return result.stderr



def empty(folder: Path) -> bool:
    return not folder.exists() or not any(folder.iterdir())


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    out = {}
    momentum = "train optimizer=sgd momentum=.9\nconv8 relu pool2 drop.25 | dense16\n"
    for name, text in (("good", GOOD), ("sweep", SWEEP), ("sweep4", SWEEP4),
                       ("momentum", momentum),
                       ("momentum_sweep", momentum.replace("drop.25", "drop{.25,.5}"))):
        out[name] = tmp_path / f"{name}.cnn"
        out[name].write_text(text)
    return out


# -- argparse types (exit 2) --------------------------------------------------------------------


@pytest.mark.parametrize(("args", "message"), [
    (["check", "--max-params", "many", "{good}"],
     "argument --max-params: not a whole number: many"),
    (["check", "--max-params", "0", "{good}"], "argument --max-params: must be at least 1: 0"),
    (["check", "--max-params", "1e999", "{good}"],  # a float infinity, not a ValueError
     "argument --max-params: not a whole number: 1e999"),
    (["expand", "{sweep}", "--sample", "1E400"], "argument --sample: not a whole number: 1E400"),
    (["check", "--max-params", "1.5e0", "{good}"],  # not a budget of 1
     "argument --max-params: not a whole number: 1.5e0"),
    (["train", "{good}", "--lr", "fast"], "argument --lr: not a number: fast"),
    (["train", "{good}", "--lr", "inf"], "argument --lr: must be a positive finite number: inf"),
    (["train", "{good}", "--lr", "1e400"],  # overflows to inf: not "positive"
     "argument --lr: must be a positive finite number: 1e400"),
    (["train", "{good}", "--lr", "1e-40"],  # as in a spec: 0 in float32
     "argument --lr: is too small: 1e-40 is 0 or a denormal in float32 and bfloat16"),
    (["train", "{good}", "--out", ""], "argument --out: needs a folder, not an empty name"),
    (["train", "--resume", ""], "argument --resume: needs a folder, not an empty name"),
    (["train", "{good}", "--runs-dir", ""],
     "argument --runs-dir: needs a folder, not an empty name"),
    (["train", "{good}", "--weight-decay", "1e-45"],
     "argument --weight-decay: is too small: 1e-45 is 0 or a denormal in float32"),
    (["train", "{good}", "--ema", "x"], "argument --ema: not a number: x"),
    (["sweep", "{sweep}", "--out", ""], "argument --out: needs a folder, not an empty name"),
    (["run", "{good}", "--out", ""], "argument --out: needs a folder, not an empty name"),
    (["expand", "{sweep}", "--sample-seed", "x"], "argument --sample-seed: not a whole number: x"),
    (["expand", "{sweep}", "--sample-seed", "-1"], "argument --sample-seed: must be 0 or more: -1"),
    # a column to sort by is known before anything trains (it was refused after the batch)
    (["sweep", "{sweep}", "--sort", "val_acc"],
     "argument --sort: cannot sort by 'val_acc'; use one of: val_accuracy"),
    (["run", "{good}", "--sort", "bogus"], "argument --sort: cannot sort by 'bogus'"),
    (["compare", "{good}", "--sort", "bogus"], "argument --sort: cannot sort by 'bogus'"),
])
def test_argument_types(home: Path, files: dict[str, Path], args: list[str], message: str
                        ) -> None:
    result = cli(home, *[a.format(**files) for a in args])
    refused(result, 2, message)


# -- spec files that cannot be read (exit 1) ----------------------------------------------------


@pytest.mark.parametrize(("kind", "message"), [
    ("directory", "cannot read spec: it is a directory"),
    ("missing", "cannot read spec: No such file or directory"),
    ("fifo", "cannot read spec: it is a pipe and nothing was written to it"),
    ("too_large", "cannot read spec: it is larger than 1,048,576 bytes"),
    ("non_utf8", "cannot read spec: it is not UTF-8 text (byte 0xff on line 2)"),
])
def test_unreadable_spec_files(home: Path, tmp_path: Path, kind: str, message: str) -> None:
    path = tmp_path / "x.cnn"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "too_large":
        path.write_text("# padding\n" * 110_000)
    elif kind == "non_utf8":
        path.write_bytes(b"conv8 relu\npool2 \xff | dense4\n")
    stderr = refused(cli(home, "check", str(path)), 1, f"{path}: error: {message}")
    assert len(stderr) < 1000


def test_an_empty_spec_file_name_is_named_as_such(home: Path, tmp_path: Path) -> None:
    """`check ''` (an unset shell variable): not "a directory", which the empty path opens."""
    stderr = refused(cli(home, "check", "", cwd=tmp_path), 1,
                     "error: cannot read spec: the file name is empty")
    assert "directory" not in stderr


# -- command lines that cannot work (exit 2), refused before anything is written ----------------


CLUSTER = ["--strategy", "multiworker", "--task-index", "0", "--cluster"]
USAGE = {
    # a flag's number the model cannot compute with, refused as the spec's would be
    "ema_one_in_float32": (["train", "{good}", "--ema", ".99999999999"],
                           "ema must be below 1, and .99999999999 is 1 in float32"),
    "momentum_one_in_float32": (["sweep", "{sweep}", "--momentum", ".99999999999"],
                                "momentum must be below 1, and .99999999999 is 1 in float32"),
    "weight_decay_infinite": (["run", "{good}", "--weight-decay", "1e300"],
                              "weight_decay is too large: 1e+300 is infinite in float32"),
    "lr_infinite": (["train", "{good}", "--lr", "1e39"],
                    "lr is too large: 1e+39 is infinite in float32"),
    "spec_and_resume": (["train", "{good}", "--resume", "{tmp}"],
                        "cnnspec: error: give either a SPEC or --resume RUN_DIR, not both"),
    "no_spec": (["train"], "cnnspec: error: train needs a SPEC (or --resume RUN_DIR)"),
    # a resumed run keeps its settings and folder: these were ignored without a word
    # (the test adds --runs-dir to every train command line)
    "resume_with_settings": (["train", "--resume", "{tmp}", "--epochs", "10", "--lr", ".5",
                              "--precision", "float32", "--out", "{tmp}/out"],
                             "cnnspec: error: --resume continues {tmp} with the settings and "
                             "folder it was started with, so --lr, --epochs, --precision, --out, "
                             "--runs-dir cannot apply; --data, --limit, --progress, --verbose "
                             "and the data-parallel flags can"),
    "resume_with_a_budget": (["train", "--resume", "{tmp}", "--max-params", "5"],
                             "so --runs-dir, --max-params cannot apply"),
    # the spec's own settings check; a flag makes them untrainable
    "override_makes_settings_untrainable": (
        ["train", "{momentum}", "--optimizer", "adam"],
        "cnnspec: error: {momentum}: momentum applies to sgd and rmsprop, not adam (remove "
        "momentum, or use optimizer=sgd (or rmsprop); adam has its own moment estimates) (after "
        "the command-line overrides)"),
    "override_in_a_sweep_names_the_variant": (
        ["sweep", "{momentum_sweep}", "--optimizer", "adam"],
        "cnnspec: error: {momentum_sweep} (momentum_sweep[drop=.25]): momentum applies to sgd"),
    "train_a_sweep": (["train", "{sweep}"],
                      "is a sweep; train its variants with `cnnspec sweep`"),
    "run_a_sweep": (["run", "{sweep}"], "sweep.cnn is a sweep; use `cnnspec sweep {sweep}`"),
    "run_same_names": (["run", "{good}", "{tmp}/other/good.cnn", "--out", "{tmp}/out"],
                       "cnnspec: error: {good} and {tmp}/other/good.cnn share the run folder "
                       "name good; their run folders under --out would clash (rename one file)"),
    "cluster_twice": (["train", "{good}", *CLUSTER, "127.0.0.1:5,127.0.0.1:5"],
                      "cnnspec: error: --cluster lists the same host:port twice"),
    "cluster_empty": (["train", "{good}", *CLUSTER, " , "],
                      "cnnspec: error: --cluster needs at least one host:port"),
    "compare_nothing": (["compare"], "cnnspec: error: compare needs RUN_DIR… (or --study NAME "
                                     "[--storage URL])"),
    "compare_both": (["compare", "{tmp}", "--study", "s"],
                     "cnnspec: error: give RUN_DIR… or --study/--storage, not both"),
    "trials_on_a_grid": (["sweep", "{sweep}", "--study", "s", "--trials", "2"],
                         "cnnspec: error: --trials applies to --search tpe; a grid trains every "
                         "variant (take fewer with --sample K)"),
    "sample_with_tpe": (["sweep", "{sweep}", "--study", "s", "--search", "tpe", "--trials", "1",
                         "--sample", "1"],
                        "cnnspec: error: --sample applies to grid sweeps; --search tpe samples "
                        "with --trials N"),
    "tpe_without_trials": (["sweep", "{sweep}", "--study", "s", "--search", "tpe"],
                           "cnnspec: error: --search tpe needs --trials N"),
    "grace_below_heartbeat": (["sweep", "{sweep}", "--study", "s", "--heartbeat", "10",
                               "--grace", "5"],
                              "cnnspec: error: --grace (5s) must be longer than --heartbeat "
                              "(10s)"),
    "study_flags_without_study": (["sweep", "{sweep}", "--search", "tpe", "--trials", "2"],
                                  "cnnspec: error: --search, --trials, --heartbeat and --grace "
                                  "need --study NAME"),
}


@pytest.mark.parametrize("case", sorted(USAGE))
def test_usage_errors(home: Path, tmp_path: Path, files: dict[str, Path], case: str) -> None:
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "good.cnn").write_text(GOOD)
    args, message = USAGE[case]
    runs = ["--runs-dir", str(tmp_path / "runs")] if args[0] in ("train", "run", "sweep") else []
    result = cli(home, *[a.format(tmp=tmp_path, **files) for a in args], *runs)
    refused(result, 2, message.format(tmp=tmp_path, **files))
    assert not (tmp_path / "runs").exists(), "a refused command starts no runs folder"
    assert not (tmp_path / "out").exists()


def test_a_sample_over_the_variant_limit(home: Path, files: dict[str, Path]) -> None:
    result = cli(home, "expand", str(files["sweep4"]), "--sample", "3", "--max-variants", "2")
    refused(result, 1, "a sample of 3 variants is over the limit of 2 (the sweep has 4",
            "sample fewer, or raise the limit with --max-variants")


def test_check_takes_the_sample_its_hint_offers(home: Path, tmp_path: Path,
                                                files: dict[str, Path]) -> None:
    """`check` on a sweep over the limit says "sample some with --sample K": that works on check
    itself, and checks the very variants `expand` samples with the same seed (half of this
    sweep's variants have a pool too large for the input, so each sample's verdict shows which
    variants were checked)."""
    from cnnspec.language.parse import parse
    from cnnspec.language.sweep import expand

    refused(cli(home, "check", str(files["sweep4"]), "--max-variants", "2"), 1,
            "this sweep has 4 variants, over the limit of 2",
            "sample some with --sample K, or raise the limit with --max-variants")
    assert cli(home, "check", str(files["sweep4"]), "--max-variants", "2", "--sample", "2",
               "--sample-seed", "5").stdout.split() == [
        "ok", str(files["sweep4"]), "2", "sampled", "variants", "(--sample-seed", "5),", "all",
        "check"]
    text = "conv8 relu pool{2,64} drop{.1,.2,.3,.4} | dense16\n"
    spec_file = tmp_path / "halfbad.cnn"
    spec_file.write_text(text)
    verdicts = set()
    for seed in range(6):
        names = [v.name for v in expand(parse(text, name="halfbad"), sample=2, seed=seed)]
        bad = [n for n in names if "pool=64" in n]
        result = cli(home, "check", str(spec_file), "--sample", "2", "--sample-seed", str(seed))
        if bad:
            stderr = refused(result, 1, *(f"in variant {n}: pool64" for n in bad))
            assert stderr.count("error:") == len(bad)
        else:
            assert result.returncode == 0, result.stderr
        verdicts.add(bool(bad))
    assert verdicts == {True, False}, "the seeds should give samples with and without pool64"


def test_a_sample_of_one_variant_is_told_as_a_sample(home: Path, tmp_path: Path) -> None:
    """`--sample 1` of a sweep: a failing variant is named (it used to be told as if the file
    had no sweep), and a passing one is `1 sampled variant`, not a plain spec's `ok` line;
    `expand` says how many the sample was taken from. A sample as large as the sweep is the
    sweep itself."""
    from cnnspec.language.parse import parse
    from cnnspec.language.sweep import expand

    text = "conv8 relu pool{2,64} | dense16\n"
    spec_file = tmp_path / "one.cnn"
    spec_file.write_text(text)
    seen = set()
    for seed in range(6):
        (name,) = [v.name for v in expand(parse(text, name="one"), sample=1, seed=seed)]
        result = cli(home, "check", str(spec_file), "--sample", "1", "--sample-seed", str(seed))
        if "pool=64" in name:
            refused(result, 1, f"in variant {name}: pool64")
        else:
            assert result.returncode == 0, result.stderr
            assert result.stdout.split() == ["ok", str(spec_file), "1", "sampled", "variant",
                                             "(--sample-seed", f"{seed}),", "all", "check"]
            listed = cli(home, "expand", str(spec_file), "--sample", "1", "--sample-seed",
                         str(seed))
            assert listed.stdout.splitlines()[0] == (
                f"{spec_file}: 1 variant sampled of 2 (--sample-seed {seed})")
        seen.add("pool=64" in name)
    assert seen == {True, False}, "the seeds should sample both variants"
    optional = tmp_path / "optional.cnn"  # 2 x 2 grid points, 3 variants: none, .1, .2
    optional.write_text("conv8 drop{.1,.2}? |\n")
    assert cli(home, "expand", str(optional)).stdout.splitlines()[0] == (
        f"{optional}: 3 variants")  # was "3 variants sampled of 4", with nothing sampled
    whole = tmp_path / "whole.cnn"
    whole.write_text("conv8 relu pool{2,4} | dense16\n")
    assert cli(home, "check", str(whole), "--sample", "5").stdout.split() == [
        "ok", str(whole), "2", "variants,", "all", "check"]
    assert cli(home, "expand", str(whole), "--sample", "5").stdout.splitlines()[0] == (
        f"{whole}: 2 variants")


# -- folders the CLI is told to write into (exit 1) ---------------------------------------------


def test_out_is_a_file(home: Path, tmp_path: Path, files: dict[str, Path]) -> None:
    target = tmp_path / "a-file"
    target.write_text("mine\n")
    refused(cli(home, "train", str(files["good"]), "--out", str(target)), 1,
            f"cnnspec: error: --out {target}: exists and is not a folder; pick another folder")
    assert target.read_text() == "mine\n"


def test_a_runs_folder_that_takes_no_new_folder(home: Path, files: dict[str, Path]) -> None:
    # /proc exists, but nobody (not even root) can make a folder in it
    refused(cli(home, "train", str(files["good"]), "--limit", "64", "--runs-dir", "/proc"), 1,
            "cnnspec: error: cannot create a run folder in /proc: ")


def test_ten_thousand_run_folders_of_one_second(home: Path, tmp_path: Path,
                                               files: dict[str, Path]) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "good-20260101-000000").mkdir()
    for n in range(2, 10_000):
        (runs / f"good-20260101-000000-{n}").mkdir()
    result = cli(home, "train", str(files["good"]), "--limit", "64", "--runs-dir", str(runs),
                 code=FIXED_STAMP)
    refused(result, 1, f"cnnspec: error: {runs}: 10,000 run folders named "
                       "good-20260101-000000-N exist already")
    assert len(list(runs.iterdir())) == 9_999


def test_expand_write_into_a_file(home: Path, tmp_path: Path, files: dict[str, Path]) -> None:
    target = tmp_path / "a-file"
    target.write_text("mine\n")
    refused(cli(home, "expand", str(files["sweep"]), "--write", str(target)), 1,
            f"cnnspec: error: --write {target}: cannot create the folder (File exists)")
    assert target.read_text() == "mine\n"


def test_expand_write_over_a_folder(home: Path, tmp_path: Path, files: dict[str, Path]) -> None:
    out = tmp_path / "out"
    (out / "sweep[drop=.1].cnn").mkdir(parents=True)
    refused(cli(home, "expand", str(files["sweep"]), "--write", str(out)), 1,
            f"cnnspec: error: --write {out}: sweep[drop=.1].cnn is already there with other "
            "content; nothing written")
    assert sorted(p.name for p in out.iterdir()) == ["sweep[drop=.1].cnn"]


def test_expand_write_where_no_file_can_be_written(home: Path, tmp_path: Path,
                                                   files: dict[str, Path]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    if subprocess.run(["chattr", "+i", str(out)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        result = cli(home, "expand", str(files["sweep"]), "--write", str(out))
    finally:
        subprocess.run(["chattr", "-i", str(out)], check=True)
    refused(result, 1, f"cnnspec: error: --write {out}: cannot write sweep[drop=.1].cnn (",
            "); nothing written")
    assert not any(out.iterdir())


# -- compare: run folders that are not there or cannot be read (exit 1) -------------------------


def _fake_run(folder: Path) -> Path:
    """A completed run's records, written by hand (compare needs no TensorFlow)."""
    folder.mkdir(parents=True)
    records.write_json(folder / records.SETTINGS_FILE, {
        "spec": {"name": "fake"}, "model": {"params": 10, "macs_per_image": 100},
        "settings": {"epochs": 1, "lr": 0.01, "batch": 32}})
    records.write_json(folder / records.HISTORY_JSON, [
        {"epoch": 1, "loss": 2.0, "accuracy": 0.2, "val_loss": 2.1, "val_accuracy": 0.19}])
    records.write_json(folder / records.STATUS_FILE, {"status": "completed"})
    return folder


def test_compare_a_missing_folder(home: Path, tmp_path: Path) -> None:
    refused(cli(home, "compare", str(tmp_path / "gone")), 1,
            f"cnnspec: error: {tmp_path / 'gone'}: no such run folder")


def test_compare_a_file(home: Path, files: dict[str, Path]) -> None:
    refused(cli(home, "compare", str(files["good"])), 1,
            f"cnnspec: error: {files['good']}: a file, not a run folder (compare takes run "
            "folders, or folders of them)")


def test_compare_a_folder_without_runs(home: Path, tmp_path: Path) -> None:
    (tmp_path / "nothing").mkdir()
    refused(cli(home, "compare", str(tmp_path / "nothing")), 1,
            f"cnnspec: error: {tmp_path / 'nothing'}: not a run folder and holds none")


def test_compare_a_record_that_cannot_be_read(home: Path, tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "run")
    (run / records.HISTORY_JSON).unlink()
    (run / records.HISTORY_JSON).mkdir()  # a folder where the file belongs
    before = snapshot(run, lock=False)
    refused(cli(home, "compare", str(run), "--no-plots"), 1,
            "cnnspec: error: 1 of 1 run folder(s) not compared:",
            f"{run / records.HISTORY_JSON}: cannot read: Is a directory")
    assert snapshot(run, lock=False) == before


def test_compare_plots_into_a_file(home: Path, tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "run")
    target = tmp_path / "a-file"
    target.write_text("mine\n")
    refused(cli(home, "compare", str(run), "--plots", str(target)), 1,
            f"cnnspec: error: --plots {target}: cannot create the folder (File exists)")
    assert target.read_text() == "mine\n"


def test_compare_plots_over_a_folder(home: Path, tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "run")
    plots = tmp_path / "plots"
    (plots / "compare_curves.png").mkdir(parents=True)  # a folder where the PNG belongs
    result = cli(home, "compare", str(run), "--plots", str(plots))
    refused(result, 1, f"cnnspec: error: cannot write the plots in {plots}: Is a directory: "
                       f"{plots / 'compare_curves.png'}")
    assert "fake" in result.stdout  # the table was printed before the plots were tried
    assert sorted(p.name for p in plots.iterdir()) == ["compare_curves.png"]


# -- sweeps stored in a study --------------------------------------------------------------------


def test_a_study_not_made_by_cnnspec(home: Path, tmp_path: Path, files: dict[str, Path]) -> None:
    import optuna

    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    foreign = optuna.create_study(study_name="s", storage=url)
    foreign.enqueue_trial({"x": 1})
    result = cli(home, "sweep", str(files["sweep"]), "--study", "s", "--storage", url,
                 "--out", str(tmp_path / "out"))
    refused(result, 1, "cnnspec: error: study s exists but was not made by cnnspec; use "
                       "another --study")
    assert not (tmp_path / "out").exists()


def test_a_study_holding_another_sweep(home: Path, tmp_path: Path, files: dict[str, Path]
                                       ) -> None:
    import optuna

    from cnnspec.experiments import study

    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    other = optuna.create_study(study_name="s", storage=url)
    for key, value in ((study.A_SPEC, "conv4 | dense8\n"), (study.A_CONFIG, {}),
                       (study.A_VARIANTS, []), (study.A_HEARTBEAT, 30), (study.A_GRACE, 120),
                       (study.A_QUEUED, 0)):
        other.set_user_attr(key, value)
    result = cli(home, "sweep", str(files["sweep"]), "--study", "s", "--storage", url,
                 "--out", str(tmp_path / "out"))
    refused(result, 1, "cnnspec: error: study s holds a different sweep: the spec differs",
            "Run every worker with the same spec and flags, or use another --study.")
    assert not (tmp_path / "out").exists()


# -- CIFAR-10 folders that cannot be used (DataError -> exit 1, before any run folder) -----------


def _batch(data: object = None, labels: object = None, **extra: object) -> bytes:
    d: dict[bytes, object] = {b"batch_label": b"training batch 1 of 5"}
    if data is not None:
        d[b"data"] = data
    if labels is not None:
        d[b"labels"] = labels
    d.update({k.encode(): v for k, v in extra.items()})
    return pickle.dumps(d, protocol=3)  # protocol 2 writes b"" via __builtin__.bytes


def _images(n: int) -> np.ndarray:
    return np.zeros((n, 3072), dtype=np.uint8)


# an ndarray that `_reconstruct` makes and no BUILD ever fills
_NO_ARRAY_DATA = (b"\x80\x02}q\x00(U\x04dataq\x01cnumpy.core.multiarray\n_reconstruct\nq\x02"
                  b"cnumpy\nndarray\nq\x03K\x00\x85q\x04U\x01bq\x05\x87q\x06Rq\x07u.")

DATA_DAMAGE: dict[str, tuple[str, object, str]] = {
    # case: (file, its bytes, or a callable making it, the message after "<file>: ")
    "hostile_global": ("data_batch_1", b"\x80\x02cos\nsystem\nq\x00.",
                       "refused to load: the pickle asks for os.system"),
    "size_claim": ("data_batch_1", b"\x80\x02T\xff\xff\xff\x7fabc",
                   "not a readable CIFAR-10 pickle (truncated or corrupt: a size it declares "
                   "does not match the bytes in the file"),
    "corrupt": ("data_batch_1", b"\x80\x02)R.", "not a readable CIFAR-10 pickle (truncated or "
                "corrupt: UnpicklingError: unpickling stack underflow)"),
    "unreadable": ("data_batch_1", "/proc/self/mem", "cannot read: "),
    "not_a_dict": ("data_batch_1", pickle.dumps([1, 2], protocol=2),
                   "expected a pickled dict, found list"),
    "array_without_data": ("data_batch_1", _NO_ARRAY_DATA, "an array without its data"),
    "missing_keys": ("data_batch_1", _batch(), "missing key(s) data, labels"),
    "data_shape": ("data_batch_1", _batch(np.zeros((2, 10), np.uint8), [0, 0]),
                   "'data' must be a uint8 N x 3072 array, found uint8 array of shape (2, 10)"),
    "no_images": ("data_batch_1", _batch(_images(0), []), "holds no images"),
    "labels_text": ("data_batch_1", _batch(_images(2), ["cat", "dog"]),
                    "'labels' must be a list of integers 0..9"),
    "labels_count": ("data_batch_1", _batch(_images(2), [0, 1, 2]), "3 labels for 2 images"),
    "label_range": ("data_batch_1", _batch(_images(2), [0, 12]),
                    "label 12 at index 1 is outside 0..9 (1 bad label(s))"),
    "label_names": ("batches.meta", pickle.dumps({b"label_names": [b"a", b"b"]}, protocol=2),
                    "'label_names' must be a list of 10 names"),
    "label_names_types": ("batches.meta", pickle.dumps({b"label_names": [1] * 10}, protocol=2),
                          "'label_names' must be a list of 10 names"),
}


@pytest.mark.parametrize("case", sorted(DATA_DAMAGE))
def test_damaged_data_files(home: Path, tmp_path: Path, files: dict[str, Path], case: str
                            ) -> None:
    name, content, message = DATA_DAMAGE[case]
    data = tmp_path / "cifar-10-batches-py"
    data.mkdir()
    for good in bundled_sample_dir().iterdir():
        (data / good.name).symlink_to(good)
    (data / name).unlink()
    if isinstance(content, str):
        (data / name).symlink_to(content)
    else:
        (data / name).write_bytes(content)
    runs = tmp_path / "runs"
    result = cli(home, "train", str(files["good"]), "--data", str(data), "--runs-dir", str(runs))
    refused(result, 1, f"cnnspec: error: {data / name}: {message}")
    assert empty(runs)


@pytest.mark.parametrize(("where", "message"), [
    ("missing", "no such directory; expected a 'cifar-10-batches-py' folder"),
    ("a_file", "not a directory; expected a 'cifar-10-batches-py' folder"),
    ("empty", "missing {d}/data_batch_1, {d}/data_batch_2"),
])
def test_data_folders_that_hold_no_data(home: Path, tmp_path: Path, files: dict[str, Path],
                                        where: str, message: str) -> None:
    data = tmp_path / "data"
    if where == "a_file":
        data.write_text("x\n")
    elif where == "empty":
        data.mkdir()
    for flag, value in (("--data", str(data)), (None, str(data))):
        args = ["train", str(files["good"]), "--runs-dir", str(tmp_path / "runs")]
        env = {} if flag else {"CNNSPEC_DATA": value}
        label = "--data" if flag else "$CNNSPEC_DATA"
        result = cli(home, *args, *([flag, value] if flag else []), **env)
        refused(result, 1, f"cnnspec: error: {label} {data}: {message.format(d=data)}")
    assert empty(tmp_path / "runs")


# -- a real run folder: resume and evaluate ------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("tiny")
    spec = tmp / "tiny.cnn"
    spec.write_text(GOOD)
    out = tmp / "run"
    result = cli(home, "train", str(spec), "--limit", "64", "--out", str(out),
                 "--progress", "none", "--precision", "float32")
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def copy_run(tiny_run: Path, tmp_path: Path, status: str | None = None) -> Path:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / records.LOCK_FILE).unlink(missing_ok=True)
    if status is not None:
        record = records.read_status(run)
        record["status"] = status
        records.write_json(run / records.STATUS_FILE, record)
    return run


def _edit_json(path: Path, edit) -> None:
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))


SETTINGS_DAMAGE = {
    "not_an_object": (lambda r: r.clear() or r.update(x=1), "'spec' is missing"),
    # a field that is there with the wrong type is said to be that, not "missing"
    "train_images_text": (lambda r: r["data"].update(train_images="64"),
                          "'data.train_images' must be a whole number, not \"64\""),
    "precision_number": (lambda r: r.update(precision=5), "'precision' must be a string, not 5"),
    "spec_list": (lambda r: r.update(spec=[1, 2]), "'spec' must be an object, not [1, 2]"),
    "no_spec_name": (lambda r: r["spec"].pop("name"), "'spec.name' is missing"),
    "no_fingerprint": (lambda r: r["data"].pop("fingerprint"), "'data.fingerprint' is missing"),
    "unknown_setting": (lambda r: r["settings"].update(warp=9), "unknown setting(s) warp"),
    "epochs_zero": (lambda r: r["settings"].update(epochs=0),
                    "'settings.epochs' must be a positive whole number"),
    "precision": (lambda r: r.update(precision="fp8"), "unknown precision 'fp8'"),
    # values of the wrong type or range, which used to fail deep in a run with a traceback
    # (and leave status.json saying "running")
    "lr_word": (lambda r: r["settings"].update(lr="fast"), "'settings.lr' cannot be 'fast'"),
    "augment_word": (lambda r: r["settings"].update(augment="zzz"),
                     "'settings.augment' cannot be 'zzz'"),
    "optimizer": (lambda r: r["settings"].update(optimizer="sgdd"),
                  "'settings.optimizer': optimizer must be one of"),
    "seed": (lambda r: r.update(effective_seed=-5),
             "'effective_seed' must be a whole number from 0 to 2**32 - 1"),
    "steps_per_execution": (lambda r: r.update(steps_per_execution=0),
                            "'steps_per_execution' must be at least 1"),
    "train_images": (lambda r: r["data"].update(train_images=-7),
                     "'data.train_images' must be a positive whole number"),
}


@pytest.mark.parametrize(("command", "case"), [
    *(("resume", case) for case in sorted(SETTINGS_DAMAGE)),
    ("evaluate", "unknown_setting"),  # evaluate reads settings.json with the same check
    ("evaluate", "train_images"),
])
def test_damaged_settings_records(home: Path, tiny_run: Path, tmp_path: Path, command: str,
                                  case: str) -> None:
    run = copy_run(tiny_run, tmp_path, "interrupted")
    edit, message = SETTINGS_DAMAGE[case]
    _edit_json(run / records.SETTINGS_FILE, edit)
    before = snapshot(run, lock=False)
    args = ["train", "--resume", str(run)] if command == "resume" else ["evaluate", str(run)]
    prefix = "cannot resume: " if command == "resume" else "cannot evaluate: "
    refused(cli(home, *args), 1, f"cnnspec: error: {prefix}{run / records.SETTINGS_FILE}: "
                                 f"corrupted record: {message}")
    assert snapshot(run, lock=False) == before


@pytest.mark.parametrize(("command", "damage", "message"), [
    ("resume", "deep", "corrupted record, nested too deep"),
    ("evaluate", "huge", "corrupted record, not valid JSON (a whole number of 401 digits)"),
    ("compare", "deep", "corrupted record, nested too deep"),
    ("compare", "huge", "corrupted record, not valid JSON (a whole number of 401 digits)"),
    ("compare", "fifo", "corrupted record, not a regular file"),
])
def test_records_no_reader_can_take(home: Path, tiny_run: Path, tmp_path: Path, command: str,
                                    damage: str, message: str) -> None:
    """JSON nested past the decoder's depth (RecursionError), a number of 401 digits (an
    OverflowError wherever it met a float) and a FIFO in a record's place (compare blocked
    forever) are each a damaged record, said in one line."""
    run = copy_run(tiny_run, tmp_path, "interrupted")
    target = run / (records.STATUS_FILE if damage == "fifo" else records.SETTINGS_FILE)
    if damage == "deep":
        target.write_text("[" * 100_000 + "]" * 100_000)
    elif damage == "huge":
        _edit_json(target, lambda r: r["settings"].update(lr=10**400))
    else:
        target.unlink()
        os.mkfifo(target)
    args = {"resume": ["train", "--resume", str(run)], "evaluate": ["evaluate", str(run)],
            "compare": ["compare", str(run), "--no-plots"]}[command]
    refused(cli(home, *args), 1, f"{target}: {message}")


STATE_DAMAGE = {
    "not_an_object": (lambda s: "[]", "not a JSON object"),
    "no_epochs": (lambda s: {k: v for k, v in s.items() if k != "epochs_completed"},
                  "'epochs_completed' is missing"),
    "model_path": (lambda s: {**s, "model": "../model.keras"},
                   "'model' must name the checkpoint's .keras file"),
    "history_rows": (lambda s: {**s, "history": []},
                     "'history' must hold one row per completed epoch"),
    "seed_states": (lambda s: {**s, "seed_states": "none"},
                    "'seed_states' must be a list of integer lists"),
}


@pytest.mark.parametrize("case", sorted(STATE_DAMAGE))
def test_damaged_checkpoint_state(home: Path, tiny_run: Path, tmp_path: Path, case: str
                                  ) -> None:
    run = copy_run(tiny_run, tmp_path, "interrupted")
    path = records.checkpoint_dir(run) / records.CHECKPOINT_STATE
    damage, message = STATE_DAMAGE[case]
    path.write_text(json.dumps(damage(json.loads(path.read_text()))))
    before = snapshot(run, lock=False)
    refused(cli(home, "train", "--resume", str(run)), 1,
            f"cnnspec: error: cannot resume: {path}: corrupted record: {message}")
    assert snapshot(run, lock=False) == before


def _move_data_away(run: Path, tmp_path: Path) -> Path:
    gone = tmp_path / "gone"
    _edit_json(run / records.SETTINGS_FILE, lambda r: r["data"].update(source=str(gone)))
    return gone


def test_evaluate_when_the_recorded_data_is_gone(home: Path, tiny_run: Path, tmp_path: Path
                                                ) -> None:
    run = copy_run(tiny_run, tmp_path)
    gone = _move_data_away(run, tmp_path)
    before = snapshot(run, lock=False)
    refused(cli(home, "evaluate", str(run)), 1,
            "cnnspec: error: cannot evaluate: the run's data is not readable any more: "
            f"recorded data folder {gone}: no such directory", "; pass --data DIR")
    assert snapshot(run, lock=False) == before


def test_resume_when_the_recorded_data_is_gone(home: Path, tiny_run: Path, tmp_path: Path
                                              ) -> None:
    run = copy_run(tiny_run, tmp_path, "interrupted")
    gone = _move_data_away(run, tmp_path)
    before = snapshot(run, lock=False)
    refused(cli(home, "train", "--resume", str(run)), 1,
            f"cnnspec: error: cannot resume {run}: recorded data folder {gone}: no such directory",
            "; pass --data DIR --limit 64 (the folder it was trained from, and its number of "
            "training images)")
    assert snapshot(run, lock=False) == before


def test_resume_applies_a_limit_and_its_fingerprint_judges_it(home: Path, tiny_run: Path,
                                                              tmp_path: Path) -> None:
    """Without --data a resumed run reloads its recorded folder; `--limit 32` there reads
    32 images, which are not the 64 it trained on: refused by the fingerprint, before
    TensorFlow, rather than the --limit being dropped without a word."""
    run = copy_run(tiny_run, tmp_path, "interrupted")
    before = snapshot(run, lock=False)
    refused(cli(home, "train", "--resume", str(run), "--limit", "32"), 1,
            f"cnnspec: error: cannot resume {run}: the data differ from the 64 training images")
    assert snapshot(run, lock=False) == before


# -- paths that start TensorFlow ------------------------------------------------------------------


def test_resume_with_different_data(home: Path, tiny_run: Path, tmp_path: Path) -> None:
    run = copy_run(tiny_run, tmp_path, "interrupted")
    before = snapshot(run, lock=False)
    # the whole bundled sample, where the run trained on its first 64 images
    refused(cli(home, "train", "--resume", str(run), "--data", str(bundled_sample_dir())), 1,
            f"cnnspec: error: cannot resume {run}: the data differ from the 64 training images")
    assert snapshot(run, lock=False) == before
    # --limit with --data picks the same 64 images again: the data moved, the run resumes
    moved = tmp_path / "moved"
    shutil.copytree(bundled_sample_dir(), moved)
    _move_data_away(run, tmp_path)
    done = cli(home, "train", "--resume", str(run), "--data", str(moved), "--limit", "64",
               "--progress", "none")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert records.read_status(run)["status"] == "completed"


def test_a_relative_data_folder_is_recorded_absolute(home: Path, tmp_path: Path) -> None:
    """`--data cifar` names a folder relative to where the run was started; the run is
    evaluated (or resumed) from anywhere, so its record holds the absolute folder."""
    shutil.copytree(bundled_sample_dir(), tmp_path / "cifar")
    (tmp_path / "tiny.cnn").write_text(GOOD)
    trained = cli(home, "train", "tiny.cnn", "--data", "cifar", "--limit", "64", "--out", "run",
                  "--progress", "none", "--precision", "float32", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    run = tmp_path / "run"
    assert json.loads((run / records.SETTINGS_FILE).read_text())["data"]["source"] == \
        str((tmp_path / "cifar").resolve())  # the working folder as the OS gives it
    scored = cli(home, "evaluate", str(run))  # from the project's folder, not tmp_path
    assert scored.returncode == 0 and "Traceback" not in scored.stderr, scored.stderr[-3000:]


def _poison_weights(keras_file: Path) -> None:
    """Every float in a saved model's weights becomes NaN (a checkpoint gone bad)."""
    import io
    import zipfile

    import h5py

    with zipfile.ZipFile(keras_file) as z:
        members = {name: z.read(name) for name in z.namelist()}
    buffer = io.BytesIO(members["model.weights.h5"])
    with h5py.File(buffer, "r+") as h5:
        def poison(_: str, obj: object) -> None:
            if isinstance(obj, h5py.Dataset) and obj.dtype.kind == "f" and obj.size:
                obj[...] = np.nan

        h5.visititems(poison)
    members["model.weights.h5"] = buffer.getvalue()
    with zipfile.ZipFile(keras_file, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)


def test_resume_that_diverges(home: Path, tiny_run: Path, tmp_path: Path) -> None:
    run = copy_run(tiny_run, tmp_path, "interrupted")
    _edit_json(run / records.SETTINGS_FILE, lambda r: r["settings"].update(epochs=2))
    state = json.loads((records.checkpoint_dir(run) / records.CHECKPOINT_STATE).read_text())
    _poison_weights(records.checkpoint_dir(run) / state["model"])
    refused(cli(home, "train", "--resume", str(run), "--progress", "none"), 1,
            "cnnspec: error: ", "training diverged")
    assert records.read_status(run)["status"] == "failed"


@pytest.mark.parametrize(("flags", "env", "message"), [
    (["--strategy", "mirrored"], {"CNNSPEC_CPU_DEVICES": "two"},
     "cnnspec: error: $CNNSPEC_CPU_DEVICES must be a positive integer, not 'two'"),
    (["--strategy", "multiworker"], {"TF_CONFIG": "{"}, "cnnspec: error: TF_CONFIG is not JSON"),
    (["--strategy", "multiworker"],
     {"TF_CONFIG": '{"cluster": 1, "task": {"type": "worker", "index": 0}}'},
     "cnnspec: error: TF_CONFIG must look like"),
    (["--strategy", "multiworker"],
     {"TF_CONFIG": '{"cluster": {"worker": ["127.0.0.1:9"]}, "task": {"type": "worker", '
                   '"index": 3}}'},
     "cnnspec: error: TF_CONFIG: task worker:3 is not in the cluster"),
])
def test_strategies_that_cannot_be_set_up(home: Path, tmp_path: Path, files: dict[str, Path],
                                          flags: list[str], env: dict[str, str], message: str
                                          ) -> None:
    runs = tmp_path / "runs"
    result = cli(home, "train", str(files["good"]), "--limit", "64", "--runs-dir", str(runs),
                 "--progress", "none", *flags, **env)
    refused(result, 2, message)
    assert empty(runs), "the run folder claimed for a refused run is given back"


def test_resume_under_a_strategy_that_cannot_be_set_up(home: Path, tiny_run: Path,
                                                      tmp_path: Path) -> None:
    run = copy_run(tiny_run, tmp_path, "interrupted")
    before = snapshot(run, lock=False)
    refused(cli(home, "train", "--resume", str(run), "--strategy", "mirrored",
                CNNSPEC_CPU_DEVICES="0"), 2,
            "cnnspec: error: $CNNSPEC_CPU_DEVICES must be a positive integer, not '0'")
    assert snapshot(run, lock=False) == before


# -- checkpoints that do not load or do not fit: refused before anything is written


def test_resume_with_a_checkpoint_that_does_not_fit(home: Path, tiny_run: Path, tmp_path: Path
                                                    ) -> None:
    run = copy_run(tiny_run, tmp_path, "interrupted")
    path = records.checkpoint_dir(run) / records.CHECKPOINT_STATE
    path.write_text(json.dumps({**json.loads(path.read_text()), "seed_states": [[1, 2]]}))
    before = snapshot(run, lock=False)
    refused(cli(home, "train", "--resume", str(run), "--progress", "none"), 1,
            "cnnspec: error: cannot resume", str(path.parent))
    assert snapshot(run, lock=False) == before


def test_resume_with_a_damaged_checkpoint_model(home: Path, tiny_run: Path, tmp_path: Path
                                                ) -> None:
    run = copy_run(tiny_run, tmp_path, "interrupted")
    state = json.loads((records.checkpoint_dir(run) / records.CHECKPOINT_STATE).read_text())
    (records.checkpoint_dir(run) / state["model"]).write_bytes(b"PK\x03\x04 not a keras file")
    before = snapshot(run, lock=False)
    refused(cli(home, "train", "--resume", str(run), "--progress", "none"), 1,
            "cnnspec: error: cannot resume", state["model"])
    assert snapshot(run, lock=False) == before


def test_resume_with_a_cut_off_checkpoint_says_it_is_cut_off(home: Path, tiny_run: Path,
                                                              tmp_path: Path) -> None:
    """Keras said "File not found" of the checkpoint, which is there, only cut short."""
    run = copy_run(tiny_run, tmp_path, "interrupted")
    state = json.loads((records.checkpoint_dir(run) / records.CHECKPOINT_STATE).read_text())
    model = records.checkpoint_dir(run) / state["model"]
    model.write_bytes(model.read_bytes()[:1000])
    before = snapshot(run, lock=False)
    result = cli(home, "train", "--resume", str(run), "--progress", "none")
    refused(result, 1, "cnnspec: error: cannot resume", f"{model}: not a .keras zip archive "
            "(cut off or overwritten)")
    assert "not found" not in result.stderr
    assert snapshot(run, lock=False) == before


def test_evaluate_of_a_model_that_is_a_folder_says_so(home: Path, tiny_run: Path,
                                                       tmp_path: Path) -> None:
    """It said the run had no model.keras because "the run completed, so the file was
    removed after it"."""
    run = copy_run(tiny_run, tmp_path, "completed")
    model = run / records.MODEL_FILE
    model.unlink()
    model.mkdir()
    refused(cli(home, "evaluate", str(run)), 1, "cnnspec: error: cannot evaluate",
            f"{model}: a folder, not a .keras file")


# -- fmt's rewrite, and output that cannot be written --------------------------------------------

UNFORMATTED = "conv8   gap\n"


def test_fmt_through_a_link_rewrites_the_file_it_names(home: Path, tmp_path: Path) -> None:
    real, link = tmp_path / "real.cnn", tmp_path / "link.cnn"
    real.write_text(UNFORMATTED)
    link.symlink_to(real.name)
    result = cli(home, "fmt", str(link))
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and real.read_text() == "conv8 gap\n"


def test_fmt_of_a_pipe_is_refused(home: Path) -> None:
    read, write = os.pipe()
    os.write(write, UNFORMATTED.encode())
    os.close(write)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "cnnspec", "fmt", f"/dev/fd/{read}"], pass_fds=(read,),
            cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT,
            env={**os.environ, "HOME": str(home), "COLUMNS": "1000"})
    finally:
        os.close(read)
    refused(result, 1, f"cnnspec: error: /dev/fd/{read}: fmt rewrites files only",
            "`fmt --show` prints the canonical text")


def test_fmt_where_no_file_can_be_written(home: Path, tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    spec = folder / "a.cnn"
    spec.write_text(UNFORMATTED)
    # root writes through chmod, so the folder is made immutable (where the file system can)
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        result = cli(home, "fmt", str(spec))
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    refused(result, 1, f"cnnspec: error: cannot rewrite {spec}: ", "it is unchanged")
    assert spec.read_text() == UNFORMATTED
    assert sorted(p.name for p in folder.iterdir()) == ["a.cnn"]


def test_fmt_keeps_a_byte_order_mark(home: Path, tmp_path: Path) -> None:
    """A Windows editor's BOM was dropped when fmt rewrote the file (and kept when it had
    nothing to change): it is kept, as CRLF line endings are."""
    spec = tmp_path / "bom.cnn"
    spec.write_bytes(b"\xef\xbb\xbf" + UNFORMATTED.encode())
    assert cli(home, "fmt", str(spec)).returncode == 0
    canonical = cnnspec.format_spec(cnnspec.parse(UNFORMATTED))
    assert spec.read_bytes() == b"\xef\xbb\xbf" + canonical.encode()
    assert cli(home, "fmt", "--check", str(spec)).returncode == 0  # formatted, BOM and all


def test_fmt_keeps_a_file_with_other_names_whole(home: Path, tmp_path: Path) -> None:
    """fmt replaces the file by a new one (all or nothing), which split a hard link: the other
    name kept the old text without a word. It is refused, and both names keep the text."""
    spec, other = tmp_path / "a.cnn", tmp_path / "b.cnn"
    spec.write_text(UNFORMATTED)
    os.link(spec, other)
    refused(cli(home, "fmt", str(spec)), 1, f"cnnspec: error: cannot rewrite {spec}: it has 2 "
            "names (hard links)", "it is unchanged")
    assert spec.read_text() == other.read_text() == UNFORMATTED
    assert os.path.samefile(spec, other)
    assert cli(home, "fmt", "--show", str(spec)).stdout == cnnspec.format_spec(
        cnnspec.parse(UNFORMATTED))  # the way on, as the message says


def _as_nobody(command: list[str]) -> list[str]:
    """The command as a user who is not root (root writes through any mode), or skip."""
    if os.geteuid() != 0:
        return command
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    probe = subprocess.run([*nobody, sys.executable, "-c", "import cnnspec"],
                           capture_output=True, cwd="/")
    if probe.returncode != 0:
        pytest.skip("cannot run the CLI as another user here (setpriv, or the venv unreadable)")
    return [*nobody, *command]


def test_fmt_does_not_write_through_a_read_only_file(home: Path) -> None:
    """A mode-444 spec (or another user's, in a folder open to all) was replaced: fmt renames
    a new file over it, which the folder allows. It is refused as a write in place would be."""
    folder = Path(tempfile.mkdtemp(prefix="cnnspec-ro-"))
    try:
        folder.chmod(0o777)
        spec = folder / "a.cnn"
        spec.write_text(UNFORMATTED)
        spec.chmod(0o444)
        command = _as_nobody([sys.executable, "-m", "cnnspec", "fmt", str(spec)])
        if os.geteuid() == 0:
            os.chown(spec, 65534, 65534)  # nobody's own file, read-only to it
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                                timeout=TIMEOUT, env={**os.environ, "HOME": str(home),
                                                      "COLUMNS": "1000"})
        refused(result, 1, f"cnnspec: error: cannot rewrite {spec}: you may not write it",
                "it is unchanged")
        assert spec.read_text() == UNFORMATTED and sorted(folder.iterdir()) == [spec]
    finally:
        shutil.rmtree(folder)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full")
@pytest.mark.parametrize("command", ["parse", "check", "summary", "--version", "--help",
                                     "check --help", "train --help"])
def test_output_to_a_full_disk(home: Path, files: dict[str, Path], command: str) -> None:
    """--help and --version too: argparse drops a failed write, and they exited 0, silent."""
    args = command.split() if "-" in command else [command, str(files["good"])]
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "cnnspec", *args], stdout=full,
            stderr=subprocess.PIPE, cwd=ROOT, text=True, timeout=TIMEOUT,
            env={**os.environ, "HOME": str(home), "COLUMNS": "1000"})
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, \
        result.stderr
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "cnnspec: error: cannot write the output: No space left on device"]


@pytest.mark.parametrize("command", ["check", "summary", "--help"])
def test_a_closed_standard_output_is_an_error_not_silence(home: Path, files: dict[str, Path],
                                                          command: str) -> None:
    """`cnnspec summary x.cnn >&-`: Python drops every print to a closed fd 1 without a word,
    so the command printed nothing and exited 0."""
    args = [command] if command.startswith("-") else [command, str(files["good"])]
    result = subprocess.run(
        [sys.executable, "-m", "cnnspec", *args], capture_output=True,
        cwd=ROOT, text=True, timeout=TIMEOUT, preexec_fn=lambda: os.close(1),
        env={**os.environ, "HOME": str(home), "COLUMNS": "1000"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "cnnspec: error: cannot write the output: standard output is closed"]


# -- expand --write: never over a file it did not write -----------------------------------------


def test_expand_write_keeps_a_file_with_other_content(home: Path, tmp_path: Path,
                                                      files: dict[str, Path]) -> None:
    out = tmp_path / "variants"
    first = cli(home, "expand", str(files["sweep"]), "--write", str(out))
    assert first.returncode == 0, first.stderr
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 2 and first.stdout.split()[:2] == ["wrote", "2"]
    # the same command again: the files are the same, so it succeeds and changes nothing
    again = cli(home, "expand", str(files["sweep"]), "--write", str(out))
    assert again.returncode == 0 and "(2 already there, unchanged)" in again.stdout
    mine = out / names[0]
    mine.write_text("# my edits\nconv8 relu drop.1 | dense32\n")
    gone = out / names[1]
    gone.unlink()
    before = snapshot(out)
    refused(cli(home, "expand", str(files["sweep"]), "--write", str(out)), 1,
            f"--write {out}: {names[0]} is already there with other content; nothing written")
    assert snapshot(out) == before  # the edited file kept, the missing one not written either


@pytest.mark.parametrize(("args", "message"), [
    (["--write", ""], "cnnspec: error: --write needs a folder"),
    (["--write", "out", "--json"],
     "cnnspec: error: --json prints the variants and --write writes them: give one"),
])
def test_expand_write_flags_that_cannot_both_hold(home: Path, tmp_path: Path,
                                                  files: dict[str, Path], args: list[str],
                                                  message: str) -> None:
    refused(cli(home, "expand", str(files["sweep"]), *args, cwd=tmp_path), 2, message)
    assert not (tmp_path / "out").exists()


def test_expand_write_failing_midway_leaves_nothing_of_its_own(
        tmp_path: Path, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The second variant cannot be written (a full disk, say): the first, written by this run,
    is removed again, and a file that was there before is kept."""
    import cnnspec.cli.main as cli_main

    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    real, calls = cli_main.write_atomic, []

    def write_then_fail(path: Path, text: str) -> None:
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(path, text)

    monkeypatch.setattr(cli_main, "write_atomic", write_then_fail)
    code = cli_main.main(["expand", str(files["sweep"]), "--write", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert f"cannot write {calls[1].name} (No space left on device); nothing written" in err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_expand_write_failing_removes_the_folder_it_made(
        tmp_path: Path, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """"nothing written" holds for the folder too: one it created is gone again."""
    import cnnspec.cli.main as cli_main

    def full(path: Path, text: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cli_main, "write_atomic", full)
    out = tmp_path / "new" / "out"
    assert cli_main.main(["expand", str(files["sweep"]), "--write", str(out)]) == 1
    assert "nothing written" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(("error", "line"), [
    (OSError(28, "No space left on device"),
     "cnnspec: error: cannot write the output: No space left on device"),
    (PermissionError(13, "Permission denied", "/some/file.cnn"),
     "cnnspec: error: /some/file.cnn: Permission denied"),
])
def test_an_os_error_no_command_caught_is_one_line(
        error: OSError, line: str, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Only a write with no room is called the output's failure; an error naming a file is
    told as that file's, not as 'cannot write the output'."""
    import cnnspec.cli.main as cli_main

    def fail(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(cli_main, "load", fail)  # what `parse` calls first
    assert cli_main.main(["parse", str(files["good"])]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [line]


def test_control_characters_in_names_are_shown_not_sent(home: Path, tmp_path: Path) -> None:
    """A folder name holding ESC (a file someone made, or pasted): the error line shows it as
    ␛ rather than letting it recolour the terminal; line breaks of the message stay."""
    odd = tmp_path / "x\x1b[31mred\rhidden"
    stderr = refused(cli(home, "train", "--resume", str(odd)), 1,
                     "cannot resume: ", "x␛[31mred␍hidden: no such run folder")
    assert "\x1b" not in stderr and "\r" not in stderr


def _train_with_a_file_size_limit(home: Path, run: Path, limit: int
                                  ) -> subprocess.CompletedProcess[str]:
    """`train` where no file may grow past `limit` bytes (RLIMIT_FSIZE): a disk that fills
    up, at a point the limit picks, without filling one."""
    import resource
    import signal

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {k: v for k, v in os.environ.items() if k not in ("CNNSPEC_DATA", "KERAS_HOME")}
    return subprocess.run(
        [sys.executable, "-m", "cnnspec", "train", str(ROOT / "specs" / "exp1.cnn"), "--out",
         str(run), "--epochs", "2", "--limit", "64", "--progress", "none", "--precision",
         "float32"], capture_output=True, text=True, timeout=TIMEOUT, preexec_fn=limited,
        env={**env, "HOME": str(home), "COLUMNS": "1000", "TF_CPP_MIN_LOG_LEVEL": "3"})


def test_records_that_cannot_be_written_stop_the_run_with_the_way_to_continue(
        home: Path, tmp_path: Path) -> None:
    """The model's checkpoint cannot be written (100 kB limit): one line naming the run
    folder and the command that continues it, no traceback; the folder's status says why;
    the resume then finishes it."""
    run = tmp_path / "run"
    stopped = _train_with_a_file_size_limit(home, run, 100_000)
    refused(stopped, 1, f"cnnspec: error: cannot write the run's records in {run}",
            f"the run stopped. Make room, then continue it from its last checkpoint: cnnspec "
            f"train --resume {run}")
    assert "cannot write the output" not in stopped.stderr  # it is not stdout that failed
    status = records.read_status(run)
    assert status["status"] == "failed" and "cannot write its records" in status["reason"]
    resumed = cli(home, "train", "--resume", str(run), "--progress", "none")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert records.read_status(run)["status"] == "completed"


def test_a_lock_file_that_cannot_be_opened_is_named(home: Path, tiny_run: Path,
                                                    tmp_path: Path) -> None:
    """`.lock` made a folder (a stray `mkdir`, a copy tool): the message names the lock file,
    not the run folder as if it were the folder that is wrong."""
    run = copy_run(tiny_run, tmp_path, "interrupted")
    (run / records.LOCK_FILE).mkdir()
    refused(cli(home, "train", "--resume", str(run)), 1,
            f"cannot use it as a run folder: its lock file {run / records.LOCK_FILE} cannot be "
            "opened (Is a directory)")


def test_control_characters_in_a_spec_file_name_are_shown_as_signs(home: Path,
                                                                   tmp_path: Path) -> None:
    """The file name heads every spec error and the `ok` line: ESC in it is shown as ␛."""
    odd = tmp_path / "n\x1b[2Jx.cnn"
    odd.write_text(GOOD)
    ok = cli(home, "check", str(odd))
    assert ok.returncode == 0 and "\x1b" not in ok.stdout and "n\u241b[2Jx.cnn" in ok.stdout
    broken = tmp_path / "two\nlines.cnn"  # the `ok` line stays one line, as fmt's does
    broken.write_text(GOOD)
    ok = cli(home, "check", str(broken))
    assert ok.stdout.splitlines() == [ok.stdout.strip()] and "two\u240alines.cnn" in ok.stdout
    missing = tmp_path / "nope\x1b[31m.cnn"
    stderr = refused(cli(home, "check", str(missing)), 1, "nope\u241b[31m.cnn: error: cannot read")
    assert "\x1b" not in stderr


def test_a_dash_is_a_file_name_and_the_error_says_how_to_read_standard_input(
        home: Path, tmp_path: Path) -> None:
    refused(cli(home, "check", "-", cwd=tmp_path), 1, "-: error: cannot read spec: No such file",
            "give /dev/stdin")
    (tmp_path / "-").write_text(GOOD)  # a file that is really called `-` is read as one
    assert cli(home, "check", "-", cwd=tmp_path).returncode == 0


def test_control_characters_in_a_file_name_are_signs_in_every_command(home: Path,
                                                                      tmp_path: Path) -> None:
    """fmt, summary and expand print the file name too: ESC as ␛, and a line break in a name
    cannot end the `# FILE` comment `fmt --show` heads each file with (its output stays a
    spec: the second line of the name was read as a network)."""
    odd = tmp_path / "e\x1b[2Jx.cnn"
    odd.write_text("conv8  relu gap\n")
    shown = str(odd).replace("\x1b", "\u241b")
    for args, says in [(("fmt", "--check"), f"would reformat {shown}"),
                       (("summary",), shown), (("fmt",), f"reformatted {shown}")]:
        result = cli(home, *args, str(odd))
        assert "\x1b" not in result.stdout + result.stderr and says in result.stdout, args
    sweep = tmp_path / "s\x1bw.cnn"
    sweep.write_text("conv8 drop{.1,.2} gap\n")
    listed = cli(home, "expand", str(sweep)).stdout.splitlines()[0]
    assert listed == str(sweep).replace("\x1b", "\u241b") + ": 2 variants"
    two_lines = tmp_path / "n\nconv8 cnov.cnn"
    two_lines.write_text("relu gap\n")
    plain = tmp_path / "p.cnn"
    plain.write_text("conv8 gap\n")
    shown_text = cli(home, "fmt", "--show", str(two_lines), str(plain)).stdout
    assert shown_text.splitlines()[0] == f"# {tmp_path}/n\u240aconv8 cnov.cnn"
    out = tmp_path / "out.cnn"
    out.write_text(shown_text)
    from cnnspec.language.parse import load  # the comments hide nothing: two layer lines

    assert [type(layer).__name__ for layer in load(out).layers()] == [
        "Activation", "GlobalAvgPool", "Conv", "GlobalAvgPool"]


def test_a_run_stopped_before_its_settings_can_be_started_again(home: Path,
                                                                tmp_path: Path) -> None:
    """A run killed (or out of disk) between writing spec.cnn and settings.json leaves only
    its own files: the same command trains there; a hidden file (.gitkeep) is no obstacle."""
    (tmp_path / "tiny.cnn").write_text(GOOD)
    run = tmp_path / "run"
    run.mkdir()
    (run / records.SPEC_FILE).write_text(GOOD)
    (run / records.LOCK_FILE).touch()
    (run / ".settings.x1y2.tmp.json").write_text("{")  # a killed writer's temporary
    (run / ".gitkeep").touch()
    again = cli(home, "train", str(tmp_path / "tiny.cnn"), "--limit", "64", "--out", str(run),
                "--progress", "none", "--precision", "float32")
    assert again.returncode == 0, again.stderr[-3000:]
    assert records.read_status(run)["status"] == "completed"


def test_records_that_cannot_be_written_before_the_run_starts_say_to_start_again(
        home: Path, tmp_path: Path) -> None:
    """Not even spec.cnn fits (a 10-byte limit): there is nothing to resume, and the message
    does not offer a --resume that would fail; the same command then trains there."""
    run = tmp_path / "run"
    stopped = _train_with_a_file_size_limit(home, run, 10)
    stderr = refused(stopped, 1, "cnnspec: error: cannot write the run's records in",
                     "the run had not started. Make room, then run the command again")
    assert "--resume" not in stderr
    again = _train_with_a_file_size_limit(home, run, 1 << 30)
    assert again.returncode == 0, again.stderr[-3000:]


@pytest.mark.parametrize("command", ["train", "run"])
def test_an_out_that_links_to_nothing_is_named_before_the_data(home: Path, tmp_path: Path,
                                                               files: dict[str, Path],
                                                               command: str) -> None:
    link = tmp_path / "out"
    link.symlink_to(tmp_path / "gone" / "x")
    stderr = refused(cli(home, command, str(files["good"]), "--out", str(link)), 1,
                     f"cnnspec: error: --out {link}: a symbolic link to {tmp_path / 'gone' / 'x'}"
                     ", which does not exist; create that folder, or pick another --out")
    assert "data:" not in stderr


@pytest.mark.parametrize("command", ["train", "run", "sweep"])
def test_an_out_below_a_file_names_the_file(home: Path, tmp_path: Path,
                                            files: dict[str, Path], command: str) -> None:
    (tmp_path / "notes.txt").write_text("mine\n")
    out = tmp_path / "notes.txt" / "run"
    spec = files["sweep"] if command == "sweep" else files["good"]
    stderr = refused(cli(home, command, str(spec), "--out", str(out)), 1,
                     f"cnnspec: error: --out {out}: {tmp_path / 'notes.txt'} is a file, not a "
                     "folder")
    assert "data:" not in stderr
    assert (tmp_path / "notes.txt").read_text() == "mine\n"


def test_keras_file_problem_names_each_way_a_file_cannot_be_loaded(tmp_path: Path) -> None:
    import zipfile

    good = tmp_path / "good.keras"
    with zipfile.ZipFile(good, "w") as z:
        z.writestr("config.json", "{}")
    assert records.keras_file_problem(good) is None
    cut = tmp_path / "cut.keras"
    cut.write_bytes(good.read_bytes()[:10])
    assert records.keras_file_problem(cut).startswith("not a .keras zip archive (cut off")
    folder = tmp_path / "folder.keras"
    folder.mkdir()
    assert records.keras_file_problem(folder) == "a folder, not a .keras file"
    assert records.keras_file_problem(tmp_path / "gone.keras") == (
        "cannot be read: No such file or directory")
    fifo = tmp_path / "fifo.keras"
    os.mkfifo(fifo)  # opening it would wait for a writer: evaluate hung
    assert records.keras_file_problem(fifo) == "not a regular file"
    if os.geteuid() != 0:  # root reads any file: the permission case needs a user
        locked = tmp_path / "locked.keras"
        shutil.copy(good, locked)
        locked.chmod(0)
        assert records.keras_file_problem(locked) == "cannot be read: Permission denied"


# -- what `run`, `sweep` and studies are given, refused before anything trains -----------------


def test_run_refuses_two_specs_that_make_one_folder_name(home: Path, tmp_path: Path) -> None:
    """`a b.cnn` and `a_b.cnn` both train into --out/a_b: refused up front (the second used to
    fail on the first's run, and the comparison listed that run twice)."""
    for name in ("a b", "a_b"):
        (tmp_path / f"{name}.cnn").write_text(GOOD)
    out = tmp_path / "out"
    refused(cli(home, "run", str(tmp_path / "a b.cnn"), str(tmp_path / "a_b.cnn"), "--out",
                str(out), "--limit", "64"), 2, "share the run folder name a_b")
    assert not out.exists()


def test_run_refuses_an_untrainable_flag_before_the_data(home: Path, files: dict[str, Path],
                                                          tmp_path: Path) -> None:
    result = cli(home, "run", str(files["good"]), "--seed", "-1", "--limit", "64", "--out",
                 str(tmp_path / "out"))
    refused(result, 2, "good.cnn: seed must be in [0, 4294967295], got -1")
    assert "data:" not in result.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["train", "sweep", "expand"])
def test_a_name_too_long_for_a_folder_is_refused_before_anything(home: Path, tmp_path: Path,
                                                                 command: str) -> None:
    """A run folder or variant file is named after the spec: past 255 bytes the file system
    said `File name too long` mid-command (and `expand --write` left an empty folder)."""
    stem = "s" * (248 if command != "train" else 240)
    spec = tmp_path / f"{stem}.cnn"
    spec.write_text(SWEEP if command != "train" else GOOD)
    target = tmp_path / "target"
    args = {"train": ["--limit", "64", "--runs-dir", str(target)],
            "sweep": ["--limit", "64", "--out", str(target)],
            "expand": ["--write", str(target)]}[command]
    stderr = refused(cli(home, command, str(spec), *args), 2,
                     "over the 255 a file name may have; give the spec a shorter file name")
    assert "data:" not in stderr and not target.exists()


def test_run_and_sweep_put_their_plots_where_plots_says(home: Path, tmp_path: Path,
                                                        files: dict[str, Path]) -> None:
    out, plots = tmp_path / "out", tmp_path / "plots"
    result = cli(home, "run", str(files["good"]), "--limit", "64", "--out", str(out),
                 "--plots", str(plots), "--progress", "none")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in plots.iterdir()) == [
        "compare_accuracy_vs_params.png", "compare_curves.png"]
    assert not list(out.glob("*.png"))
    blocked = tmp_path / "a-file"
    blocked.write_text("mine\n")
    refused(cli(home, "sweep", str(files["sweep"]), "--limit", "64", "--out",
                str(tmp_path / "sweep"), "--plots", str(blocked)), 1,
            f"--plots {blocked}: cannot create the folder")
    assert not (tmp_path / "sweep").exists()  # refused before anything trained


def test_sweeps_started_in_one_second_get_a_folder_each(home: Path, tmp_path: Path,
                                                        files: dict[str, Path]) -> None:
    """Without --out a sweep's folder is claimed as a run's is: the second sweep of the same
    second (here: of a clock that stands still) trains in `-2`, where it used to be told that
    another sweep was writing its folder, or to continue it."""
    runs = tmp_path / "runs"
    for lr in (".01", ".05"):
        result = cli(home, "sweep", str(files["sweep"]), "--sample", "1", "--limit", "64",
                     "--lr", lr, "--runs-dir", str(runs), "--progress", "none", "--no-plots",
                     code=FIXED_STAMP)
        assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in runs.iterdir()) == [
        "sweep-sweep-20260101-000000", "sweep-sweep-20260101-000000-2"]


def test_two_studies_that_make_one_folder_name_do_not_share_runs(home: Path, tmp_path: Path,
                                                                files: dict[str, Path]) -> None:
    """Studies `s 1` and `s_1` would both train in RUNS/s_1, in trial folders numbered from 0
    in each: the second is refused before it stores or trains anything; the first joins its
    own folder again."""
    runs = tmp_path / "runs"
    first = cli(home, "sweep", str(files["sweep"]), "--study", "s 1", "--sample", "1",
                "--runs-dir", str(runs), "--limit", "64", "--progress", "none", "--no-plots")
    assert first.returncode == 0, first.stderr[-3000:]
    trials = sorted(p.name for p in (runs / "s_1").iterdir())
    second = cli(home, "sweep", str(files["sweep"]), "--study", "s_1", "--sample", "1",
                 "--runs-dir", str(runs), "--limit", "64", "--progress", "none", "--no-plots")
    refused(second, 2, f"{runs / 's_1'} holds the runs of study 's 1'; study 's_1' would train "
                       "in the same run folders")
    assert sorted(p.name for p in (runs / "s_1").iterdir()) == trials
    again = cli(home, "sweep", str(files["sweep"]), "--study", "s 1", "--sample", "1",
                "--runs-dir", str(runs), "--limit", "64", "--progress", "none", "--no-plots")
    assert again.returncode == 0, again.stderr[-3000:]


def test_compare_of_values_no_plot_can_draw_is_one_line(home: Path, tiny_run: Path,
                                                        tmp_path: Path) -> None:
    """A history edited to 1e308 (float32 training never makes it): matplotlib cannot draw it;
    the table is printed, then one error line, no traceback nor numpy warnings."""
    run = copy_run(tiny_run, tmp_path)
    (run / "history.json").write_text(json.dumps([{
        "epoch": 1, "loss": -1e308, "accuracy": 0.1, "val_loss": 1e308, "val_accuracy": 0.1}]))
    result = cli(home, "compare", str(run))
    stderr = refused(result, 1, "cannot draw the plots from these records",
                     "--no-plots leaves them out")
    assert "1 runs" in result.stdout and "Warning" not in stderr
    assert cli(home, "compare", str(run), "--no-plots").returncode == 0


@pytest.mark.parametrize(("setting", "message"), [
    ("weight_decay=1e300", "weight_decay is too large: 1e300 is infinite in float32"),
    ("lr=1e39", "lr is too large: 1e39 is infinite in float32"),
    ("lr=cosine(.1,final=1e300)", "cosine's final is too large: 1e300 is infinite in float32"),
    ("label_smoothing=.99999999999", "label_smoothing must be below 1, and .99999999999 is 1"),
])
def test_check_refuses_a_setting_infinite_or_rounded_up_in_float32(
        home: Path, tmp_path: Path, setting: str, message: str) -> None:
    """float32 is what the model computes in: `weight_decay=1e300` trained as inf and its
    diverged run blamed the learning rate."""
    spec = tmp_path / "s.cnn"
    spec.write_text(f"train {setting}\nconv8 relu pool2 |\n")
    refused(cli(home, "check", str(spec)), 1, "s.cnn:1:", message)
    big = tmp_path / "fine.cnn"  # float32's largest is still a number, as numpy writes it
    big.write_text("train weight_decay=3.4028235e38\nconv8 relu pool2 |\n")
    assert cli(home, "check", str(big)).returncode == 0


def test_a_sweep_refused_at_its_data_leaves_no_folder(home: Path, tmp_path: Path,
                                                      files: dict[str, Path]) -> None:
    """The default sweep folder is claimed before the data is read; a sweep that stops there
    gives it back (it was left with only its lock, which `compare` called no run folder)."""
    runs = tmp_path / "runs"
    refused(cli(home, "sweep", str(files["sweep"]), "--data", str(tmp_path / "nowhere"),
                "--runs-dir", str(runs)), 1, "--data")
    assert list(runs.iterdir()) == []


@pytest.mark.parametrize("args", [["compare", "{run}", "--no-plots"],
                                  ["expand", "{sweep}"], ["check", "{good}"]])
def test_a_reader_that_goes_away_ends_the_command_quietly(home: Path, tiny_run: Path,
                                                           files: dict[str, Path],
                                                           args: list[str]) -> None:
    """`cnnspec compare RUN | head -0`: the pipe closes before the table is written. rich's
    own handler exited 1 there (while `summary … | head` exited 0); now every command ends as
    a closed pipe should, 0 and silent."""
    command = [a.format(run=tiny_run, **files) for a in args]
    code, stderr = _with_closed(home, "stdout", *command)  # gone before anything is written
    assert code == 0, stderr
    assert stderr == ""


def _with_closed(home: Path, stream: str, *args: str) -> tuple[int, str]:
    """Run the CLI with its stdout or stderr closed before anything is written: (exit code,
    what the other stream got)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnnspec", *args], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        env={**os.environ, "HOME": str(home), "COLUMNS": "1000", "TF_CPP_MIN_LOG_LEVEL": "3"})
    closed, other = (proc.stdout, proc.stderr) if stream == "stdout" else (proc.stderr,
                                                                         proc.stdout)
    closed.close()
    said = other.read()
    return proc.wait(timeout=TIMEOUT), said


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_a_closed_report_does_not_hide_a_bad_spec(home: Path, tmp_path: Path,
                                                  stream: str) -> None:
    """`cnnspec check a b bad | head -1` stopped after a, never looked at bad and exited 0: a
    pipeline with pipefail passed a broken spec. The files are checked whatever happens to
    the report, and the exit code says what they hold."""
    bad = tmp_path / "bad.cnn"
    bad.write_text("conv8 cnov |\n")
    code, said = _with_closed(home, stream, "check", str(SPECS / "exp1.cnn"),
                              str(SPECS / "exp2.cnn"), str(bad))
    assert code == 1
    if stream == "stdout":  # the error is still told where it goes
        assert "bad.cnn:1:7: error: unknown layer word `cnov`" in said, said
        assert "1 of 3 specs have errors" in said and "Traceback" not in said
    else:
        assert "ok  " in said and "Traceback" not in said


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["check", "--help"]])
def test_help_to_a_reader_that_went_away_ends_quietly(home: Path, args: list[str]) -> None:
    """`cnnspec --help | head -1` is a closed pipe, as for every command: 0 and silent (the
    full-disk check made it `cannot write the output: Broken pipe`, exit 1)."""
    assert _with_closed(home, "stdout", *args) == (0, "")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full")
def test_a_usage_error_that_cannot_be_told_still_exits_2(home: Path) -> None:
    """Exit 2 is a wrong command line, whether or not its message could be written."""
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "cnnspec", "--bogus"], stderr=full,
                              stdout=subprocess.PIPE, cwd=ROOT, timeout=TIMEOUT,
                              env={**os.environ, "HOME": str(home)})
    assert done.returncode == 2


def test_a_closed_report_does_not_stop_fmt_half_way(home: Path, tmp_path: Path) -> None:
    """`cnnspec fmt *.cnn | head -1`: only the first file was reformatted, exit 0."""
    specs = [tmp_path / f"s{i}.cnn" for i in range(4)]
    for spec in specs:
        spec.write_text("conv8   relu |\n")
    code, said = _with_closed(home, "stdout", "fmt", *map(str, specs))
    assert code == 0 and said == ""
    assert [spec.read_text() for spec in specs] == ["conv8 relu |\n"] * 4
    for spec in specs[2:]:
        spec.write_text("conv8   relu |\n")
    code, said = _with_closed(home, "stdout", "fmt", "--check", *map(str, specs))
    assert code == 1 and said == ""  # the last two would be reformatted: the exit code says so
    code, said = _with_closed(home, "stdout", "fmt", "--show", *map(str, specs))
    assert code == 0 and said == ""


def test_a_study_name_too_long_for_a_folder_is_refused_before_it_is_stored(
        home: Path, tmp_path: Path, files: dict[str, Path]) -> None:
    runs = tmp_path / "runs"
    refused(cli(home, "sweep", str(files["sweep"]), "--study", "s" * 300, "--runs-dir",
                str(runs), "--limit", "64"), 2, "a study's folder named after sss")
    assert not runs.exists()  # no storage made, no study stored


def test_plots_folder_is_not_made_by_a_refused_command(home: Path, tmp_path: Path,
                                                       files: dict[str, Path]) -> None:
    for command, spec in (("run", "good"), ("sweep", "sweep")):
        plots = tmp_path / f"plots-{command}"
        refused(cli(home, command, str(files[spec]), "--data", str(tmp_path / "nowhere"),
                    "--plots", str(plots), "--runs-dir", str(tmp_path / "runs")), 1, "--data")
        assert not plots.exists(), command


def test_workers_starting_one_study_together_agree_on_its_folder(tmp_path: Path) -> None:
    """The folder's mark is published whole (written, then linked into place): a worker
    racing another read it empty and refused its own study's folder."""
    code = (
        "import sys, multiprocessing as mp\n"
        "from pathlib import Path\n"
        "from cnnspec.cli.experiments import claim_study_folder\n"
        "def work(base):\n"
        "    try:\n"
        "        claim_study_folder(Path(base), 's1', True)\n"
        "        return 'ok'\n"
        "    except Exception as e:\n"
        "        return f'{type(e).__name__}: {e}'\n"
        "if __name__ == '__main__':\n"
        "    bases = [f'{sys.argv[1]}/t{i}/s1' for i in range(40)]\n"
        "    with mp.Pool(6) as pool:\n"
        "        for base in bases:\n"
        "            print(*sorted(set(pool.map(work, [base] * 6))), sep='\\n')\n")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                            text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert set(result.stdout.split()) == {"ok"}
    assert [p.name for p in (tmp_path / "t0" / "s1").iterdir()] == [".cnnspec-study"]


# -- a run folder's model, checkpoint and spec: what resume and evaluate trust ------------------


@pytest.fixture(scope="module")
def other_runs(home: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two completed runs to take files from: another spec's (float32) and tiny_run's own spec
    in bf16."""
    tmp = tmp_path_factory.mktemp("others")
    out = {}
    for name, text, precision in (("other", "conv4 relu pool4 | dense8\n", "float32"),
                                  ("bf16", GOOD, "bf16")):
        spec = tmp / f"{name}.cnn"
        spec.write_text(text)
        out[name] = tmp / name
        result = cli(home, "train", str(spec), "--limit", "64", "--epochs", "1", "--out",
                     str(out[name]), "--progress", "none", "--precision", precision)
        assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.parametrize(("donor", "message"), [
    ("other", "is not this run's model (it has conv4_l1c1"),
    ("bf16", "is not this run's model (it computes in mixed_bfloat16, the run in float32)"),
])
def test_resume_and_evaluate_refuse_another_runs_model(home: Path, tiny_run: Path,
                                                        tmp_path: Path, other_runs: dict,
                                                        donor: str, message: str) -> None:
    """A checkpoint (or model.keras) copied in from another run loaded and trained (or was
    scored) without a word: exp7's network went on training in exp1's folder."""
    run = copy_run(tiny_run, tmp_path, "interrupted")
    state = json.loads((records.checkpoint_dir(run) / records.CHECKPOINT_STATE).read_text())
    theirs = sorted((records.checkpoint_dir(other_runs[donor])).glob("*.keras"))
    theirs = theirs or [other_runs[donor] / records.MODEL_FILE]
    shutil.copy(theirs[-1], records.checkpoint_dir(run) / state["model"])
    shutil.copy(other_runs[donor] / records.MODEL_FILE, run / records.MODEL_FILE)
    before = snapshot(run, lock=False)
    refused(cli(home, "train", "--resume", str(run)), 1, f"cnnspec: error: cannot resume {run}",
            message, "the run folder is left as it was")
    assert snapshot(run, lock=False) == before
    refused(cli(home, "evaluate", str(run)), 1, "cannot evaluate", message)


def test_a_damaged_best_weights_file_is_refused_before_training(home: Path, tiny_run: Path,
                                                                tmp_path: Path) -> None:
    """checkpoint/best.npz is read when the run ends: damaged, it was a traceback after the
    whole resumed run had trained, and the run was marked failed."""
    run = copy_run(tiny_run, tmp_path, "interrupted")
    best = records.checkpoint_dir(run) / records.BEST_WEIGHTS
    best.write_text("hello\n")
    before = snapshot(run, lock=False)
    refused(cli(home, "train", "--resume", str(run)), 1,
            f"cnnspec: error: cannot resume: {best}: corrupted record: the best epoch's "
            "weights do not load")
    assert snapshot(run, lock=False) == before


def test_a_run_spec_that_no_longer_parses_is_a_damaged_folder(home: Path, tiny_run: Path,
                                                              tmp_path: Path) -> None:
    run = copy_run(tiny_run, tmp_path, "interrupted")
    (run / records.SPEC_FILE).write_text("garbage !!\n")
    stderr = refused(cli(home, "train", "--resume", str(run)), 1,
                     f"cannot resume: {run / records.SPEC_FILE}:1:9: the run's spec no longer "
                     "parses (unexpected character '!'", "the folder is damaged")
    assert len(stderr.strip().splitlines()) == 1  # one line, not a spec error with its caret
    assert cli(home, "evaluate", str(run)).returncode == 0  # the model is scored as it is


def test_evaluate_of_a_diverged_run_does_not_offer_resume(home: Path, tiny_run: Path,
                                                          tmp_path: Path) -> None:
    run = copy_run(tiny_run, tmp_path)
    (run / records.MODEL_FILE).unlink()
    reason = ("tiny: training diverged: the loss became nan (not a number) in epoch 3/3 at "
              "batch 1/2 (sgd, lr=5). The run stopped; 2 epoch(s) completed before it.")
    _edit_json(run / records.STATUS_FILE, lambda r: r.update(status="failed", reason=reason))
    stderr = refused(cli(home, "evaluate", str(run)), 1, "the run failed (tiny: training "
                     "diverged", "start a new run")
    assert "--resume" not in stderr


def test_ctrl_c_as_a_resume_starts_leaves_it_interrupted(home: Path, tiny_run: Path,
                                                         tmp_path: Path) -> None:
    """Ctrl-C right after the "resuming" line, before the loop began, left status.json saying
    "running" with the pid of a process gone (1 run in 3-5 under load)."""
    run = copy_run(tiny_run, tmp_path, "interrupted")
    _edit_json(run / records.SETTINGS_FILE, lambda r: r["settings"].update(epochs=3))
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnnspec", "train", "--resume", str(run), "--progress", "plain"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "3"})
    said = []
    try:
        for line in proc.stdout:
            said.append(line)
            if line.startswith("resuming"):
                proc.send_signal(signal.SIGINT)
                break
        said.append(proc.stdout.read())
        code = proc.wait(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    status = records.read_status(run)
    # interrupted, as asked; or, rarely, finished: a SIGINT that lands in TensorFlow's start-up
    # can be lost (the run then completes, exit 0: noted, not fixed). Never left "running".
    assert (status["status"], code) in {("interrupted", 130), ("interrupted", 1),
                                        ("completed", 0)}, (status, code, said)
