"""Bad specs and the exact text users see for them (sqlglot-style fixtures).

Each `tests/errors/NAME.cnn` must fail to parse or check, and `str(SpecError)` must equal
`tests/errors/NAME.expected` (file:line:col, source line, caret, hint). The filename in the
message is the bare `NAME.cnn`, so the fixtures do not depend on where the repository lives.

After changing a message on purpose, regenerate and review the diff:

    CNNSPEC_REGEN=1 python -m pytest tests/test_error_fixtures.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import cnnspec

ERRORS = Path(__file__).parent / "errors"
CASES = sorted(ERRORS.glob("*.cnn"))
REGEN = os.environ.get("CNNSPEC_REGEN") == "1"


def render(path: Path) -> str:
    text = path.read_text("utf-8")
    try:
        cnnspec.check(cnnspec.parse(text, filename=path.name))
    except cnnspec.SpecError as exc:
        return str(exc) + "\n"
    pytest.fail(f"{path.name} is accepted, but it is an error fixture")


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_error_message(path):
    got = render(path)
    expected_path = path.with_suffix(".expected")
    if REGEN:
        expected_path.write_text(got, "utf-8")
    assert expected_path.exists(), f"no {expected_path.name}; run with CNNSPEC_REGEN=1"
    assert got == expected_path.read_text("utf-8")


def test_there_are_fixtures_and_each_has_its_expectation():
    assert len(CASES) >= 12
    expected = {p.stem for p in ERRORS.glob("*.expected")}
    assert expected == {p.stem for p in CASES}
