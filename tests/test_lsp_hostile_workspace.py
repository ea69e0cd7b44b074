"""The workspace index on hostile workspaces: links to devices, FIFOs, pipes, files too deep for Python's parser,
trees too deep to walk, generated files of huge size, files outside the root. Each is skipped or bounded, said
once in the log; the rest of the workspace is still indexed, and nothing blocks the server or its exit.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from lsprotocol import types

from ingle.lsp.repository import RepositoryIndex
from ingle.lsp.server import IngleLanguageServer
from ingle.lsp.snippets import SnippetIndex
from ingle.lsp.symbols import MAX_FILE_NAMES
from ingle.lsp.workspace_files import MAX_DEPTH, MAX_FILE_BYTES, read_source

from .test_lsp_repository import server_on_workspace

HELPERS = 'def parse_config(path: str) -> dict:\n    """Read the TOML config at path."""\n    return {}\n'
MAIN = "from helpers import parse_config\n\nconfig = parse_config('x')\n"
# What a generated file can hold that Python's parser cannot take: RecursionError, and MemoryError.
DEEP_SUM = "TOTAL = 1" + " + 1" * 5000 + "\n"
DEEP_NEGATION = "VALUE = " + "-" * 10_000 + "1\n"
# Of a blocked read, only the code before the fix waits: these let it go, so a failing run still ends.
BOUNDED = 10


def release(fifo: Path) -> None:
    """Let a reader blocked on the FIFO see its end."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:  # ENXIO: no reader waits on it, as it should be
        pass


def quiet_server(root: Path, *more_folders: Path) -> IngleLanguageServer:
    """A server on `root` (and `more_folders`) that does not warm prompt heads (it has no engine to warm them on)."""
    server = server_on_workspace(root, *more_folders)
    server.configure({"warmOnOpen": False})
    return server


def open_text(server: IngleLanguageServer, path: Path, text: str) -> str:
    uri = path.as_uri()
    server.workspace.put_text_document(types.TextDocumentItem(uri, "python", 1, text))
    server.opened(uri)
    return uri


def said(caplog: pytest.LogCaptureFixture, needle: str) -> list[str]:
    return [record.getMessage() for record in caplog.records if needle in record.getMessage()]


# --- special files ------------------------------------------------------------------------------


async def test_the_scan_skips_fifos_and_pipes_and_indexes_the_rest(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "a_pipe.py")
    # A link to a pipe the server holds (as /dev/stdin is its protocol's): reading it would steal its bytes.
    read_end, write_end = os.pipe()
    os.write(write_end, b"Content-Length: 2\r\n\r\n{}")
    (tmp_path / "a_stdin.py").symlink_to(f"/proc/self/fd/{read_end}")
    (tmp_path / "helpers.py").write_text(HELPERS)
    (tmp_path / "main.py").write_text(MAIN)
    server = quiet_server(tmp_path)
    try:
        server.scan_workspace()
        assert server._scan is not None
        assert await asyncio.wait_for(server._scan, BOUNDED) == 2
    finally:
        release(tmp_path / "a_pipe.py")
        os.close(write_end)
    assert os.read(read_end, 100) == b"Content-Length: 2\r\n\r\n{}", "the pipe's reader still gets its bytes"
    os.close(read_end)
    assert sorted(server.index.files) == ["helpers.py", "main.py"]
    used = server.index.definitions_used_by("main.py", MAIN.split("\n"))
    assert [definition.name for definition in used] == ["parse_config"]


def test_a_link_to_a_device_is_not_read(tmp_path: Path) -> None:
    # A clone can hold `evil.py -> /dev/zero`, which says it is empty and never ends.
    (tmp_path / "evil.py").symlink_to("/dev/zero")
    (tmp_path / "helpers.py").write_text(HELPERS)
    index = RepositoryIndex()
    assert index.scan(tmp_path) == 1
    assert sorted(index.files) == ["helpers.py"]


def test_no_more_than_the_limit_is_read_whatever_the_size_says(tmp_path: Path) -> None:
    kallsyms = Path("/proc/kallsyms")  # a regular file that says it holds 0 bytes and holds megabytes
    try:
        with kallsyms.open("rb") as handle:
            big = len(handle.read(MAX_FILE_BYTES + 1)) > MAX_FILE_BYTES
    except OSError:
        big = False
    if not big:
        pytest.skip("no /proc/kallsyms of over a megabyte here")
    (tmp_path / "symbols.py").symlink_to(kallsyms)
    assert (tmp_path / "symbols.py").stat().st_size == 0
    assert read_source(tmp_path / "symbols.py") is None
    small = tmp_path / "small.py"
    small.write_bytes(b"A = 1\r\nB = 2\rC = 3\n")
    assert read_source(small) == "A = 1\nB = 2\nC = 3\n", "line breaks as Python reads them"


async def test_watcher_events_for_special_files_or_files_outside_do_not_block_or_count(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "helpers.py").write_text(HELPERS)
    (workspace / "main.py").write_text(MAIN)
    server = quiet_server(workspace)
    fifos = [workspace / "pipe_inside.py", tmp_path / "pipe_outside.py"]
    for fifo in fifos:
        os.mkfifo(fifo)
    read_end, write_end = os.pipe()
    os.write(write_end, b"Content-Length: 2\r\n\r\n{}")
    (workspace / "stdin.py").symlink_to(f"/proc/self/fd/{read_end}")
    big = tmp_path / "big.py"  # outside the workspace, and over the limit
    big.write_text("A = 1\n" * (MAX_FILE_BYTES // 5))
    uris = [fifo.as_uri() for fifo in fifos] + [(workspace / "stdin.py").as_uri(), f"file:///proc/self/fd/{read_end}"]
    try:
        for uri in [*uris, *uris, *uris]:  # more than the default executor has threads
            await asyncio.wait_for(server.file_changed(uri, deleted=False), BOUNDED)
        # The default executor, where the engine prepares every prompt, is free.
        await asyncio.wait_for(asyncio.to_thread(lambda: None), BOUNDED)
        await asyncio.wait_for(server.file_changed(big.as_uri(), deleted=False), BOUNDED)
        await server.file_changed((workspace / "helpers.py").as_uri(), deleted=False)
    finally:
        for fifo in fifos:
            release(fifo)
        os.close(write_end)
    assert os.read(read_end, 100) == b"Content-Length: 2\r\n\r\n{}", "the pipe's reader still gets its bytes"
    os.close(read_end)
    assert sorted(server.index.files) == ["helpers.py"]


SCAN_AT_EXIT = """
import asyncio, sys, threading
from pathlib import Path
from lsprotocol import types
from pygls.workspace import Workspace
from ingle.adapters.cli.engine_access import EngineChoice
from ingle.core.settings import Settings
from ingle.lsp.server import create_server

async def main(root: Path) -> None:
    server = create_server(Settings(home=root / "home"), EngineChoice(embedded=True))
    server.protocol._workspace = Workspace(root.as_uri())
    server.protocol.client_capabilities = types.ClientCapabilities()
    # A folder on a network mount that stopped answering: the scan never ends.
    server.index.scan = lambda *args: threading.Event().wait()
    server.scan_workspace()
    await asyncio.sleep(0.2)

asyncio.run(main(Path(sys.argv[1])))
print("exited", flush=True)
"""


def test_a_scan_still_running_does_not_keep_the_process_alive(tmp_path: Path) -> None:
    try:
        done = subprocess.run(
            [sys.executable, "-c", SCAN_AT_EXIT, str(tmp_path)], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the process did not end while the workspace scan was running")
    assert done.returncode == 0 and done.stdout == "exited\n", done.stderr
    assert "Traceback" not in done.stderr, done.stderr


# --- files and folders too deep -----------------------------------------------------------------


def deep_tree(top: Path, levels: int) -> None:
    """`top/d/d/…/d`, made one level at a time (os.makedirs recurses)."""
    top.mkdir()
    descriptor = os.open(top, os.O_RDONLY)
    for _ in range(levels):
        os.mkdir("d", dir_fd=descriptor)
        below = os.open("d", os.O_RDONLY, dir_fd=descriptor)
        os.close(descriptor)
        descriptor = below
    os.close(descriptor)


def remove_deep_tree(top: Path, levels: int) -> None:
    """Remove what deep_tree made (shutil.rmtree recurses too, and pytest's clean-up with it)."""
    descriptors = [os.open(top, os.O_RDONLY)]
    for _ in range(levels - 1):
        descriptors.append(os.open("d", os.O_RDONLY, dir_fd=descriptors[-1]))
    for descriptor in reversed(descriptors):
        os.rmdir("d", dir_fd=descriptor)
        os.close(descriptor)
    top.rmdir()


def test_a_file_or_a_tree_too_deep_leaves_out_only_itself(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "a_sum.py").write_text(DEEP_SUM)
    (tmp_path / "a_negation.py").write_text(DEEP_NEGATION)
    deep_tree(tmp_path / "a_deep", 1100)  # Python 3.11's os.walk recurses once a level
    (tmp_path / "helpers.py").write_text(HELPERS)
    (tmp_path / "z_last").mkdir()
    (tmp_path / "z_last" / "main.py").write_text(MAIN)
    index = RepositoryIndex()
    try:
        with caplog.at_level(logging.INFO, logger="ingle.lsp"):
            index.scan(tmp_path)
            index.scan(tmp_path)  # again: the files are said once
    finally:
        remove_deep_tree(tmp_path / "a_deep", 1100)
    assert sorted(index.files) == ["helpers.py", "z_last/main.py"]
    assert len(said(caplog, "a_sum.py")) == len(said(caplog, "a_negation.py")) == 1
    assert len(said(caplog, f"{MAX_DEPTH} levels deep")) == 2, "once a scan"
    assert not any(record.exc_info for record in caplog.records)


async def test_an_open_document_too_deep_to_parse_does_not_stop_completion_elsewhere(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = quiet_server(tmp_path)
    with caplog.at_level(logging.WARNING, logger="ingle.lsp"):
        open_text(server, tmp_path / "helpers.py", HELPERS)
        deep = open_text(server, tmp_path / "generated.py", DEEP_SUM)
        main = open_text(server, tmp_path / "main.py", MAIN)
        # Edited, then a completion in the other document indexes it again; so does a save.
        server.edited_lines[deep] = 1
        server.take_edited_chunks(except_uri=main)
        server.index_document(deep)
    assert len(said(caplog, "generated.py")) == 1
    assert "generated.py" not in server.index.files
    assert [definition.name for definition in server.index.definitions_used_by("main.py", MAIN.split("\n"))] == [
        "parse_config"
    ]


# --- memory -------------------------------------------------------------------------------------


def held_by(build: Callable[[], object]) -> int:
    """Bytes what `build()` returns holds: freed when it goes (not what building it left in Python's caches)."""
    tracemalloc.start()
    try:
        kept = build()
        with_it = tracemalloc.get_traced_memory()[0]
        del kept
        gc.collect()
        without = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return with_it - without


def test_a_generated_file_of_many_definitions_is_held_in_bounded_memory(tmp_path: Path) -> None:
    # Just under 1 MB of short assignments: 90,000 definitions, 15 MB held before the bound.
    (tmp_path / "constants.py").write_text("".join(f"v{number} = {number}\n" for number in range(90_000))[:999_000])

    def build() -> RepositoryIndex:
        index = RepositoryIndex(snippets=SnippetIndex(max_lines=0))
        index.scan(tmp_path)
        return index

    assert held_by(build) < 1_000_000
    index = build()
    definitions = index.files["constants.py"].definitions
    assert len(definitions) == MAX_FILE_NAMES and definitions[0].name == "v0", "the first ones are kept"


def test_lines_too_long_to_be_context_are_not_held(tmp_path: Path) -> None:
    # Serialized data (protobuf style): a few lines of 180 kB each, 4.5 MB held before the bound.
    for number in range(5):
        (tmp_path / f"data_{number}.py").write_text(
            "".join(f"DATA{j} = b'" + "\\x0a" * 45_000 + "'\n" for j in range(5))
        )

    def build() -> RepositoryIndex:
        index = RepositoryIndex()
        index.scan(tmp_path)
        return index

    assert held_by(build) < 500_000


def functions(prefix: str) -> str:
    """Forty short functions: some 12 kB of definitions by the index's measure, 90 kB of snippet lines."""
    return "".join(f"def {prefix}_{number}(value: int) -> int:\n    return value\n\n" for number in range(40))


def test_the_index_keeps_to_its_byte_budgets_files_first_seen_first(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    main = "from helpers import helper_0\n\nhelper_0(1)\n\n" + functions("main")
    index = RepositoryIndex(max_symbol_bytes=20_000)
    with caplog.at_level(logging.WARNING, logger="ingle.lsp"):
        index.update("helpers.py", functions("helper"))
        index.update("main.py", main)
        index.update("late.py", functions("late"))
        index.update("main.py", main)
    assert len(index.files["helpers.py"].definitions) == 40
    assert 0 < len(index.files["main.py"].definitions) < 40, "what fits of a later file"
    assert index.files["late.py"].definitions == ()
    used = index.definitions_used_by("main.py", main.split("\n"))
    assert [definition.name for definition in used] == ["helper_0"], "its imports come first"
    assert len(said(caplog, "index is full")) == 1
    index.remove("helpers.py")
    index.update("late.py", functions("late"))
    assert len(index.files["late.py"].definitions) > 30, "a removed file's room is free again"

    snippets = SnippetIndex(max_bytes=150_000)
    lines = functions("helper").split("\n")
    snippets.update("helpers.py", lines)
    snippets.update("late.py", functions("late").split("\n"))
    found = snippets.similar("x.py", lines[:6], 6, 400)
    assert found and {chunk.filename for chunk in found} == {"helpers.py"}


# --- files outside the workspace root -----------------------------------------------------------


async def test_a_file_outside_the_root_never_stands_for_a_workspace_file(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "helpers.py").write_text(HELPERS)
    (workspace / "main.py").write_text(MAIN)
    elsewhere = tmp_path / "elsewhere" / "helpers.py"
    elsewhere.parent.mkdir()
    elsewhere.write_text("def unrelated(a, b):\n    return a - b\n")
    server = quiet_server(workspace)
    server.scan_workspace()
    assert server._scan is not None
    await asyncio.wait_for(server._scan, BOUNDED)

    def used() -> list[tuple[str, str]]:
        found = server.index.definitions_used_by("main.py", MAIN.split("\n"))
        return [(definition.path, definition.name) for definition in found]

    assert used() == [("helpers.py", "parse_config")]
    # Go-to-definition into another project opens its helpers.py; a watcher reports it changed, then deleted.
    uri = open_text(server, elsewhere, elsewhere.read_text())
    assert used() == [("helpers.py", "parse_config")]
    await server.file_changed(uri, deleted=False)
    server.forget(uri)
    await server.file_changed(uri, deleted=True)
    assert used() == [("helpers.py", "parse_config")]
    # Nor in the context ring, the cache or the snippets, which go by the name the model sees.
    assert server.filename(uri) == str(elsewhere)
    # A path that only looks inside.
    sneaky = (workspace / ".." / "elsewhere" / "helpers.py").as_uri()
    await server.file_changed(sneaky, deleted=True)
    assert used() == [("helpers.py", "parse_config")]
