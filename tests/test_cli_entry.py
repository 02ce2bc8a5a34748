"""A Ctrl-C while the command line is still loading is "interrupted", exit 130, never a
Python traceback from the middle of an import (the window is a second or two on a loaded
machine: long enough to stop a command started by mistake)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Runs the `cnnspec` console script's entry point as the script does (from the installed
# metadata), with a Ctrl-C delivered the moment `module` starts to import.
HARNESS = """
import os, signal, sys
from importlib.metadata import entry_points

class CtrlCAt:
    def find_spec(self, name, path=None, target=None):
        if name == sys.argv[1]:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)  # raised at the next bytecode: in the import
        return None

sys.meta_path.insert(0, CtrlCAt())
(script,) = entry_points(group="console_scripts", name="cnnspec")
sys.exit(script.load()(sys.argv[2:]))
"""


@pytest.mark.parametrize("module, argv", [
    # the command line's own import, before anything of it runs
    ("cnnspec.cli.main", ["check", "specs/exp1.cnn"]),
    # the sweep command's options are built from the pruning module, imported with them
    ("cnnspec.experiments.pruning", ["sweep", "specs/exp1.cnn"]),
])
def test_ctrl_c_while_the_command_line_loads_is_interrupted_not_a_traceback(module, argv):
    done = subprocess.run([sys.executable, "-c", HARNESS, module, *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip() == "interrupted"
    assert done.returncode == 130
    assert done.stdout == ""


def test_python_dash_m_uses_the_same_entry_point():
    main = (ROOT / "dsl" / "__main__.py").read_text()
    assert "from cnnspec.cli.entry import main" in main


def test_importing_the_entry_point_imports_nothing_of_the_command_line():
    code = ("import sys, cnnspec.cli.entry; "
            "print(sorted(m for m in sys.modules if m.startswith(('cnnspec.', 'rich', 'lark'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "['cnnspec.cli', 'cnnspec.cli.entry']"


def test_the_package_still_offers_its_api_on_first_use():
    code = ("import cnnspec; from cnnspec import SpecError, load; "
            "spec = cnnspec.parse('input 8x8x1\\nclasses 2\\nconv4 relu | dense2 softmax\\n'); "
            "print(cnnspec.check(spec).params, issubclass(SpecError, Exception), callable(load),"
            " sorted(set(cnnspec.__all__) - set(dir(cnnspec))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    # conv4 3x3 on 1 channel: 9*4+4 = 40; dense2 on 8*8*4 = 256 inputs: 256*2+2 = 514
    assert out.split() == ["554", "True", "True", "[]"]
