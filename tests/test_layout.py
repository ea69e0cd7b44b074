"""The dependency rules of DESIGN.md hold: core imports nothing of ours, adapters only core, and so on."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EDGE_LIBRARIES = ("aiohttp", "pygls", "lsprotocol", "slack_bolt", "slack_sdk", "telegram")

# folder -> the ingle packages its modules may import
ALLOWED = {
    "core": {"core"},
    "adapters": {"core", "adapters"},
    "lsp": {"core", "adapters", "lsp"},
    "bots": {"core", "adapters", "bots"},
}


def imported_modules(path: Path) -> set[str]:
    """Absolute module names a source file imports (relative imports resolved against its package)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ["ingle", *path.relative_to(ROOT).with_suffix("").parts[:-1]]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                names.add(".".join(base + ([node.module] if node.module else [])))
            else:
                names.add(node.module or "")
    return names


def sources(folder: str) -> list[Path]:
    """The Python files of one top-level folder."""
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_folders_import_only_what_the_design_allows(folder: str) -> None:
    for path in sources(folder):
        for module in imported_modules(path):
            parts = module.split(".")
            if parts[0] == "ingle" and len(parts) > 1:
                assert parts[1] in ALLOWED[folder], f"{path.relative_to(ROOT)} imports {module}"


def test_core_never_imports_an_edge_library() -> None:
    for path in sources("core"):
        for module in imported_modules(path):
            assert module.split(".")[0] not in EDGE_LIBRARIES, f"{path.relative_to(ROOT)} imports {module}"


def test_every_package_folder_is_listed_for_the_install() -> None:
    # Only the packages pyproject.toml lists go into the wheel and the editable install's link tree.
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {
        ".".join(["ingle", *init.relative_to(ROOT).parent.parts])
        for top in ALLOWED
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert folders == set(setuptools["packages"])
    assert setuptools["package-dir"] == {f"ingle.{top}": top for top in ALLOWED}


def test_importing_the_engine_loads_no_edge_library() -> None:
    probe = (
        "import sys, ingle.core.engine, ingle.core.pull;"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {EDGE_LIBRARIES!r}))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
