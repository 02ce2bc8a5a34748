"""A sweep point inside a part a variant can leave out makes no other network there.

`conv8 drop{.1,.2}? |` is three networks (drop .1, drop .2, no drop), not four: leaving the
dropout out, its rate is no choice at all. Expansion made four variants, two of them the same
network under names that claimed a rate (`[-drop{.1,.2},drop=.1]`, `[...,drop=.2]`), and a
sweep trained it twice. The counts below are worked out by hand from the specs.
"""

from __future__ import annotations

import pytest

import cnnspec
from cnnspec.language.sweep import canonical_labels, expand, sweep_points, variant_named

CASES = [
    # (sweep, how many distinct networks, the name of the one that leaves the part out)
    ("conv8 drop{.1,.2}? |\n", 3, "s[-drop{.1,.2}]"),
    ("conv8 (conv8 bn?)? |\n", 3, "s[-(conv8 bn?)]"),
    ("conv8 ((conv8 bn?)? relu)? |\n", 4, "s[-((conv8 bn?)? relu)]"),
    ("let u = conv8 drop{.1,.2}\nconv8 u? |\n", 3, "s[-u]"),
    ("let u = conv8 drop{.1,.2}\nlet w = u relu\nconv8 w? |\n", 3, "s[-w]"),
    # used once for sure: every choice is held
    ("let u = conv8 drop{.1,.2}\nconv8 u? u |\n", 4, "s[drop=.1,-u]"),
    ("conv8 drop{.1,.2} bn? |\n", 4, "s[drop=.1,-bn]"),
    ("train lr={.01,.1}\nconv8 drop{.1,.2}? |\n", 6, "s[lr=.1,-drop{.1,.2}]"),
]


def _network(spec) -> tuple[str, ...]:
    """What a variant trains: its layers' canonical texts, in order (not its let lines), and
    its train line."""
    from cnnspec.language import ir
    from cnnspec.language.format import format_statement

    train = tuple(format_statement(st) for st in spec.statements()
                  if isinstance(st, ir.TrainDecl))
    return tuple(row.text for row in cnnspec.check(spec).rows) + train


@pytest.mark.parametrize(("text", "count", "left_out"), CASES)
def test_each_network_is_one_variant_named_by_what_it_holds(text, count, left_out):
    spec = cnnspec.parse(text, name="s")
    variants = expand(spec)
    networks = [_network(v.spec) for v in variants]
    assert len(variants) == count
    assert len(set(networks)) == count  # no two variants are the same network
    assert left_out in [v.name for v in variants]
    # `train --resume` finds each variant back from its name (in a run folder's records)
    for v, network in zip(variants, networks, strict=True):
        found = variant_named(spec, v.name)
        assert found is not None and _network(found) == network, v.name
    assert variant_named(spec, "s[drop=.1,-drop{.1,.2}]") is None


@pytest.mark.parametrize(("text", "count", "left_out"), CASES)
def test_a_tpe_suggestion_finds_its_variant(text, count, left_out):
    """A study's TPE suggests a label for every point; inside a part left out any label
    stands for the one variant there."""
    spec = cnnspec.parse(text, name="s")
    points = sweep_points(spec)
    by_labels = {tuple(label for _, label in v.choices): v for v in expand(spec)}
    import itertools

    for labels in itertools.product(*(p.labels for p in points)):
        assert canonical_labels(spec, points, labels) in by_labels, labels


def test_a_sample_holds_distinct_variants():
    spec = cnnspec.parse("conv8 drop{.1,.2,.3}? bn? |\n", name="s")
    everything = expand(spec)
    assert len(everything) == 8  # (3 rates + none) x (bn or not)
    sample = expand(spec, sample=100, seed=1)
    assert [v.name for v in sample] == [v.name for v in everything]


def test_a_variant_left_without_layers_is_placed_at_the_part_it_leaves_out():
    from cnnspec.language.sweep import check_all_variants

    spec = cnnspec.parse("input 32x32x3\nconv8?\n(conv8 |)?\n", name="e")
    with pytest.raises(cnnspec.SpecError) as info:
        check_all_variants(spec)
    places = {d.message: (d.span.line, d.span.column) for d in info.value.diagnostics}
    # e[-conv8,-(conv8 |)] has no layers: the first part it leaves out is `conv8?`
    assert places["in variant e[-conv8,-(conv8 |)]: the spec has no layers"] == (2, 1)


# -- two choices that build one network -------------------------------------------------------


@pytest.mark.parametrize(("text", "line", "column"), [
    ("conv8 relu? relu? | dense4\n", 1, 7),
    ("conv8 relu pool2? pool2? | dense4\n", 1, 12),
    ("let b0 = conv8 relu\nb0? b0? | dense4\n", 2, 1),
    # in a graph the rows' inputs are Keras names, which carry their column: compared by row
    ("conv8 add(relu) relu? relu? | dense4\n", 1, 17),
    ("conv8 add(relu)? add(relu)? | dense4\n", 1, 7),
])
def test_choices_that_give_one_network_twice_are_refused_at_the_first(text, line, column):
    from cnnspec.language.sweep import check_all_variants

    spec = cnnspec.parse(text, name="s")
    with pytest.raises(cnnspec.SpecError) as info:
        check_all_variants(spec)
    (problem,) = info.value.diagnostics
    assert "are the same network with the same settings: the sweep would train it twice" \
        in problem.message
    assert (problem.span.line, problem.span.column) == (line, column)
    assert "`(relu relu?)?`" in problem.hint


@pytest.mark.parametrize("text", [
    "conv8 relu? pool2? | dense4\n",            # four different networks
    "conv8 relu? | dense4\ntrain lr={.01,.1}\n",  # same layers, other settings
    "conv8 (relu relu?)? | dense4\n",           # the tied form the hint suggests
    "conv8 add(relu)? pool2 add(relu)? | dense4\n",  # before or after the pool: other shapes
])
def test_choices_that_give_different_experiments_are_kept(text):
    from cnnspec.language.sweep import check_all_variants

    spec = cnnspec.parse(text, name="s")
    assert len(check_all_variants(spec)) == len(expand(spec))
