"""Workspaces of several folders: every folder is indexed, and the index follows the folders the editor adds and
removes (`workspace/didChangeWorkspaceFolders`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from lsprotocol import types
from pygls.workspace import Workspace

from ingle.lsp.workspace_folders import WorkspaceFolders

from .servers import poll
from .test_lsp_hostile_protocol import ANSWER_SECONDS, start_raw
from .test_lsp_hostile_workspace import BOUNDED, open_text, quiet_server
from .test_lsp_repository import GEOMETRY, REPORT


def two_folders(tmp_path: Path) -> tuple[Path, Path]:
    """An application folder whose report uses a library that lives in a second folder."""
    app, lib = tmp_path / "app", tmp_path / "lib"
    (lib / "shapes").mkdir(parents=True)
    (lib / "shapes" / "__init__.py").write_text("")
    (lib / "shapes" / "geometry.py").write_text(GEOMETRY)
    app.mkdir()
    (app / "report.py").write_text(REPORT)
    return app, lib


def test_files_of_two_folders_never_go_by_the_same_name(tmp_path: Path) -> None:
    one, two = tmp_path / "app" / "src", tmp_path / "lib" / "src"
    given = [one, two, one / "pkg", two / "." / ".." / "src"]
    workspace = Workspace(None, workspace_folders=[types.WorkspaceFolder(path.as_uri(), path.name) for path in given])
    folders = WorkspaceFolders.of(workspace)
    assert [folder.prefix for folder in folders.folders] == ["src", "src-2", "pkg"], "the same folder counts once"
    assert folders.name_of(str(one / "setup.py")) == "src/setup.py"
    assert folders.name_of(str(two / "setup.py")) == "src-2/setup.py"
    assert folders.name_of(str(one / "pkg" / "mod.py")) == "src/pkg/mod.py", "a file in two folders: by the first"
    assert folders.name_of(str(one / ".." / "outside.py")) is None
    # One folder, from the root: names as they always were.
    assert WorkspaceFolders.of(Workspace(one.as_uri())).name_of(str(one / "pkg" / "mod.py")) == "pkg/mod.py"


async def test_a_second_folder_gives_its_definitions_and_a_removed_one_takes_them_away(tmp_path: Path) -> None:
    # Only the root was indexed: what the report uses from the library in the second folder never reached its prompt.
    app, lib = two_folders(tmp_path)
    server = quiet_server(app, lib)
    server.scan_workspace()
    assert server._scan is not None
    assert await asyncio.wait_for(server._scan, BOUNDED) == 3
    uri = open_text(server, app / "report.py", REPORT)
    context = server.repository_for(uri)
    # Each file goes by its folder's name and its path there: both folders could hold a `setup.py`.
    assert [chunk.filename for chunk in context] == ["lib/shapes/geometry.py", "app/report.py"]
    assert "def area(radius: float) -> float:" in context[0].text

    server.workspace.remove_folder(lib.as_uri())  # what pygls does with the editor's notification, before ours
    server.folders_changed()
    assert server._scan is not None
    assert await asyncio.wait_for(server._scan, BOUNDED) == 1
    assert sorted(server.index.files) == ["report.py"], "one folder: names without its name"
    assert [chunk.filename for chunk in server.repository_for(uri)] == ["report.py"]
    assert server.index.definitions_used_by("report.py", REPORT.split("\n")) == []


async def test_the_server_follows_the_editor_adding_and_removing_folders(tmp_path: Path) -> None:
    app, lib = two_folders(tmp_path)
    server = await start_raw(tmp_path / "home", tmp_path, "--verbose")
    try:
        folders = [{"uri": app.as_uri(), "name": "app"}, {"uri": lib.as_uri(), "name": "lib"}]
        result = await server.initialize({"warmOnOpen": False}, rootUri=app.as_uri(), workspaceFolders=folders)
        supported = result["capabilities"]["workspace"]["workspaceFolders"]
        assert supported == {"supported": True, "changeNotifications": True}, supported

        def indexed(count: int) -> int:
            return server.log().count(f"indexed {count} files of the workspace")

        assert await poll(lambda: indexed(3) == 1, ANSWER_SECONDS), server.log()
        server.notify(types.WORKSPACE_DID_CHANGE_WORKSPACE_FOLDERS, {"event": {"added": [], "removed": folders[1:]}})
        assert await poll(lambda: indexed(1) == 1, ANSWER_SECONDS), server.log()
        server.notify(types.WORKSPACE_DID_CHANGE_WORKSPACE_FOLDERS, {"event": {"added": folders[1:], "removed": []}})
        assert await poll(lambda: indexed(3) == 2, ANSWER_SECONDS), server.log()
        await server.barrier()
        assert not server.tracebacks(), server.log()
    finally:
        await server.close()
