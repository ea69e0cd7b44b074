"""Repository context: the workspace index, what it adds to a prompt, and the prompt head warmed when a file opens."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from lsprotocol import types
from pygls.workspace import Workspace

from ingle.adapters.cli.engine_access import EngineChoice
from ingle.core.engine import Engine
from ingle.core.generation import ContextChunk
from ingle.core.settings import Settings
from ingle.lsp.prompt import Anchors, Cursor, build_prompt
from ingle.lsp.repository import RepositoryIndex, file_context, repository_chunks
from ingle.lsp.server import IngleLanguageServer, create_server
from ingle.lsp.settings import CompletionSettings

from .servers import poll
from .test_lsp_cancel import server_on

GEOMETRY = '''"""Shapes."""

import math

SCALE = 2.0


def area(radius: float) -> float:
    """The area of a circle."""
    return math.pi * radius**2 * SCALE


def perimeter(radius: float) -> float:
    return 2 * math.pi * radius


class Point:
    """A point in the plane."""

    x: float
    y: float

    def distance(self, other: "Point") -> float:
        """How far apart two points are."""
        return math.hypot(self.x - other.x, self.y - other.y)
'''

REPORT = """from shapes.geometry import Point, area, perimeter
from shapes import geometry

def describe(radius):
    total = area(radius) + area(radius * 2)
    origin = Point()
    return f"{total} {geometry.SCALE}"
"""


def workspace_index(tmp_path: Path) -> RepositoryIndex:
    (tmp_path / "shapes").mkdir()
    (tmp_path / "shapes" / "__init__.py").write_text("")
    (tmp_path / "shapes" / "geometry.py").write_text(GEOMETRY)
    (tmp_path / "shapes" / "report.py").write_text(REPORT)
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "noise.py").write_text("def area(): pass\n")
    index = RepositoryIndex()
    assert index.scan(tmp_path) == 3, "the virtual environment is skipped"
    return index


def test_the_definitions_a_file_imports_and_uses_most_used_first(tmp_path: Path) -> None:
    index = workspace_index(tmp_path)
    used = index.definitions_used_by("shapes/report.py", REPORT.split("\n"))
    # area is used twice; SCALE and Point once each (ties in file order); perimeter is imported, not used.
    assert [definition.name for definition in used] == ["area", "SCALE", "Point"]
    assert all(definition.path == "shapes/geometry.py" for definition in used)
    area_text = used[0].text
    assert area_text.startswith("def area(radius: float) -> float:") and '"""The area of a circle."""' in area_text
    assert "return" not in area_text, "signatures and docstrings, not bodies"
    point = used[2].text
    assert 'def distance(self, other: "Point") -> float:' in point and "hypot" not in point


def test_the_budget_keeps_the_most_used_and_the_order_is_stable(tmp_path: Path) -> None:
    index = workspace_index(tmp_path)
    used = index.definitions_used_by("shapes/report.py", REPORT.split("\n"))
    small = repository_chunks(used, token_budget=30)
    assert len(small) == 1 and "def area" in small[0].text and "class Point" not in small[0].text
    whole = repository_chunks(used, token_budget=1000)
    assert [chunk.filename for chunk in whole] == ["shapes/geometry.py"]
    # In file order, whatever the ranking: the same definitions always make the same prompt text.
    text = whole[0].text
    assert text.index("SCALE") < text.index("def area") < text.index("class Point")
    assert repository_chunks(list(reversed(used)), token_budget=1000) == whole


def test_a_file_that_does_not_parse_keeps_its_last_definitions(tmp_path: Path) -> None:
    index = workspace_index(tmp_path)
    index.update(
        "shapes/geometry.py", GEOMETRY.replace("def perimeter(radius: float) -> float:", "def perimeter(radius")
    )
    assert index.definitions_used_by("shapes/report.py", REPORT.split("\n"))[0].name == "area"
    index.update("shapes/geometry.py", GEOMETRY.replace("def area(", "def surface("))
    names = [definition.name for definition in index.definitions_used_by("shapes/report.py", REPORT.split("\n"))]
    assert "area" not in names, "a renamed definition is gone once the file parses again"
    index.remove("shapes/geometry.py")
    assert index.definitions_used_by("shapes/report.py", REPORT.split("\n")) == []


def test_definitions_are_read_with_the_line_breaks_python_and_lsp_count(tmp_path: Path) -> None:
    index = workspace_index(tmp_path)
    # An editor's text with old Mac line endings, a page break and a line separator inside a docstring: Python
    # breaks lines only at \n, \r\n and \r, as LSP does.
    source = GEOMETRY.replace("circle.", "circle,\u2028in square units.").replace("\n\n\ndef", "\n\x0c\n\ndef")
    index.update("shapes/geometry.py", source.replace("\n", "\r"))
    area = index.definitions_used_by("shapes/report.py", REPORT.split("\n"))[0]
    assert area.text == 'def area(radius: float) -> float:\n    """The area of a circle,\u2028in square units."""'


def test_repository_context_comes_first_and_holds_the_file_imports(tmp_path: Path) -> None:
    index = workspace_index(tmp_path)
    lines = REPORT.split("\n")
    context = file_context(index, "shapes/report.py", lines, token_budget=1000, imports=True)
    assert [chunk.filename for chunk in context] == ["shapes/geometry.py", "shapes/report.py"]
    assert context[1].text == "from shapes.geometry import Point, area, perimeter\nfrom shapes import geometry\n"
    assert file_context(index, "shapes/report.py", lines, token_budget=0, imports=False) == []
    ring = [ContextChunk(text="edited\n", filename="b.py")]
    many = [*lines, *[f"value_{index} = {index}" for index in range(60)]]
    far = build_prompt(Cursor("shapes/report.py", many, 50, 0), Anchors(), ring, CompletionSettings(), context)
    near_top = build_prompt(Cursor("shapes/report.py", many, 5, 0), Anchors(), ring, CompletionSettings(), context)
    assert far.chunks[:3] == near_top.chunks[:3] == [*context, *ring], "the head does not change with the cursor"


# --- in the language server, on the real model ----------------------------------------------

# Enough definitions (about 300 tokens) that evaluating them again would show in the counts.
SCALING = "".join(
    f'def scale_{index}(value: float, factor: float = {index}.5) -> float:\n    """Scale by {index}.5."""\n'
    f"    return value * factor\n\n\n"
    for index in range(10)
)
TABLE = "from shapes.scaling import " + ", ".join(f"scale_{index}" for index in range(10)) + "\n\n\n"
TABLE += "def table(value):\n" + "".join(f"    row_{index} = scale_{index}(value)\n" for index in range(10))
TABLE += "    return \n"


def server_on_workspace(root: Path, *more_folders: Path) -> IngleLanguageServer:
    """A language server with `root` as its workspace (and `more_folders`, as workspace folders after it) and no
    engine (nothing here completes)."""
    server = create_server(Settings(home=root / "home"), EngineChoice(embedded=True))
    folders = [types.WorkspaceFolder(folder.as_uri(), folder.name) for folder in (root, *more_folders)]
    server.protocol._workspace = Workspace(root.as_uri(), workspace_folders=folders if more_folders else None)
    server.protocol.client_capabilities = types.ClientCapabilities()
    return server


async def scanned(server: IngleLanguageServer) -> None:
    """Index the server's workspace folders, and wait (bounded) until that is done."""
    server.scan_workspace()
    assert server._scan is not None
    await asyncio.wait_for(server._scan, 30)


async def until_idle(engine: Engine) -> None:
    """Poll (bounded generously: the machine may be busy) until no request holds a sequence."""
    assert await poll(lambda: not any(stats.active or stats.waiting for stats in engine.queue_stats()), 120)


def open_file(server, path: Path) -> str:
    uri = path.as_uri()
    server.workspace.put_text_document(types.TextDocumentItem(uri, "python", 1, path.read_text()))
    server.opened(uri)
    return uri


@pytest.mark.slow
async def test_a_newly_opened_file_is_warmed_and_its_first_suggestion_evaluates_only_the_cursor_window(
    engine: Engine, tmp_path: Path
) -> None:
    workspace_index(tmp_path)
    (tmp_path / "shapes" / "scaling.py").write_text(SCALING)
    (tmp_path / "shapes" / "table.py").write_text(TABLE)
    server = server_on(engine)
    server.protocol._workspace = Workspace(tmp_path.as_uri())
    server.configure({"maxLines": 1, "repositoryTokens": 512})
    await scanned(server)
    uri = open_file(server, tmp_path / "shapes" / "table.py")
    repository = server.repository_for(uri)
    assert [chunk.filename for chunk in repository] == ["shapes/scaling.py", "shapes/table.py"]
    assert "def scale_9" in repository[0].text and repository[1].text.startswith("from shapes.scaling import")
    await asyncio.wait_for(server.warming[uri], 60)
    first = await asyncio.wait_for(server.complete(uri, types.Position(TABLE.count("\n") - 1, 11)), 60)
    assert first is not None and not first.from_cache
    # The definitions were evaluated when the file opened, not for this request: only the window is new.
    assert 0 < first.evaluated_tokens < 200, first.evaluated_tokens

    # Opening another file neither changes the context ring nor the first file's repository context.
    ring_before = server.ring.chunks_for("shapes/table.py")
    other = open_file(server, tmp_path / "shapes" / "geometry.py")
    assert server.ring.chunks_for("shapes/table.py") == ring_before
    assert server.repository_for(uri) == repository
    for document in (uri, other):
        server.forget(document)  # what closing does: what still runs for them stops and frees its sequence
    await until_idle(engine)


async def test_files_changed_on_disk_are_indexed_again_and_deleted_ones_forgotten(tmp_path: Path) -> None:
    workspace_index(tmp_path)
    server = server_on_workspace(tmp_path)
    await scanned(server)
    report = REPORT.split("\n")
    geometry = tmp_path / "shapes" / "geometry.py"
    geometry.write_text(GEOMETRY.replace("def area(", "def surface("))
    await server.file_changed(geometry.as_uri(), deleted=False)
    assert "area" not in [item.name for item in server.index.definitions_used_by("shapes/report.py", report)]
    geometry.unlink()
    await server.file_changed(geometry.as_uri(), deleted=True)
    assert server.index.definitions_used_by("shapes/report.py", report) == []
