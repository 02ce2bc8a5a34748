"""A sweep's variant that leaves out everything in a block or group is written without it.

The language has no empty block or group (`let b =` and `()` do not parse), and `expand
--write` (and `--json`'s text) wrote exactly those for `let b = bn?` and `(bn?)x2`: files that
did not parse. Each variant's text must parse, check, and be the network the variant is: here
compared with the network written by hand without the optional parts.
"""

from __future__ import annotations

import pytest
from conftest import run_cli

import cnnspec
from cnnspec.language.sweep import expand

# (sweep, the variant that drops every optional part, that network written by hand)
CASES = [
    ("conv8 (bn?)x2 relu pool2 | dense8\n", "conv8 relu pool2 | dense8\n"),
    ("let b = bn?\nconv8 b relu pool2 | dense8\n", "conv8 relu pool2 | dense8\n"),
    ("let b = bn?  # maybe\nlet c = (b)x2\nconv8 c relu pool2 | dense8\n",
     "conv8 relu pool2 | dense8\n"),
    ("let b = bn? drop.1?\nlet c = b relu\nconv8 c b pool2 | dense8\n",
     "conv8 relu pool2 | dense8\n"),
    ("conv8 relu\nbn?  # optional\npool2 | dense8\n", "conv8 relu pool2 | dense8\n"),
    ("let b = bn?\nconv8 add(conv8 b, conv8) pool2 | dense8\n",
     "conv8 add(conv8, conv8) pool2 | dense8\n"),
]


def _shape_flow(report) -> list[tuple]:
    return [(row.keras_class, row.output_shape, row.params) for row in report.rows]


@pytest.mark.parametrize(("sweep", "by_hand"), CASES)
def test_every_variant_text_parses_to_that_variant(sweep, by_hand):
    variants = expand(cnnspec.parse(sweep, name="s"))
    for variant in variants:
        text = cnnspec.format_spec(variant.spec)
        written = cnnspec.check(cnnspec.parse(text, name="w"))
        assert _shape_flow(written) == _shape_flow(cnnspec.check(variant.spec)), text
        assert "let b = \n" not in text and "()" not in text
    # the variant with every optional part left out: the fewest layers
    emptiest = min(variants, key=lambda v: len(cnnspec.check(v.spec).rows))
    text = cnnspec.format_spec(emptiest.spec)
    assert _shape_flow(cnnspec.check(cnnspec.parse(text))) == _shape_flow(
        cnnspec.check(cnnspec.parse(by_hand)))


def test_a_line_keeps_its_comment_and_the_lines_keep_their_numbers():
    (_, empty) = expand(cnnspec.parse("let b = bn?  # maybe\nconv8 b relu pool2 | dense8\n"))
    assert cnnspec.format_spec(empty.spec) == "# maybe\nconv8 relu pool2 | dense8\n"


def test_expand_write_writes_files_that_check(tmp_path):
    spec = tmp_path / "e.cnn"
    spec.write_text("let b = bn?\nconv8 (b)x2 relu pool2 | dense8\n")
    out = tmp_path / "w"
    result = run_cli("expand", str(spec), "--write", str(out))
    assert result.returncode == 0, result.stderr
    files = sorted(out.iterdir())
    assert [f.name for f in files] == ["e[+bn].cnn", "e[-bn].cnn"]
    checked = run_cli("check", *map(str, files))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert (out / "e[-bn].cnn").read_text() == "\nconv8 relu pool2 | dense8\n"


@pytest.mark.parametrize("sweep", [
    "input 8x8x3\nconv4 concat(conv2 (dwconv?)x1 relu, relu)\ngap\n",
    "conv8 (bn?)x2 relu pool2 | dense8\n",
    "conv8 ((bn? drop.1?)x2 relu)x2 | dense8\n",
])
def test_a_variant_whose_group_is_left_empty_round_trips(sweep):
    """`format_spec` promises parse(format_spec(s)) == s; a variant that left a group empty
    kept `Repeat(Group(()))` in its IR, which its text cannot write, so it came back unequal."""
    for variant in expand(cnnspec.parse(sweep)):
        assert cnnspec.parse(cnnspec.format_spec(variant.spec)) == variant.spec, variant.name
