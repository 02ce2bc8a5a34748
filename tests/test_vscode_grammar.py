"""editors/vscode: the JSON files parse and point at each other; the TextMate grammar's
regexes compile as Python regexes; a small Python reading of the TextMate rules gives the
expected scopes; and the real engine (vscode-textmate + Oniguruma, driven by node through
editors/vscode/test/tokenize.js; skipped, saying why, without node or `npm ci`) gives every
layer word, number and comment of every shipped spec its scope, and leaves nothing unscoped."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cnnspec.language.layers import KINDS

ROOT = Path(__file__).resolve().parent.parent
VSCODE = ROOT / "editors" / "vscode"
GRAMMAR = json.loads((VSCODE / "syntaxes" / "cnnspec.tmLanguage.json").read_text())
SHIPPED = sorted([*ROOT.glob("specs/**/*.cnn"), *ROOT.glob("examples/**/*.cnn")])


def _rules(node: dict):
    yield node
    for key in ("patterns",):
        for child in node.get(key, []):
            yield from _rules(child)
    for child in node.get("repository", {}).values():
        yield from _rules(child)


def test_package_points_at_its_files():
    package = json.loads((VSCODE / "package.json").read_text())
    (lang,) = package["contributes"]["languages"]
    assert lang["id"] == "cnnspec" and lang["extensions"] == [".cnn"]
    (grammar,) = package["contributes"]["grammars"]
    assert grammar["scopeName"] == GRAMMAR["scopeName"]
    assert (VSCODE / grammar["path"]).is_file()
    assert (VSCODE / lang["configuration"]).is_file()
    assert (VSCODE / package["main"]).is_file()
    config = json.loads((VSCODE / lang["configuration"]).read_text())
    assert config["comments"]["lineComment"] == "#"
    assert ["(", ")"] in config["brackets"] and ["{", "}"] in config["brackets"]
    re.compile(config["wordPattern"])


def test_every_regex_compiles():
    count = 0
    for rule in _rules(GRAMMAR):
        for key in ("match", "begin", "end"):
            if key in rule:
                re.compile(rule[key])
                count += 1
    assert count > 15


def test_layer_words_match_the_layer_table():
    words = re.search(r"\\b\((.*?)\)", GRAMMAR["repository"]["layer"]["match"]).group(1)
    assert set(words.split("|")) == set(KINDS)


# -- a small TextMate reading -------------------------------------------------------------------


def _expand(patterns: list[dict]) -> list[dict]:
    out = []
    for p in patterns:
        if "include" in p:
            out += _expand([GRAMMAR["repository"][p["include"][1:]]])
        elif "match" in p or "begin" in p:
            out.append(p)
        else:
            out += _expand(p.get("patterns", []))
    return out


def _scopes(m: re.Match, rule: dict, captures: dict, out: list) -> None:
    if "name" in rule:
        out.append((m.start(), m.end(), rule["name"]))
    for group, cap in captures.items():
        if m.group(int(group)) is not None and "name" in cap:
            out.append((m.start(int(group)), m.end(int(group)), cap["name"]))


def tokenize(text: str) -> list[tuple[str, str]]:
    """(text, scope) for every scoped piece of every line."""
    stack: list[dict] = [GRAMMAR]
    pieces = []
    for line in text.split("\n"):
        out: list = []
        pos = 0
        while pos <= len(line):
            top = stack[-1]
            best = None
            if top is not GRAMMAR:
                m = re.compile(top["end"]).search(line, pos)
                if m:
                    best = (m.start(), 0, None, m)
            for i, rule in enumerate(_expand(top.get("patterns", []))):
                m = re.compile(rule.get("match") or rule["begin"]).search(line, pos)
                if m and (best is None or m.start() < best[0]):
                    best = (m.start(), i + 1, rule, m)
            if best is None:
                break
            _, _, rule, m = best
            if rule is None:
                _scopes(m, {"name": top["name"]} if "name" in top else {},
                        top.get("endCaptures", {}), out)
                stack.pop()
            elif "match" in rule:
                _scopes(m, rule, rule.get("captures", {}), out)
            else:
                _scopes(m, {}, rule.get("beginCaptures", {}), out)
                stack.append(rule)
            pos = m.end() if m.end() > pos else pos + 1
        while len(stack) > 1 and stack[-1].get("end") == "$":
            stack.pop()
        pieces += [(line[a:b], scope) for a, b, scope in out if b > a]
    return pieces


def test_sample_scopes():
    toks = tokenize("input 32x32x3  # shape\ntrain lr={.01,.05}\n"
                    "let u(f) = conv{f}(k=5,valid) bn\nu(8) x2 drop.25 | dense10\n")
    assert ("# shape", "comment.line.number-sign.cnnspec") in toks
    assert ("32x32x3", "constant.numeric.cnnspec") in toks
    assert ("lr", "variable.parameter.setting.cnnspec") in toks
    assert (".05", "constant.numeric.cnnspec") in toks
    assert ("u", "entity.name.function.block.cnnspec") in toks
    assert ("conv", "support.function.layer.cnnspec") in toks
    assert ("k", "variable.parameter.argument.cnnspec") in toks
    assert ("x2", "keyword.operator.repeat.cnnspec") in toks
    assert ("drop", "support.function.layer.cnnspec") in toks
    assert (".25", "constant.numeric.cnnspec") in toks
    assert ("|", "keyword.operator.flatten.cnnspec") in toks
    assert ("10", "constant.numeric.cnnspec") in toks


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_specs_scopes(path):
    text = path.read_text()
    toks = tokenize(text)
    comments = [t for t, s in toks if s.startswith("comment")]
    assert len(comments) == sum(1 for line in text.split("\n") if "#" in line)
    layer_words = [t for t, s in toks if s == "support.function.layer.cnnspec"]
    expected = []
    for line in text.split("\n"):
        code = line.split("#")[0]
        if re.match(r"\s*(input|classes|train)\b", code):
            continue
        code = re.sub(r"^\s*let\s+\w+", "", code)
        for word in re.findall(r"(?<![A-Za-z0-9_.{=])[A-Za-z_][A-Za-z0-9_]*", code):
            base = next((w for w in sorted(KINDS, key=len, reverse=True)
                         if re.fullmatch(rf"{w}[0-9]*", word)), None)
            if base:
                expected.append(base)
    assert layer_words == expected and expected


# -- the real TextMate engine -------------------------------------------------------------------

NODE_MODULES = VSCODE / "node_modules"


def _real_tokens(paths: list[Path]) -> dict[str, list]:
    import shutil
    import subprocess

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the real TextMate engine runs under node")
    if not (NODE_MODULES / "vscode-textmate").is_dir() or \
            not (NODE_MODULES / "vscode-oniguruma").is_dir():
        pytest.skip("vscode-textmate/vscode-oniguruma not installed: run `npm ci` in "
                    "editors/vscode")
    out = subprocess.run([node, str(VSCODE / "test" / "tokenize.js"), *map(str, paths)],
                         capture_output=True, text=True, timeout=120, check=True)
    return {item["file"]: item["tokens"] for item in json.loads(out.stdout)}


_NUM = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
_LAYER = "|".join(sorted(KINDS, key=len, reverse=True))
_CODE_TOKEN = re.compile(
    rf"(?P<repeat>\bx[0-9]+\b)|(?P<layer>\b(?:{_LAYER}))(?P<lnum>{_NUM})?(?![A-Za-z0-9_.])"
    rf"|(?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[0-9]+)?)|(?P<num>[0-9]+(?:x[0-9]+)+|{_NUM})")


def _expected(text: str) -> list[tuple[int, str, str]]:
    """(line, text, kind) for every comment, layer word and number, read with the layer table
    and the lexical rules of grammar/cnnspec.lark (not with the TextMate grammar)."""
    out = []
    for i, line in enumerate(text.split("\n")):
        code, hash_, comment = line.partition("#")
        header = re.match(r"\s*(input|classes|train)\b", code)
        for m in _CODE_TOKEN.finditer(code, header.end() if header else 0):
            if m.group("layer") and not header:
                out.append((i, m.group("layer"), "layer"))
                if m.group("lnum"):
                    out.append((i, m.group("lnum"), "number"))
            elif m.group("num"):
                out.append((i, m.group("num"), "number"))
            elif m.group("lnum") and header:
                out.append((i, m.group("lnum"), "number"))
        if hash_:
            out.append((i, hash_ + comment, "comment"))
    return out


KIND_SCOPE = {"layer": "support.function.layer.cnnspec", "number": "constant.numeric.cnnspec",
              "comment": "comment.line.number-sign.cnnspec"}


def test_real_engine_scopes_every_layer_word_number_and_comment():
    tokens = _real_tokens(SHIPPED)
    assert len(tokens) == len(SHIPPED)
    for path in SHIPPED:
        got = tokens[str(path)]
        expected = _expected(path.read_text())
        assert expected
        got_kinds = [(line, text, kind) for line, text, scope in got
                     for kind, s in KIND_SCOPE.items() if s == scope]
        assert got_kinds == expected, path
        unscoped = [(line, text) for line, text, scope in got if scope == "source.cnnspec"]
        assert unscoped == [], path
