"""The package's layers, read from the source: each sub-package imports only those below it.

The order is the pipeline's (README, "What is here"): language → backend → training →
experiments → cli, with `editor` beside them on the language alone. Imports are read with `ast`
(top-level and inside functions alike), so a lazy import that climbs a layer fails here too.
That every module imports on its own, with no circle, is tests/test_exp_imports.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dsl"
ORDER = ("language", "backend", "training", "experiments", "cli")
# what each layer may import from cnnspec, besides itself and the package root's leaves
ALLOWED = {layer: set(ORDER[: i + 1]) for i, layer in enumerate(ORDER)}
ALLOWED["editor"] = {"language", "editor"}
ALLOWED["cli"] |= {"editor"}  # `cnnspec lsp` starts the language server
ROOT_LEAVES = {"failures", "__version__", "grammar", "sample_data"}


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        found.append((".".join(["cnnspec", *parts]), path))
    return found


def _imports(path: Path) -> list[str]:
    """Every module name an `import` or `from … import` in the file names (absolute imports)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{a.name}" for a in node.names]
    return names


def _layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) >= 2 and parts[1] in ALLOWED else None


MODULES = _modules()


def test_the_package_folders_are_the_layers_of_the_pipeline():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert set(ORDER) | {"editor"} <= folders
    # no module of the pipeline left loose at the top beside the layers
    loose = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__", "failures"}
    assert not loose, f"modules outside a layer: {sorted(loose)}"


@pytest.mark.parametrize("module,path", MODULES, ids=[m for m, _ in MODULES])
def test_a_module_imports_only_its_own_layer_and_those_below(module, path):
    layer = _layer_of(module)
    if layer is None:  # the package root, __main__, failures
        return
    for name in _imports(path):
        if not name.startswith("cnnspec.") or name.split(".")[1] in ROOT_LEAVES:
            continue
        target = name.split(".")[1]
        if target not in ALLOWED:  # `from cnnspec import parse` and the other root functions
            continue
        assert target in ALLOWED[layer], f"{module} ({layer}) imports {name} ({target})"


@pytest.mark.parametrize("module,path", MODULES, ids=[m for m, _ in MODULES])
def test_argparse_and_rich_are_for_the_cli_only(module, path):
    if _layer_of(module) in (None, "cli"):  # the CLI, __main__, the sample's maintenance script
        return
    imported = {n.split(".")[0] for n in _imports(path)}
    assert "argparse" not in imported, f"{module} imports argparse"
    assert "rich" not in imported, f"{module} imports rich (the progress bar is the CLI's)"

