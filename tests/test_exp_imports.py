"""Every module of the package imports on its own, and the front-end commands stay light.

`cnnspec.cli.main` once registered the `train`/`run`/... commands at import time by importing
`cnnspec.cli.train`, which imports `cnnspec.cli.main`: importing `cnnspec.cli.train` first then died
with a partially initialised module. Each module is imported alone in a fresh interpreter.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT, SPECS

MODULES = sorted(".".join(p.relative_to(ROOT / "dsl").with_suffix("").parts)
                 for p in (ROOT / "dsl").rglob("*.py")
                 if p.stem not in ("__init__", "__main__") and "sample_data" not in p.parts)


def test_the_module_list_is_the_package():
    assert {"cli.main", "cli.train", "cli.experiments", "experiments.study",
            "experiments.compare", "language.parse", "training.train"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_alone(module):
    result = subprocess.run([sys.executable, "-c", f"import cnnspec.{module}"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("first", ["cnnspec.cli.train", "cnnspec.cli.experiments",
                                   "cnnspec.experiments.study"])
def test_parser_is_complete_whatever_was_imported_first(first):
    code = textwrap.dedent(f"""
        import {first}
        from cnnspec.cli.main import build_parser
        sub = next(a for a in build_parser()._actions if a.dest == "command")
        print(" ".join(sorted(sub.choices)))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert set(result.stdout.split()) == {
        "check", "summary", "fmt", "parse", "train", "evaluate", "run", "sweep", "compare",
        "diff", "expand", "lsp"}


@pytest.mark.parametrize("argv", [
    ["check", str(SPECS / "exp7.cnn")], ["summary", str(SPECS / "exp7.cnn")],
    ["parse", str(SPECS / "exp1.cnn")], ["fmt", "--check", str(SPECS / "exp1.cnn")],
])
def test_front_end_commands_do_not_import_tensorflow(argv):
    """Nor anything else heavy that only training, studies, plots or the editor need, nor the
    modules of the other commands: these commands answer in a fraction of a second, most of it
    Python's own start-up."""
    code = textwrap.dedent(f"""
        import contextlib, io, sys
        from cnnspec.cli.main import main
        with contextlib.redirect_stdout(io.StringIO()):
            code = main({argv!r})
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r}
                       or m in ("cnnspec.cli.train", "cnnspec.cli.experiments"))
        print(code, ",".join(heavy))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["0"]


HEAVY = ("tensorflow", "keras", "pygls", "lsprotocol", "numpy", "optuna", "matplotlib")


def test_summary_of_a_good_spec_does_not_import_lark(tmp_path):
    """Once the parser's tables are in the cache folder (the first run puts them there), a spec
    that parses is read without importing Lark; Lark is for syntax errors."""
    env = {**os.environ, "CNNSPEC_CACHE_DIR": str(tmp_path)}
    code = textwrap.dedent(f"""
        import contextlib, io, sys
        from cnnspec.cli.main import main
        with contextlib.redirect_stdout(io.StringIO()):
            code = main(["summary", {str(SPECS / "exp7.cnn")!r}])
        print(code, "lark" in sys.modules)
    """)
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           cwd=ROOT, env=env, timeout=300) for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], runs[-1].stderr[-2000:]
    assert runs[0].stdout.split() == ["0", "True"]  # the tables were read from Lark, and kept
    assert runs[1].stdout.split() == ["0", "False"]
    assert list(tmp_path.glob("lalr-*.marshal"))


def test_the_readme_names_every_module_of_the_experiments_layer():
    """README's "What is here" row for `cnnspec.experiments` lists each of its modules, and the
    training row the one plotting module: a module split off or added shows up there."""
    rows = {line.split("|")[1].strip(" `"): line for line in
            (ROOT / "README.md").read_text("utf-8").splitlines() if line.startswith("| `cnnspec.")}
    listed = set(re.findall(r"`(\w+)`", rows["cnnspec.experiments"].split("|")[3]))
    on_disk = {p.stem for p in (ROOT / "dsl" / "experiments").glob("*.py")} - {"__init__"}
    assert on_disk <= listed, f"README lacks {sorted(on_disk - listed)}"
    assert "`plots`" in rows["cnnspec.training"].split("|")[3]
