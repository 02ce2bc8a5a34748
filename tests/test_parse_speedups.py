"""The shortcuts issue 14 added to parsing hold their rules.

* The LALR tables kept on disk (lalr_fast.cached_tables) are used only for the very grammar
  and driver that wrote them; a damaged file is ignored and replaced.
* A bare layer word is read once per text (parse._bare_layer): the node is the one the
  dataclass defaults give, and a word with a problem is still reported at every place.
* The depth walk is skipped when the text cannot nest MAX_DEPTH levels (parse._may_nest_deeply):
  the bound it uses is never below the real depth, measured here by a walk of our own.
* A setting's one-token value is read once per text (Setting.read_token): the value is the
  one written, a refused value is still reported at every place, and the table is bounded.
"""

from __future__ import annotations

import marshal
import sys

import pytest
from conftest import EXAMPLES, SPECS
from hypothesis import given, settings
from test_properties import spec_text

import cnnspec
from cnnspec.language import ir, lalr_fast

parse_module = sys.modules["cnnspec.language.parse"]


def _tables() -> lalr_fast.Tables:
    return parse_module._tables_from_lark()


# -- the tables kept on disk -------------------------------------------------------------------


def test_tables_are_read_once_then_come_from_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("CNNSPEC_CACHE_DIR", str(tmp_path))
    reads: list[int] = []

    def read() -> lalr_fast.Tables:
        reads.append(1)
        return _tables()

    grammar = parse_module._grammar_text()
    first = lalr_fast.cached_tables(grammar, read)
    again = lalr_fast.cached_tables(grammar, read)
    assert reads == [1] and again == first
    # another grammar text is another key: read again, never the other grammar's tables
    lalr_fast.cached_tables(grammar + "\n// changed\n", read)
    assert reads == [1, 1]


def test_a_damaged_cache_file_is_ignored_and_replaced(monkeypatch, tmp_path):
    monkeypatch.setenv("CNNSPEC_CACHE_DIR", str(tmp_path))
    grammar = parse_module._grammar_text()
    lalr_fast.cached_tables(grammar, _tables)
    (path,) = tmp_path.glob("lalr-*.marshal")
    for damage in (b"", b"\x00garbage", path.read_bytes()[:100], marshal.dumps(("key", ()))):
        path.write_bytes(damage)
        tables = lalr_fast.cached_tables(grammar, _tables)
        assert lalr_fast.FastLALR(tables).parse("conv8 relu | dense2\n") is not None
        key, _ = marshal.loads(path.read_bytes())  # rewritten whole
        assert key[1] == grammar


def test_an_unwritable_cache_folder_only_costs_time(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CNNSPEC_CACHE_DIR", str(blocker / "cache"))
    tables = lalr_fast.cached_tables(parse_module._grammar_text(), _tables)
    assert lalr_fast.FastLALR(tables).parse("relu\n") is not None


# -- bare layer words --------------------------------------------------------------------------


@pytest.mark.parametrize("text, node", [
    ("conv64", ir.Conv(64)),
    ("pool3", ir.MaxPool(3, 3)),  # a pool's stride defaults to its size
    ("drop.25", ir.Dropout(0.25)),
    ("relu", ir.Activation("relu")),
    ("bn", ir.BatchNorm()),
    ("dense10", ir.Dense(10)),
])
def test_a_bare_word_builds_the_node_of_the_defaults(text, node):
    spec = cnnspec.parse(f"{text} {text}\n")
    first, second = spec.layers()
    assert first == second == node
    assert (first.span.column, second.span.column) == (1, len(text) + 2)  # each its own place


def test_a_bad_bare_word_is_reported_at_every_place():
    with pytest.raises(cnnspec.SpecError) as err:
        cnnspec.parse("conv64 conv0 relu conv0 drop1.5\n")
    assert [(d.span.column, d.message) for d in err.value.diagnostics] == [
        (8, "conv filters must be at least 1, got 0"),
        (19, "conv filters must be at least 1, got 0"),
        (25, "drop rate must be in [0, 1), got 1.5"),
    ]


def test_a_setting_read_again_gives_the_value_written():
    for _ in range(2):  # the second parse finds the values kept by the first
        spec = cnnspec.parse("train lr=.05 optimizer=adam batch=64 shuffle=false\nconv8 | dense2\n")
        assert {s.key: s.value for s in spec.settings} == {
            "lr": 0.05, "optimizer": "adam", "batch": 64, "shuffle": "false"}
    spec = cnnspec.parse("train lr=.5 batch=7\nconv8 | dense2\n")  # another text, another value
    assert {s.key: s.value for s in spec.settings} == {"lr": 0.5, "batch": 7}


def test_a_refused_setting_is_reported_at_every_place():
    text = "train batch=0\ntrain batch=32 epochs=0\nconv8 | dense2\n"
    for _ in range(2):
        with pytest.raises(cnnspec.SpecError) as err:
            cnnspec.parse(text)
        places = [(d.span.line, d.span.column) for d in err.value.diagnostics]
        assert (1, 13) in places and (2, 23) in places  # batch=0's 0, epochs=0's 0


def test_the_values_kept_per_setting_are_bounded():
    from cnnspec.language.setting_values import Written
    from cnnspec.language.settings import MAX_KEPT_READS, SETTINGS

    entry = SETTINGS.by_key["batch"]
    for n in range(1, MAX_KEPT_READS + 50):
        assert entry.read_token(Written(str(n), "NUMBER")) == n
    assert len(entry._read_tokens) == MAX_KEPT_READS
    assert entry.read_token(Written(str(MAX_KEPT_READS + 49), "NUMBER")) == MAX_KEPT_READS + 49


# -- the depth bound ---------------------------------------------------------------------------


def _depth(spec: ir.Spec) -> int:
    """The deepest chain of IR levels (groups, repeats, optionals, merges, block uses) to a
    layer, as parse's MAX_DEPTH counts them; walked here independently."""
    blocks: dict[str, int] = {}

    def depth(item: object) -> int:
        if isinstance(item, ir.Group):
            return 1 + max((depth(i) for i in item.items), default=0)
        if isinstance(item, ir.Repeat | ir.Optional):
            return 1 + depth(item.body)
        if isinstance(item, ir.Merge):
            return 1 + max((depth(i) for b in item.branches for i in b), default=0)
        if isinstance(item, ir.BlockRef):
            if item.items is not None:
                return 1 + max((depth(i) for i in item.items), default=0)
            return 1 + blocks.get(item.name, 0)
        return 1

    deepest = 0
    for st in spec.statements():
        if isinstance(st, ir.LetDecl | ir.LayerLine):
            here = max((depth(i) for i in st.items), default=0)
            if isinstance(st, ir.LetDecl):
                blocks[st.name] = here
            deepest = max(deepest, here)
    return deepest


def _bound(text: str) -> int:
    return 1 + text.count("(") + text.count("x") + text.count("?") + text.count("let")


@pytest.mark.parametrize("path", sorted(SPECS.glob("*.cnn")) + sorted(EXAMPLES.glob("*.cnn")),
                         ids=lambda p: p.stem)
def test_the_depth_bound_holds_on_every_shipped_spec(path):
    text = path.read_text("utf-8")
    assert _depth(cnnspec.parse(text)) <= _bound(text)


def _chain(n: int) -> str:
    """Blocks each wrapping the one before in a group, a repeat and an optional: every `let`
    adds four levels (the use, the group, the repeat, the optional)."""
    return ("let b0 = relu\n" + "".join(f"let b{i} = (b{i - 1})x2?\n" for i in range(1, n + 1))
            + f"b{n}\n")


def test_the_depth_bound_holds_for_a_chain_of_blocks():
    text = _chain(20)
    assert _depth(cnnspec.parse(text)) == 2 + 4 * 20 <= _bound(text)  # the bound is tight here
    assert not parse_module._may_nest_deeply(text)


def test_a_chain_past_the_limit_is_still_refused():
    text = _chain(40)  # b32 is the first block 1 + 4 * 32 = 129 levels deep
    assert parse_module._may_nest_deeply(text)
    with pytest.raises(cnnspec.SpecError) as err:
        cnnspec.parse(text)
    (problem,) = err.value.diagnostics
    assert problem.message == (f"blocks and brackets nest 129 levels deep here, over the limit "
                               f"of {parse_module.MAX_DEPTH}")
    assert problem.span.line == 33


@settings(max_examples=200, deadline=None)
@given(spec_text(sweep=False) | spec_text(sweep=True))
def test_the_depth_bound_holds_on_random_specs(text):
    assert _depth(cnnspec.parse(text)) <= _bound(text)
