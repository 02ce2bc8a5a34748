"""The Python API (`import cnnspec`) refuses a wrong argument with a clear exception.

A slip such as passing the spec's text to `check` used to fail deep inside with an
AttributeError about a method of str; a Path as `filename` turned a SpecError into an
AttributeError; `SpecError("message")` itself crashed; and `ir.from_json` built whatever the
JSON held, which the checker then trusted (negative parameter counts).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import cnnspec
from cnnspec.language import ir
from cnnspec.language.errors import Diagnostic, Span

GOOD = "conv8 relu gap\n"


def test_a_path_as_filename_names_the_file_in_the_error():
    with pytest.raises(cnnspec.SpecError) as err:
        cnnspec.parse("conv8 cnov gap\n", filename=Path("nets") / "a.cnn")
    assert err.value.filename == str(Path("nets") / "a.cnn")
    assert str(err.value).startswith(f"{Path('nets') / 'a.cnn'}:1:7: error: unknown layer word")


@pytest.mark.parametrize("call, words", [
    (lambda: cnnspec.check(GOOD), ["check()", "not str", "cnnspec.check(cnnspec.parse(text))"]),
    (lambda: cnnspec.format_spec(GOOD), ["format_spec()", "not str"]),
    (lambda: cnnspec.check(None), ["check()", "not NoneType"]),
    (lambda: cnnspec.parse(b"conv8\n"), ["parse()", "not bytes", "cnnspec.load"]),
    (lambda: cnnspec.parse(None), ["parse()", "not NoneType"]),
    (lambda: cnnspec.parse(["conv8"]), ["parse()", "not list"]),
    (lambda: cnnspec.parse(GOOD, name=5), ["name", "not int"]),
    (lambda: cnnspec.parse(GOOD, filename=5), ["filename", "not int"]),
])
def test_a_wrong_argument_is_a_type_error_saying_which(call, words):
    with pytest.raises(TypeError) as err:
        call()
    for word in words:
        assert word in str(err.value)


def test_to_keras_refuses_text_before_importing_tensorflow():
    code = ("import sys, cnnspec\n"
            "try:\n    cnnspec.to_keras('conv8 gap')\n"
            "except TypeError as e:\n    print(e)\n"
            "print('tensorflow' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[0].startswith("to_keras() takes a Spec") and out[1] == "False"


@pytest.mark.parametrize("budget, error", [
    (float("nan"), TypeError), ("1000", TypeError), (True, TypeError), (1e6, TypeError),
    (0, ValueError), (-1, ValueError),
])
def test_max_params_must_be_a_whole_number_of_at_least_one(budget, error):
    spec = cnnspec.parse(GOOD)
    with pytest.raises(error, match="max_params"):
        cnnspec.check(spec, max_params=budget)


def test_a_budget_that_is_a_whole_number_still_works():
    spec = cnnspec.parse(GOOD)
    params = 3 * 3 * 3 * 8 + 8 + 8 * 10 + 10  # conv8, then the implicit dense10
    assert cnnspec.check(spec, max_params=params).params == params
    with pytest.raises(cnnspec.SpecError, match="over the budget"):
        cnnspec.check(spec, max_params=params - 1)


def test_spec_error_takes_a_message_or_a_diagnostic():
    assert str(cnnspec.SpecError("too deep")) == "<spec>: error: too deep"
    one = Diagnostic("bad word", Span(1, 7, 1, 11), "write conv8")
    err = cnnspec.SpecError(one, "conv8 cnov\n", Path("a.cnn"))
    assert (err.line, err.column, err.filename) == (1, 7, "a.cnn")
    assert str(err).splitlines()[0] == "a.cnn:1:7: error: bad word"
    with pytest.raises(TypeError, match="not int"):
        cnnspec.SpecError([1])
    with pytest.raises(ValueError):
        cnnspec.SpecError([])


# -- the IR read back from JSON ----------------------------------------------------------------


def _conv_json(filters: object) -> str:
    data = json.loads(ir.to_json(cnnspec.parse("conv8 gap\n")))
    data["lines"][0]["statement"]["items"][0]["filters"] = filters
    return json.dumps(data)


@pytest.mark.parametrize("filters, words", [
    (-5, ["refuses", "conv-5 gap"]),
    (0, ["conv filters must be at least 1", "conv0 gap"]),
    (8.5, ["whole number", "conv8.5"]),
    ("8", ["refuses"]),  # written as conv8.0: a str is no count of filters
    (None, ["cannot be written as text"]),
])
def test_from_json_refuses_a_spec_parse_would_refuse(filters, words):
    with pytest.raises(ValueError) as err:
        ir.from_json(_conv_json(filters))
    for word in words:
        assert word in str(err.value)


def test_from_json_still_reads_a_good_spec_back_exactly():
    spec = cnnspec.parse("conv8 relu  # note\n\ndrop.25 | dense4\n")
    assert ir.from_json(_conv_json(8)) == cnnspec.parse("conv8 gap\n")
    assert ir.from_json(ir.to_json(spec)) == spec


@pytest.mark.parametrize("text", [
    "{}", "[]", "1", '{"kind": "Foo"}', '{"kind": "Spec", "lines": 1}',
    '{"kind": "Spec", "lines": [], "colour": 1}', "[" * 100_000 + "]" * 100_000,
])
def test_from_json_of_something_else_is_a_value_error(text):
    with pytest.raises(ValueError, match="JSON"):
        ir.from_json(text)


@pytest.mark.parametrize(("field", "value"), [
    ("filename", 5), ("source", 5), ("name", [1]), ("name", 1.5), ("name", None)])
def test_from_json_refuses_a_spec_whose_names_are_not_text(field, value):
    data = json.loads(ir.to_json(cnnspec.parse("conv8 gap\n")))
    data[field] = value
    with pytest.raises(ValueError, match=f"whose {field} is not text"):
        ir.from_json(json.dumps(data))


def test_train_refuses_arguments_of_the_wrong_type_before_anything_runs(tmp_path):
    """The spec's text, a dict for settings, None for the data failed deep inside train()
    with an AttributeError; a hook that is not callable failed only after a whole epoch had
    trained, leaving a "failed" run. Each is a TypeError naming the argument, no folder made,
    no TensorFlow imported (a subprocess, so this process's imports do not count)."""
    script = f"""
import sys
from pathlib import Path
import cnnspec
from cnnspec.language.settings import settings_of
from cnnspec.training.data import load_cifar10
from cnnspec.training.train import evaluate_run, train
spec = cnnspec.parse("conv8 relu pool2 | dense16\\ntrain seed=1")
s, d, out = settings_of(spec).override(epochs=1), load_cifar10(limit=64), Path({str(tmp_path)!r})
cases = [(("conv8 |", s, d, out / "a"), {{}}, "spec is a Spec"),
         ((spec, {{}}, d, out / "b"), {{}}, "settings are TrainSettings"),
         ((spec, s, None, out / "c"), {{}}, "data is a Cifar10"),
         ((spec, s, d, 5), {{}}, "out_dir is a path"),
         ((spec, s, d, out / "e"), {{"steps_per_execution": "2"}}, "steps_per_execution"),
         ((spec, s, d, out / "f"), {{"epoch_hooks": [3]}}, "epoch_hooks are callables"),
         ((spec, s, d, out / "g"), {{"epoch_hooks": None}}, "epoch_hooks are a list"),
         ((spec, s, d, out / "h"), {{"epoch_hooks": print}}, "epoch_hooks are a list"),
         ((spec, s, d, out / "i"), {{"callbacks": None}}, "callbacks are a list")]
for args, kwargs, words in cases:
    try:
        train(*args, **kwargs)
    except TypeError as e:
        assert words in str(e), (words, str(e))
    else:
        raise AssertionError(words)
try:
    evaluate_run(out / "a", None)
except TypeError as e:
    assert "data is a Cifar10" in str(e)
assert "tensorflow" not in sys.modules
assert sorted(out.iterdir()) == []
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.stdout.strip() == "ok", done.stderr[-3000:]


@pytest.mark.parametrize("value", ["conv8 |", None, {"lines": []}])
def test_to_json_takes_a_spec(value):
    """`to_json("conv8 |")` gave '"conv8 |"', which from_json then refused."""
    with pytest.raises(TypeError, match="to_json\\(\\) takes a Spec"):
        ir.to_json(value)


def test_a_numpy_integer_is_a_whole_number_of_steps_per_execution():
    import numpy as np

    from cnnspec.language.settings import settings_of
    from cnnspec.training.data import load_cifar10
    from cnnspec.training.train import _check_argument_types

    spec = cnnspec.parse("conv8 relu pool2 | dense16")
    _check_argument_types(spec, settings_of(spec), load_cifar10(limit=64), "out",
                          np.int64(2), (), ())  # no TypeError
    with pytest.raises(TypeError, match="steps_per_execution is a whole number"):
        _check_argument_types(spec, settings_of(spec), load_cifar10(limit=64), "out",
                              2.0, (), ())
