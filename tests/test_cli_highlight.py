"""Spec text in colour: `fmt --show` and `summary`'s layer column, coloured by the Pygments lexer.

Off a terminal the output is plain and byte-identical to what it was (and Pygments is not
imported); on a terminal (FORCE_COLOR=1 makes rich treat the pipe as one) the text is the same
once the colour codes are stripped, and the codes follow the lexer's token kinds.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT, SPECS, run_cli

from cnnspec.editor.pygments_lexer import CnnspecLexer

ANSI = re.compile(r"\x1b\[[0-9;]*m")
PLAIN = {"FORCE_COLOR": "", "NO_COLOR": ""}
COLOUR = {"FORCE_COLOR": "1", "NO_COLOR": ""}


def _segments(coloured: str) -> list[tuple[str, str]]:
    """(SGR codes in force, text) for each run of text between escape sequences."""
    out, codes, pos = [], "", 0
    for m in ANSI.finditer(coloured):
        if m.start() > pos:
            out.append((codes, coloured[pos:m.start()]))
        codes = m.group()[2:-1]
        codes = "" if codes in ("", "0") else codes
        pos = m.end()
    if pos < len(coloured):
        out.append((codes, coloured[pos:]))
    return out


@pytest.mark.parametrize("name", ["exp1.cnn", "exp7.cnn"])
def test_fmt_show_of_a_canonical_spec_prints_the_file_itself_and_changes_nothing(name):
    path = SPECS / name
    before = path.read_bytes()
    done = run_cli("fmt", "--show", str(path), env=PLAIN)
    assert done.returncode == 0, done.stderr
    assert done.stdout == before.decode("utf-8")  # the seed specs are canonical (fmt --check)
    assert "\x1b" not in done.stdout and done.stderr == ""
    assert path.read_bytes() == before


def test_fmt_show_prints_the_canonical_text_and_leaves_the_file_alone(tmp_path):
    messy = tmp_path / "messy.cnn"
    # a tab in a comment stays a tab (Rich expanded it to spaces)
    messy.write_text("train   lr=.05\nconv32  relu   pool2  # a\tb\n|dense10\n")
    before = messy.read_bytes()
    shown = run_cli("fmt", "--show", str(messy), env=PLAIN)
    assert shown.returncode == 0, shown.stderr
    assert messy.read_bytes() == before
    # what `fmt` would write, written by fmt itself into a copy
    copy = tmp_path / "copy.cnn"
    copy.write_bytes(before)
    assert run_cli("fmt", str(copy)).returncode == 0
    assert shown.stdout == copy.read_text() != before.decode()


def test_fmt_show_of_several_files_labels_each_with_a_comment(tmp_path):
    done = run_cli("fmt", "--show", str(SPECS / "exp1.cnn"), str(SPECS / "exp2.cnn"), env=PLAIN)
    assert done.returncode == 0, done.stderr
    expected = "".join(f"# {SPECS / n}\n" + (SPECS / n).read_text()
                       for n in ("exp1.cnn", "exp2.cnn"))
    assert done.stdout == expected


def test_fmt_show_in_colour_is_the_same_text_coloured_by_token_kind():
    path = SPECS / "exp7.cnn"
    done = run_cli("fmt", "--show", str(path), env=COLOUR)
    assert done.returncode == 0, done.stderr
    assert "\x1b[" in done.stdout
    assert ANSI.sub("", done.stdout) == path.read_text()
    styles = {text: codes for codes, text in _segments(done.stdout)}
    # the lexer's kinds (independent of the colours): a layer word, its number, a comment, `|`
    kinds = {value: str(kind) for kind, value in CnnspecLexer().get_tokens(path.read_text())}
    assert kinds["conv"] == "Token.Name.Builtin" and kinds["128"] == "Token.Literal.Number"
    assert styles["conv"] and styles["128"] and styles["conv"] != styles["128"]
    comment = next(t for t in styles if t.startswith("# exp7"))
    assert styles[comment] not in (styles["conv"], styles["128"])


def test_summary_colours_its_layer_column_and_nothing_else_changes():
    path = ROOT / "examples" / "resnet9.cnn"
    plain = run_cli("summary", str(path), env=PLAIN)
    coloured = run_cli("summary", str(path), env=COLOUR)
    assert plain.returncode == coloured.returncode == 0, plain.stderr + coloured.stderr
    assert "\x1b" not in plain.stdout
    stripped = ANSI.sub("", coloured.stdout)
    assert [line.rstrip() for line in stripped.splitlines()] == [
        line.rstrip() for line in plain.stdout.splitlines()]
    segments = _segments(coloured.stdout)
    conv = {codes for codes, text in segments if text == "conv"}
    number = {codes for codes, text in segments if text == "128"}
    assert conv and number and conv.isdisjoint(number)


def test_plain_output_does_not_import_pygments():
    code = textwrap.dedent(f"""
        import contextlib, io, sys
        from cnnspec.cli.main import main
        for argv in (["fmt", "--show", {str(SPECS / "exp7.cnn")!r}],
                     ["summary", {str(SPECS / "exp7.cnn")!r}]):
            with contextlib.redirect_stdout(io.StringIO()):
                assert main(argv) == 0
        print("pygments" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env={"PATH": "/usr/bin:/bin", "COLUMNS": "160"}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_fmt_show_with_check_is_a_usage_error():
    done = run_cli("fmt", "--show", "--check", str(SPECS / "exp1.cnn"))
    assert done.returncode == 2
    assert "not allowed with argument" in done.stderr and "Traceback" not in done.stderr


def test_fmt_show_of_a_bad_spec_points_at_the_error(tmp_path):
    bad = tmp_path / "bad.cnn"
    bad.write_text("conv32 relu cnov64\n")
    done = run_cli("fmt", "--show", str(bad), env=PLAIN)
    assert done.returncode == 1 and done.stdout == ""
    assert f"{bad}:1:13: error: unknown layer word `cnov64`" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.skipif(shutil.which("script") is None, reason="util-linux `script` (a pty) absent")
def test_a_real_terminal_gets_colour():
    done = subprocess.run(
        ["script", "-qec", f"{sys.executable} -m cnnspec fmt --show {SPECS / 'exp1.cnn'}",
         "/dev/null"], capture_output=True, text=True, cwd=ROOT, timeout=120,
        env={"PATH": "/usr/bin:/bin", "TERM": "xterm-256color", "COLUMNS": "160"})
    assert done.returncode == 0, done.stderr
    assert "\x1b[" in done.stdout
    assert ANSI.sub("", done.stdout).replace("\r\n", "\n") == (SPECS / "exp1.cnn").read_text()
