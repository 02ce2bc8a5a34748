"""User text is printed as written: rich markup in names is neither an error nor a style.

File names, `--out` folders, spec/variant/study names and label names are user text. Rich reads
`[/]` in a printed string as a closing tag (MarkupError: a traceback, and `fmt` used to die
after rewriting the first file) and `[red]x[/red]` as a style (the brackets vanish). These
commands need no TensorFlow; training, `run`, `evaluate`, `sweep --study` and `compare` with
such names are in test_exp_batch.py.
"""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

UNFORMATTED = "conv8   relu | dense8\n"
FORMATTED = "conv8 relu | dense8\n"


@pytest.fixture
def markup_files(tmp_path):
    """Two unformatted specs whose paths hold `[/]` and `[red]x[/red]`, and one whose spec
    name (the file's stem) is `[red]y` (a file name cannot hold `/`; a folder can)."""
    (tmp_path / "m[").mkdir()
    (tmp_path / "[red]x[").mkdir()
    one = tmp_path / "m[" / "]a.cnn"          # the path reads .../m[/]a.cnn
    two = tmp_path / "[red]x[" / "red].cnn"   # the path reads .../[red]x[/red].cnn
    three = tmp_path / "[red]y.cnn"
    for f in (one, two, three):
        f.write_text(UNFORMATTED)
    assert str(one).endswith("m[/]a.cnn") and str(two).endswith("[red]x[/red].cnn")
    return one, two, three


def _clean(result):
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "MarkupError" not in result.stderr


def test_fmt_rewrites_every_file_and_names_them_verbatim(markup_files):
    one, two, three = markup_files
    check = run_cli("fmt", "--check", str(one), str(two), str(three))
    _clean(check)
    assert check.returncode == 1
    for f in (one, two, three):
        assert f"would reformat {f}" in check.stdout
        assert f.read_text() == UNFORMATTED
    result = run_cli("fmt", str(one), str(two), str(three))
    _clean(result)
    assert result.returncode == 0
    for f in (one, two, three):  # all rewritten, not only the first
        assert f.read_text() == FORMATTED
        assert f"reformatted {f}" in result.stdout


def test_check_names_files_verbatim_in_ok_lines_and_errors(markup_files, tmp_path):
    one, two, three = markup_files
    (tmp_path / "m[" / "]bad.cnn").write_text("conv8 relu pool64 | dense8\n")
    bad = tmp_path / "m[" / "]bad.cnn"
    result = run_cli("check", str(one), str(two), str(three), str(bad))
    _clean(result)
    assert result.returncode == 1
    for f in (one, two, three):
        assert f"ok  {f}  " in result.stdout
    assert f"{bad}:1:12: error:" in result.stderr
    assert "1 of 4 specs have errors" in result.stderr


def test_summary_title_is_the_path_as_given(markup_files):
    for f in markup_files:
        result = run_cli("summary", str(f))
        _clean(result)
        assert result.returncode == 0
        # the title wraps to the table's width, inside a long path too (under pytest-xdist the
        # temporary paths are longer): compared without the whitespace
        title = "".join(result.stdout.split("┏")[0].split())
        assert title == "".join(f"{f} (input 32×32×3)".split())


def test_diff_and_expand_print_names_verbatim(markup_files, tmp_path):
    one, two, three = markup_files
    result = run_cli("diff", str(one), str(three))
    _clean(result)
    assert result.returncode == 0
    assert f"{one}  →  {three}" in result.stdout or "0 added, 0 removed" in result.stdout
    sweep = tmp_path / "[red]s[" / "]w.cnn"
    sweep.parent.mkdir()
    sweep.write_text("conv8 relu drop{.25,.5} | dense8\n")
    listed = run_cli("expand", str(sweep))
    _clean(listed)
    assert listed.returncode == 0
    assert f"{sweep}: 2 variants" in listed.stdout
    assert "]w[drop=.25]" in listed.stdout and "]w[drop=.5]" in listed.stdout
    out = tmp_path / "o[" / "]ut[red]z[" / "red]"
    written = run_cli("expand", str(sweep), "--write", str(out))
    _clean(written)
    assert f"wrote 2 variant specs to {out}/" in written.stdout
    assert sorted(p.name for p in out.iterdir()) == ["]w[drop=.25].cnn", "]w[drop=.5].cnn"]


def test_check_of_a_sweep_with_markup_names(tmp_path):
    sweep = tmp_path / "[bold]s.cnn"
    sweep.write_text("conv8 relu drop{.25,.5} | dense8\n")
    result = run_cli("check", str(sweep))
    _clean(result)
    assert f"ok  {sweep}  2 variants, all check" in result.stdout
    assert json.loads(run_cli("expand", str(sweep), "--json").stdout)[0]["name"] == \
        "[bold]s[drop=.25]"


def test_the_console_helper_reads_no_markup():
    """The structural fix: every command prints through `_console()`, which reads no markup."""
    from cnnspec.cli.main import _console

    for stderr in (False, True):
        console = _console(stderr=stderr)
        with console.capture() as cap:
            console.print("a[/]b [red]x[/red] :smile:")
        assert cap.get().strip() == "a[/]b [red]x[/red] :smile:"


def test_a_long_error_line_is_not_rewrapped(tmp_path):
    """The source line and its caret stay one line each at any terminal width."""
    bad = tmp_path / "long.cnn"
    body = " ".join(["conv8 relu"] * 12)
    bad.write_text(f"{body} cnov8 | dense8\n")
    result = run_cli("check", str(bad), env={"COLUMNS": "40"})
    _clean(result)
    lines = result.stderr.splitlines()
    column = len(body) + 2
    assert lines[0] == f"{bad}:1:{column}: error: unknown layer word `cnov8`"
    # (the source line may be shown as a window of itself; it is not cut into more lines)
    assert lines[1].endswith("conv8 relu cnov8 | dense8") and len(lines[1]) > 40
    assert lines[2] == " " * lines[1].index("cnov8") + "^" * 5


@pytest.mark.parametrize("columns", ["60", "120"])
def test_expand_never_cuts_a_variant_name(tmp_path, columns):
    spec = tmp_path / "wide.cnn"
    spec.write_text("conv8 " + " ".join("relu?" for _ in range(12)) + " | dense4\n")
    names = [v["name"] for v in json.loads(
        run_cli("expand", str(spec), "--sample", "3", "--json").stdout)]
    table = run_cli("expand", str(spec), "--sample", "3", env={"COLUMNS": columns}).stdout
    rows: list[str] = []
    for line in table.splitlines():
        if not line.startswith("│"):
            continue
        cells = [c.strip() for c in line.strip("│").split("│")]
        if cells[1]:  # a params cell starts a row; folded lines continue the name
            rows.append(cells[0])
        else:
            rows[-1] += cells[0]
    assert rows == names
    assert "…" not in table
