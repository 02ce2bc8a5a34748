"""The command line as a user runs it: a subprocess, exit codes, error format, JSON output."""

from __future__ import annotations

import json
import re

import pytest
from conftest import EXAMPLES, ROOT, SPECS

from cnnspec.language.layers import fmt_shape


def test_check_all_seed_specs_and_examples(cli, tmp_path):
    files = sorted(str(p) for p in [*SPECS.glob("*.cnn"), *EXAMPLES.glob("*.cnn")])
    result = cli("check", *files, cwd=tmp_path)  # from any folder
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ok ") == len(files)
    assert "Traceback" not in result.stderr


def test_check_lists_every_error_with_position_and_caret(cli, tmp_path):
    bad = tmp_path / "bad.cnn"
    bad.write_text("conv32 relu cnov64 drop1.5\n| dense10 l2(.01)\n")
    worse = tmp_path / "worse.cnn"
    worse.write_text("conv32 pool3 pool3 pool3 pool3 | dense64\n")
    result = cli("check", str(bad), str(worse))
    assert result.returncode == 1
    err = result.stderr
    assert "Traceback" not in err
    assert f"{bad}:1:13: error: unknown layer word `cnov64`" in err
    assert "did you mean `conv64`?" in err
    assert f"{bad}:1:20: error: drop rate must be in [0, 1), got 1.5" in err
    # the pooling that reaches zero names the layer and the incoming shape
    assert re.search(rf"{re.escape(str(worse))}:1:26: error: pool3: input is 1×1×32", err)
    # source line and caret under the offending token
    lines = err.splitlines()
    i = lines.index("    conv32 relu cnov64 drop1.5")
    assert lines[i + 1] == "    " + " " * 12 + "^" * 6


def test_syntax_error_stray_bracket(cli, tmp_path):
    bad = tmp_path / "stray.cnn"
    bad.write_text("conv32 relu bn pool3 drop.25 | dense512 l2(.01) drop.5]\n")
    result = cli("check", str(bad))
    assert result.returncode == 1
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"{bad}:1:55: error: unexpected character ']'")
    assert "expected" in first
    assert len(result.stderr) < 600  # a sentence, not a dump of token names


def test_usage_errors_exit_2(cli):
    assert cli().returncode == 2
    assert cli("summary").returncode == 2
    assert cli("frobnicate").returncode == 2
    assert cli("check", "--max-params", "zero", "specs/exp1.cnn").returncode == 2


def test_missing_file_is_a_spec_error_not_a_traceback(cli, tmp_path):
    result = cli("summary", str(tmp_path / "nope.cnn"))
    assert result.returncode == 1
    assert "cannot read spec" in result.stderr
    assert "Traceback" not in result.stderr


def test_summary_table_and_json(cli, tmp_path):
    table = cli("summary", str(SPECS / "exp7.cnn"), cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "conv128_l8c2 (Conv2D)" in table.stdout
    assert "4,424,458" in table.stdout
    result = cli("summary", "--json", str(SPECS / "exp7.cnn"))
    data = json.loads(result.stdout)
    assert data["totals"]["params"] == 4_424_458
    assert data["totals"]["non_trainable_params"] == 640
    assert data["layers"][0]["output_shape"] == [32, 32, 64]
    assert data["layers"][-1]["keras_name"] == "classifier_softmax"
    assert sum(r["params"] for r in data["layers"]) == data["totals"]["params"]


@pytest.mark.parametrize(("command", "files", "width"), [
    ("summary", ["examples/resnet20.cnn"], 80), ("summary", ["specs/exp7.cnn"], 80),
    ("diff", ["specs/exp1.cnn", "specs/exp7.cnn"], 80),
    ("diff", ["examples/resnet9.cnn", "examples/resnet20.cnn"], 80),
    ("summary", ["examples/resnet20.cnn"], 60),  # text columns 3 to 6 wide beside them
])
def test_tables_cut_nothing_short_at_usual_widths(cli, command, files, width):
    """At 80 columns `summary` cut 94 cells of resnet20 (`conv16_l9c…`, `(BatchNorm…`) and
    `diff` cut shapes (`32×32×…`). Numbers and shapes now stay whole on one line, text wraps
    or folds, and the table still fits the width (no column dropped off the edge)."""
    import cnnspec

    result = cli(command, *files, env={"COLUMNS": str(width)})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "…" not in result.stdout
    assert max(len(line) for line in lines) <= width
    reports = [cnnspec.check(cnnspec.load(str(ROOT / file))) for file in files]
    if command == "summary":
        rows = reports[0].rows
        assert f"{reports[0].params:,}" in result.stdout
        assert any("RF" in line for line in lines if line.startswith("┃"))
    else:  # the rows the diff shows: those that differ
        from cnnspec.language.diff import diff_reports
        from cnnspec.language.settings import settings_of

        changes = diff_reports(*reports, *(settings_of(cnnspec.load(str(ROOT / f)))
                                           for f in files)).changes
        rows = [row for c in changes if c.op != "same" for row in (c.a, c.b) if row]
        assert rows
    for row in rows:  # every shape and parameter count, whole, as the checker has them
        assert fmt_shape(row.output_shape) in result.stdout
        assert f"{row.params:,}" in result.stdout


@pytest.mark.parametrize("width", [40, 50])
def test_a_table_too_narrow_for_whole_numbers_keeps_some_of_every_column(cli, width):
    """Whole numbers in a 40-column summary squeezed the line, layer and Keras columns to
    nothing (rows of numbers alone); where they do not fit, rich's own layout, cells cut
    with `…`, is kept: every column shows something."""
    result = cli("summary", "examples/resnet20.cnn", env={"COLUMNS": str(width)})
    assert result.returncode == 0, result.stderr
    first_row = next(line for line in result.stdout.splitlines() if line.startswith("│"))
    cells = [cell.strip() for cell in first_row.strip("│").split("│")]
    assert len(cells) == 7 and all(cells), first_row
    assert cells[1].startswith("co") and cells[2].startswith("co")  # conv16, conv16_l9c19


def test_summary_respects_max_params(cli):
    result = cli("summary", "--max-params", "1000000", str(SPECS / "exp7.cnn"))
    assert result.returncode == 1
    assert "over the budget of 1,000,000" in result.stderr
    assert "dense512" in result.stderr


def test_budget_over_in_the_implicit_classifier_is_placed_at_classes(cli, tmp_path):
    spec = tmp_path / "wide.cnn"
    spec.write_text("input 32x32x3\nclasses 100000000\nconv8 pool32 |\n")
    result = cli("check", "--max-params", "100000000", str(spec))
    assert result.returncode == 1
    # (8 + 1) * 10**8 parameters in the implicit dense10**8 after a 1x1x8 trunk
    assert f"{spec}:2:9: error: the model has" in result.stderr
    assert "the classifier dense100000000 alone has 900,000,000" in result.stderr
    assert "Traceback" not in result.stderr


def test_parse_prints_ir_json(cli):
    result = cli("parse", str(SPECS / "exp1.cnn"))
    data = json.loads(result.stdout)
    assert data["kind"] == "Spec"


def test_fmt_check_and_rewrite(cli, tmp_path):
    messy = tmp_path / "messy.cnn"
    messy.write_text("# keep me\nconv32   relu pool2 drop0.25 # tail\n|dense64 relu\n")
    check = cli("fmt", "--check", str(messy))
    assert check.returncode == 1
    assert "would reformat" in check.stdout
    assert messy.read_text().startswith("# keep me\nconv32   relu")  # untouched
    assert cli("fmt", str(messy)).returncode == 0
    assert messy.read_text() == "# keep me\nconv32 relu pool2 drop.25  # tail\n| dense64 relu\n"
    assert cli("fmt", "--check", str(messy)).returncode == 0
    seeds = [str(p) for p in SPECS.glob("*.cnn")]
    assert cli("fmt", "--check", *seeds).returncode == 0


def test_fmt_keeps_a_files_crlf_line_endings(cli, tmp_path):
    crlf = tmp_path / "windows.cnn"
    crlf.write_bytes(b"# keep me\r\nconv32 relu pool2 | dense64\r\n")  # canonical but CRLF
    assert cli("fmt", "--check", str(crlf)).returncode == 0  # was "would reformat"
    crlf.write_bytes(b"conv32   relu pool2 |dense64\r\n")
    assert cli("fmt", str(crlf)).returncode == 0
    assert crlf.read_bytes() == b"conv32 relu pool2 | dense64\r\n"
    # mixed endings are not one file's style: made LF throughout
    mixed = tmp_path / "mixed.cnn"
    mixed.write_bytes(b"# a\r\nconv32 relu pool2 | dense64\n")
    assert cli("fmt", str(mixed)).returncode == 0
    assert mixed.read_bytes() == b"# a\nconv32 relu pool2 | dense64\n"


def test_fmt_says_when_it_renames_sweep_points_told_apart_by_column(cli, tmp_path):
    """Two `conv{8,16}` on one line are named by their columns; fmt moves the second one from
    column 18 to 17 (one space less), so its variants' names change: fmt says so."""
    spec = tmp_path / "twice.cnn"
    spec.write_text("input 32x32x3\nconv{8,16}  relu conv{8,16} pool2 | dense16\n")
    before = cli("expand", str(spec)).stdout
    assert "conv@2:18=8" in before  # the name as the unformatted text gives it
    check = cli("fmt", "--check", str(spec))
    assert check.returncode == 1 and "Traceback" not in check.stderr
    assert "would rename its sweep points conv@2:18 -> conv@2:17" in check.stderr
    done = cli("fmt", str(spec))
    assert done.returncode == 0
    assert "renamed its sweep points conv@2:18 -> conv@2:17" in done.stderr
    assert "conv@2:17=8" in cli("expand", str(spec)).stdout
    # a sweep fmt does not rename (one point per key) gets no note
    once = tmp_path / "once.cnn"
    once.write_text("input 32x32x3\nconv{8,16}  relu pool2 | dense16\n")
    quiet = cli("fmt", str(once))
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_fmt_leaves_a_bad_file_alone(cli, tmp_path):
    bad = tmp_path / "bad.cnn"
    text = "conv32 relu ( pool2\n"
    bad.write_text(text)
    result = cli("fmt", str(bad))
    assert result.returncode == 1
    assert bad.read_text() == text
    assert "`(` is not closed on this line" in result.stderr


def test_readme_documents_every_layer_word_and_setting():
    from conftest import ROOT

    from cnnspec.language.layers import KINDS
    from cnnspec.language.settings import SETTING_PARAMS

    readme = (ROOT / "README.md").read_text()
    missing = [w for w in KINDS if f"`{w}" not in readme]
    assert not missing, f"README's language reference lacks {missing}"
    keys = [p.names[0] for p in SETTING_PARAMS if f"`{p.names[0]}`" not in readme]
    assert not keys, f"README's training settings table lacks {keys}"


def test_check_reports_syntax_errors_on_every_line_in_one_run(cli, tmp_path):
    bad = tmp_path / "multi.cnn"
    bad.write_text("conv32 relu ]\ncnov64 relu\n(conv32 relu\nlet u = conv8 (\n"
                   "u pool2 drop1.5 | dense10\n")
    result = cli("check", str(bad))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    heads = [ln.split(": error:")[0] for ln in result.stderr.splitlines() if ": error:" in ln]
    # line 4 ends inside its `(`: the error is at that `(`, as on line 3
    assert heads == [f"{bad}:1:13", f"{bad}:2:1", f"{bad}:3:1", f"{bad}:4:15", f"{bad}:5:9"]
    assert f"{bad}:4:15: error: `(` is not closed on this line" in result.stderr
    assert "block `u`" not in result.stderr  # its `let` line is broken; not reported at each use


def test_a_broken_let_line_is_reported_once_even_when_the_block_is_used_oddly():
    import pytest

    import cnnspec

    text = "let unit = (bn x1)? (conv1(k=1,same x1)?\nunit?\nconv8 | dense8\n"
    with pytest.raises(cnnspec.SpecError) as err:
        cnnspec.parse(text, filename="t.cnn")
    assert [d.span.line for d in err.value.diagnostics] == [1]


def test_max_params_in_e_notation_is_the_whole_number_it_writes(cli, tmp_path):
    spec = tmp_path / "p.cnn"
    spec.write_text("conv8 gap\n")  # 3*3*3*8 + 8 + 8*10 + 10 = 314 parameters
    assert cli("check", "--max-params", "3.14e2", str(spec)).returncode == 0
    over = cli("check", "--max-params", "3.13e2", str(spec))
    assert over.returncode == 1 and "over the budget of 313" in over.stderr


def test_macs_past_a_thousand_giga_are_told_in_tera():
    from cnnspec.cli.main import _si

    assert [_si(n) for n in (999, 1_500, 2.5e9, 2.5e12, 2_535_130e9)] == [
        "999", "1.50k", "2.50G", "2.50T", "2535.13T"]


def test_fmt_says_when_its_spelling_renames_a_swept_arguments_variants(cli, tmp_path):
    """A swept layer argument names its variants as written (`m=0.5`), so runs keep their
    names whatever cnnspec's version; fmt writes `.5`, which renames the variant and its run.
    That went unsaid (a continued sweep then trained the variant again): fmt now tells."""
    spec = tmp_path / "m.cnn"
    spec.write_text("input 32x32x3\nconv8 bn(m={.9,0.5}) relu pool2 | dense16\n")
    assert "m[bn=m=0.5]" in cli("expand", str(spec)).stdout
    done = cli("fmt", str(spec))
    assert done.returncode == 0
    assert "renamed its sweep points bn=m=0.5 -> bn=m=.5, and so the variants" in done.stderr
    assert "m[bn=m=.5]" in cli("expand", str(spec)).stdout
    assert cli("fmt", str(spec)).stderr == ""  # canonical now: nothing renamed again
