"""The VS Code extension: declared for every file type, with its settings, and packaged (`make vsix`)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from ingle.lsp.settings import CompletionSettings

EXTENSION = Path(__file__).resolve().parent.parent / "lsp" / "vscode"


def test_the_extension_declares_its_settings_and_runtime_dependency() -> None:
    package = json.loads((EXTENSION / "package.json").read_text())
    settings = package["contributes"]["configuration"]["properties"]
    assert {"ingle.daemonUrl", "ingle.apiKey", "ingle.model"} <= set(settings)
    assert "vscode-languageclient" in package["dependencies"]
    assert "@vscode/vsce" in package["devDependencies"]
    source = (EXTENSION / "src" / "extension.ts").read_text()
    assert '{ scheme: "file" }' in source and '"lsp"' in source


def test_the_extensions_defaults_are_the_servers() -> None:
    # VS Code sends what the user left at its default too: a default that drifted would override the server's.
    properties = json.loads((EXTENSION / "package.json").read_text())["contributes"]["configuration"]["properties"]
    server = CompletionSettings().model_dump(by_alias=True)
    shared = {key.removeprefix("ingle."): spec["default"] for key, spec in properties.items()}
    shared = {key: default for key, default in shared.items() if key in server}
    assert {"maxLines", "repositoryTokens", "snippetTokens"} <= set(shared)
    assert shared == {key: server[key] for key in shared}


def test_the_packaged_vsix_holds_the_compiled_extension_and_the_language_client() -> None:
    vsix = EXTENSION / "ingle.vsix"
    if not vsix.exists():
        pytest.skip("lsp/vscode/ingle.vsix is not built here: run `make vsix` (.ci/run does before the tests)")
    names = set(zipfile.ZipFile(vsix).namelist())
    assert "extension/out/extension.js" in names
    assert "extension/node_modules/vscode-languageclient/package.json" in names
    assert not any(name.startswith("extension/src/") for name in names)
