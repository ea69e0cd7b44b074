"""`ingle lsp` over stdio on hostile JSON-RPC: broken framing, messages that are not quite JSON-RPC or LSP, requests
out of order, edits with odd ranges, big documents, floods of notifications. Each gets one clear answer (or one line
in the log), never a traceback, and the server goes on.

Most of these need no model: the server starts on an empty home, and what is checked is the protocol around the
completion. Those that need the model are marked slow.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types
from pygls.workspace import PositionCodec

from ingle.lsp.documents import LspTextDocument

from .conftest import link_home
from .servers import poll
from .test_lsp_protocol import ANSWER_SECONDS, INGLE, EditorClient, completion, make_client, open_document, start, stop

ADD = "def add(a, b):\n    return \n"
MIB = 1024 * 1024


class RawServer:
    """`ingle lsp --embedded` driven byte by byte, for what pygls's client never sends (it only sends valid LSP)."""

    def __init__(self, process: asyncio.subprocess.Process, workspace: Path) -> None:
        self.process = process
        self.workspace = workspace
        self.received: list[dict[str, Any]] = []
        """Every message from the server, in order (its requests answered with null as they come)."""
        self.stderr: list[str] = []
        self.first_line = 0
        """Where this test's lines start in `stderr` (a server may serve several tests)."""
        self._news = asyncio.Condition()
        self._next_id = 0
        self._tasks = [asyncio.create_task(self._read_messages()), asyncio.create_task(self._read_stderr())]

    async def _read_messages(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        while True:
            try:
                header = await stdout.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            length = next(
                int(line.split(b":")[1]) for line in header.split(b"\r\n") if line.lower().startswith(b"content-length")
            )
            message = json.loads(await stdout.readexactly(length))
            if "method" in message and "id" in message:
                self.send({"jsonrpc": "2.0", "id": message["id"], "result": None})
            async with self._news:
                self.received.append(message)
                self._news.notify_all()

    async def _read_stderr(self) -> None:
        stderr = self.process.stderr
        assert stderr is not None
        async for line in stderr:
            self.stderr.append(line.decode(errors="replace"))

    def send_raw(self, data: bytes) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        stdin.write(data)

    def send(self, message: Any) -> None:
        """One framed message; `message` is sent as JSON, whatever it is."""
        body = json.dumps(message).encode()
        self.send_raw(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def request(self, method: str, params: Any = None) -> int:
        """Send a request; returns its id."""
        self._next_id += 1
        self.send({"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params})
        return self._next_id

    def notify(self, method: str, params: Any) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def answers(self, msg_id: object) -> list[dict[str, Any]]:
        """The server's answers to `msg_id` so far."""
        return [message for message in self.received if "method" not in message and message.get("id") == msg_id]

    async def answer(self, msg_id: object) -> dict[str, Any]:
        """The server's first answer to `msg_id`, waited for (bounded)."""
        async with asyncio.timeout(ANSWER_SECONDS), self._news:
            await self._news.wait_for(lambda: bool(self.answers(msg_id)))
        return self.answers(msg_id)[0]

    async def error(self, msg_id: object) -> dict[str, Any]:
        """The error the server answered `msg_id` with."""
        answer = await self.answer(msg_id)
        assert "error" in answer, answer
        return answer["error"]

    async def barrier(self) -> None:
        """Wait until the server has handled everything sent so far: a request it answers at once."""
        params = {
            "textDocument": {"uri": (self.workspace / "never-opened.py").as_uri()},
            "position": {"line": 0, "character": 0},
        }
        await self.answer(self.request(types.TEXT_DOCUMENT_COMPLETION, params))

    async def initialize(self, options: dict[str, Any] | None = None, **params: Any) -> dict[str, Any]:
        """`initialize` (`params` added to or replacing the defaults), then `initialized`; returns the result."""
        defaults = {"processId": None, "rootUri": self.workspace.as_uri(), "capabilities": {}}
        answer = await self.answer(
            self.request(types.INITIALIZE, defaults | {"initializationOptions": options} | params)
        )
        assert "result" in answer, answer
        self.notify(types.INITIALIZED, {})
        return answer["result"]

    def open(self, name: str, text: str, language: str = "python") -> str:
        uri = (self.workspace / name).as_uri()
        item = {"uri": uri, "languageId": language, "version": 1, "text": text}
        self.notify(types.TEXT_DOCUMENT_DID_OPEN, {"textDocument": item})
        return uri

    def log(self) -> str:
        """The server's stderr during this test."""
        return "".join(self.stderr[self.first_line :])

    def tracebacks(self) -> list[str]:
        return [line for line in self.stderr[self.first_line :] if "Traceback" in line]

    def shown(self) -> list[str]:
        """What the server showed the user (window/showMessage)."""
        return [
            message["params"]["message"] for message in self.received if message.get("method") == "window/showMessage"
        ]

    def peak_memory_mib(self) -> float:
        """The server's largest resident size so far (Linux)."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")) / 1024

    def memory_mib(self) -> float:
        """The server's resident size now (Linux)."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")) / 1024

    async def exited(self) -> int:
        """The server's exit code, waited for (bounded)."""
        return await asyncio.wait_for(self.process.wait(), ANSWER_SECONDS)

    async def close(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        for task in self._tasks:
            task.cancel()


async def start_raw(home: Path, workspace: Path, *options: str) -> RawServer:
    """`ingle [options] lsp --embedded` on `home`, not yet initialized."""
    environment = {
        **os.environ,
        "INGLE_HOME": str(home),
        "INGLE_CONFIG": str(workspace / "no-config.toml"),
        "INGLE_NUM_THREADS": "1",
        "INGLE_NUM_CTX": "2048",
    }
    process = await asyncio.create_subprocess_exec(
        INGLE,
        *options,
        "lsp",
        "--embedded",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment,
        # A message of over 100 MiB goes through the pipe in one write in one test.
        limit=MIB,
    )
    return RawServer(process, workspace)


@pytest.fixture
async def fresh(tmp_path: Path) -> AsyncIterator[RawServer]:
    """A server of its own on an empty home (no model: completions in open documents fail), not initialized."""
    server = await start_raw(tmp_path / "home", tmp_path)
    yield server
    await server.close()


@pytest.fixture(scope="module")
async def shared_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RawServer]:
    """One initialized server on an empty home for the tests that leave it as they found it."""
    root = tmp_path_factory.mktemp("lsp-hostile-protocol")
    server = await start_raw(root / "home", root)
    await server.initialize({"warmOnOpen": False})
    yield server
    await server.close()


@pytest.fixture
def shared(shared_server: RawServer) -> RawServer:
    """The shared server, its log counted from this test on."""
    shared_server.first_line = len(shared_server.stderr)
    return shared_server


# --- edits -------------------------------------------------------------------------


def edited(source: str, start: tuple[int, int], end: tuple[int, int], text: str) -> str:
    """The server's text after an incremental edit."""
    document = LspTextDocument("file:///t.py", source=source, sync_kind=types.TextDocumentSyncKind.Incremental)
    span = types.Range(types.Position(*start), types.Position(*end))
    document.apply_change(types.TextDocumentContentChangePartial(range=span, text=text))
    return document.source


def test_an_edit_past_the_end_of_a_line_means_its_end() -> None:
    # As LSP says; pygls kept the last line's last character, so the server's text was no longer the editor's.
    assert edited("x = 1", (0, 0), (0, 999), "y = 2") == "y = 2"
    assert edited("x = 1", (0, 999), (0, 999), "0") == "x = 10"
    assert edited("a\nx = 1", (1, 0), (1, 2**31 - 1), "") == "a\n"
    assert edited("a\r\nx = 1\r\nb", (1, 2), (1, 99), "") == "a\r\nx \r\nb"
    # Past the last line is the end of the text (what editors send to replace everything).
    assert edited("a\nb", (0, 0), (10_000, 0), "c") == "c"
    assert edited("a\n", (5, 0), (5, 0), "b") == "a\nb"


def test_an_edit_that_joins_a_cr_and_a_lf_makes_one_line_break() -> None:
    assert edited("a\rX\nb", (1, 0), (1, 1), "") == "a\r\nb"
    document = LspTextDocument("file:///t.py", source="a\rX\nb", sync_kind=types.TextDocumentSyncKind.Incremental)
    document.apply_change(
        types.TextDocumentContentChangePartial(range=types.Range(types.Position(1, 0), types.Position(1, 1)), text="")
    )
    document.apply_change(
        types.TextDocumentContentChangePartial(range=types.Range(types.Position(1, 0), types.Position(1, 0)), text="c")
    )
    assert document.source == "a\r\ncb"


def test_an_inverted_range_is_refused_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    # pygls wrote the text between end and start twice: 24 such edits of an empty text grew a line to 700 MB.
    line = "x = 'abcdefghijklmnopqrstuvwxyz0123456789'"
    with caplog.at_level(logging.WARNING, logger="ingle.lsp"):
        assert edited(line, (0, len(line)), (0, 0), "") == line
    assert len([record for record in caplog.records if "ends" in record.getMessage()]) == 1, caplog.text


def test_random_edits_leave_the_text_the_editor_has() -> None:
    # What an editor holds after each edit: the range's offsets in the text, clamped as LSP says.
    def expected(text: str, start: types.Position, end: types.Position, new: str) -> str:
        starts = [0, *(match.end() for match in re.finditer(r"\r\n|\r|\n", text))]
        ends = [*(match.start() for match in re.finditer(r"\r\n|\r|\n", text)), len(text)]

        def offset(position: types.Position) -> int:
            if position.line >= len(starts):
                return len(text)
            return min(starts[position.line] + position.character, ends[position.line])

        return text[: offset(start)] + new + text[offset(end) :]

    pieces = ["a", "b", "\n", "\r", "\r\n", "\x0c", "é", "\u2028"]
    chance = random.Random(7)
    for _ in range(2000):
        text = "".join(chance.choice(pieces) for _ in range(chance.randint(0, 12)))
        document = LspTextDocument(
            "file:///t.py",
            source=text,
            sync_kind=types.TextDocumentSyncKind.Incremental,
            position_codec=PositionCodec("utf-32"),
        )
        for _ in range(4):
            lines = text.count("\n") + text.count("\r") + 2
            start, end = sorted(
                (types.Position(chance.randint(0, lines), chance.randint(0, 6)) for _ in range(2)),
                key=lambda position: (position.line, position.character),
            )
            new = "".join(chance.choice(pieces) for _ in range(chance.randint(0, 4)))
            document.apply_change(types.TextDocumentContentChangePartial(range=types.Range(start, end), text=new))
            text = expected(text, start, end, new)
            assert document.source == text


async def test_typing_in_a_big_document_leaves_the_server_free(shared: RawServer) -> None:
    # A 20 MB log: pygls split all of it again on every keystroke (half a second each, the server deaf meanwhile).
    text = "".join(
        f"2024-01-01 12:00:{i % 60:02} INFO request id={i} path=/api/v1/items status=200\n" for i in range(250_000)
    )
    uri = shared.open("dump.log", text, language="log")
    await shared.barrier()
    started = time.perf_counter()
    for version in range(2, 12):
        at = {"line": 10, "character": 0}
        change = {"range": {"start": at, "end": at}, "text": "x"}
        shared.notify(
            types.TEXT_DOCUMENT_DID_CHANGE,
            {"textDocument": {"uri": uri, "version": version}, "contentChanges": [change]},
        )
    await shared.barrier()
    assert time.perf_counter() - started < 1.5
    shared.notify(types.TEXT_DOCUMENT_DID_CLOSE, {"textDocument": {"uri": uri}})
    # One didChange with a thousand changes (a replace-all, sent bottom-up as VS Code does) in a 1 MB file.
    lines = [f"value_{i} = compute(item_{i}, factor=2)  # entry {i}" for i in range(20_000)]
    uri = shared.open("big.py", "\n".join(lines) + "\n")
    await shared.barrier()
    changes = [
        {
            "range": {
                "start": {"line": i, "character": len(f"value_{i} = ")},
                "end": {"line": i, "character": len(f"value_{i} = compute")},
            },
            "text": "calc",
        }
        for i in reversed(range(1000))
    ]
    started = time.perf_counter()
    shared.notify(
        types.TEXT_DOCUMENT_DID_CHANGE, {"textDocument": {"uri": uri, "version": 2}, "contentChanges": changes}
    )
    await shared.barrier()
    assert time.perf_counter() - started < 1.5
    shared.notify(types.TEXT_DOCUMENT_DID_CLOSE, {"textDocument": {"uri": uri}})
    assert not shared.tracebacks(), shared.log()


async def test_a_document_too_long_to_be_code_is_not_completed(shared: RawServer) -> None:
    # Each completion in it would copy all of its lines (cut for the prompt), with every other request waiting; on this
    # home without a model, a completion that went ahead would be answered with an error.
    uri = shared.open("data.py", "x = 1\n" * 100_001)
    params = {"textDocument": {"uri": uri}, "position": {"line": 5, "character": 5}}
    assert (await shared.answer(shared.request(types.TEXT_DOCUMENT_COMPLETION, params)))["result"]["items"] == []
    shared.notify(types.TEXT_DOCUMENT_DID_CLOSE, {"textDocument": {"uri": uri}})


# --- framing -----------------------------------------------------------------------


async def test_a_length_no_editor_can_send_stops_the_server_with_one_sentence(fresh: RawServer) -> None:
    # pygls tried to read that much and the server died of a MemoryError.
    await fresh.initialize({"warmOnOpen": False})
    fresh.send_raw(b"Content-Length: 99999999999999999\r\n\r\n{}")
    assert await fresh.exited() == 1
    await asyncio.sleep(0.1)  # the last of stderr
    log = fresh.log()
    assert "a message of 99999999999999999 bytes" in log, log
    assert "MemoryError" not in log and not fresh.tracebacks(), log


async def test_a_header_line_without_an_end_costs_no_memory(fresh: RawServer) -> None:
    # pygls kept all of a header line, however long.
    await fresh.initialize({"warmOnOpen": False})
    await fresh.barrier()
    before = fresh.peak_memory_mib()
    for _ in range(64):
        fresh.send_raw(b"X" * MIB)
    fresh.send_raw(b"\r\n")
    await fresh.barrier()  # and the messages after it are read as before
    assert fresh.peak_memory_mib() - before < 32, (before, fresh.peak_memory_mib())
    assert any("where a header belongs" in line for line in fresh.stderr), fresh.stderr


async def test_a_message_over_the_limit_is_skipped_and_the_next_answered(fresh: RawServer) -> None:
    await fresh.initialize({"warmOnOpen": False})
    await fresh.barrier()
    before = fresh.peak_memory_mib()
    # A didOpen of a 130 MiB file: more than any editor hands a language server.
    uri = (fresh.workspace / "huge.log").as_uri()
    head = json.dumps(
        {
            "jsonrpc": "2.0",
            "method": types.TEXT_DOCUMENT_DID_OPEN,
            "params": {"textDocument": {"uri": uri, "languageId": "log", "version": 1, "text": "@"}},
        }
    ).encode()
    opening, closing = head.split(b"@")
    size = 130 * MIB
    fresh.send_raw(b"Content-Length: %d\r\n\r\n" % (len(opening) + size + len(closing)) + opening)
    for _ in range(size // MIB):
        fresh.send_raw(b"x" * MIB)
    fresh.send_raw(closing)
    await fresh.barrier()
    assert fresh.peak_memory_mib() - before < 64, (before, fresh.peak_memory_mib())
    assert any("ignoring a message of" in line for line in fresh.stderr), fresh.stderr


async def test_a_length_that_is_no_number_loses_only_its_own_message(shared: RawServer) -> None:
    # Its body has no line break at its end, so it and the next header come as one line, which pygls took for no
    # header: every later message was lost the same way, and no request was answered again.
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "method": types.WORKSPACE_DID_CHANGE_CONFIGURATION,
            "params": {"settings": {"x": "y" * 5000}},
        }
    )
    shared.send_raw(b"Content-Length: many\r\n\r\n" + body.encode())
    await shared.barrier()
    assert any("before a header" in line for line in shared.stderr[shared.first_line :]), shared.log()


async def test_a_message_that_is_not_json_is_answered_with_a_parse_error(shared: RawServer) -> None:
    shared.send_raw(b"Content-Length: 5\r\n\r\n{oops")
    assert (await shared.error(None))["code"] == -32700
    await shared.barrier()
    assert not shared.tracebacks(), shared.log()


# --- messages that are not quite JSON-RPC ----------------------------------------------


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"jsonrpc": "2.0", "id": "no-params", "method": "ingle/status"}, -32601),
        ({"jsonrpc": "2.0", "id": "dollar", "method": "$/ping"}, -32601),
        (
            {
                "jsonrpc": "2.0",
                "id": "hover",
                "method": "textDocument/hover",
                "params": {"textDocument": {"uri": "file:///x.py"}, "position": {"line": 0, "character": 0}},
            },
            -32601,
        ),
        ({"jsonrpc": "2.0", "id": "list", "method": ["textDocument/completion"]}, -32600),
        ({"jsonrpc": "2.0", "id": "null", "method": None}, -32600),
        ({"id": "no-jsonrpc", "method": "shutdown"}, -32600),
        ({"jsonrpc": "1.0", "id": "old", "method": "shutdown"}, -32600),
        ({"jsonrpc": "2.0", "id": "bad-params", "method": "textDocument/completion", "params": "x"}, -32602),
    ],
)
async def test_a_malformed_request_gets_one_error_and_no_traceback(
    shared: RawServer, message: dict[str, Any], code: int
) -> None:
    shared.send(message)
    assert (await shared.error(message["id"]))["code"] == code
    await shared.barrier()
    assert len(shared.answers(message["id"])) == 1
    assert not shared.tracebacks(), shared.log()


@pytest.mark.parametrize("message", [{"jsonrpc": "2.0", "id": {"a": 1}, "method": "shutdown"}, [1, 2], "hello"])
async def test_a_message_whose_id_cannot_be_read_is_answered_with_a_null_id(shared: RawServer, message: Any) -> None:
    answered = len(shared.answers(None))
    shared.send(message)
    await shared.barrier()
    errors = shared.answers(None)[answered:]
    assert [error["error"]["code"] for error in errors] == [-32600], errors
    assert not shared.tracebacks(), shared.log()


async def test_a_cancel_with_an_id_that_names_nothing_is_ignored(shared: RawServer) -> None:
    shared.notify(types.CANCEL_REQUEST, {"id": [1]})
    await shared.barrier()
    assert not shared.tracebacks(), shared.log()


async def test_a_request_inside_a_setting_is_not_answered(shared: RawServer) -> None:
    # pygls structured every JSON object in a message as if it were one: a setting shaped like a request was
    # answered, here a second time for a request the editor is waiting on.
    waiting = shared.request(
        types.TEXT_DOCUMENT_COMPLETION,
        {"textDocument": {"uri": (shared.workspace / "none.py").as_uri()}, "position": {"line": 0, "character": 0}},
    )
    for ghost in (waiting, "ghost"):
        nested = {"jsonrpc": "2.0", "id": ghost, "method": "textDocument/completion", "params": {}}
        shared.notify(types.WORKSPACE_DID_CHANGE_CONFIGURATION, {"settings": {"ingle": {"note": nested}}})
    await shared.barrier()
    assert len(shared.answers(waiting)) == 1 and "result" in shared.answers(waiting)[0], shared.answers(waiting)
    assert not shared.answers("ghost")


# --- order of requests --------------------------------------------------------------


async def test_a_request_before_initialize_gets_server_not_initialized(fresh: RawServer) -> None:
    params = {"textDocument": {"uri": (fresh.workspace / "a.py").as_uri()}, "position": {"line": 0, "character": 0}}
    assert (await fresh.error(fresh.request(types.TEXT_DOCUMENT_COMPLETION, params)))["code"] == -32002
    fresh.open("a.py", ADD)  # dropped, as LSP says
    await fresh.initialize({"warmOnOpen": False})
    await fresh.barrier()
    assert not fresh.tracebacks(), fresh.log()


async def test_a_second_initialize_is_refused_and_documents_stay_open(fresh: RawServer) -> None:
    # pygls answered it, with a new workspace that had none of the documents the editor had open.
    await fresh.initialize({"warmOnOpen": False})
    uri = fresh.open("a.py", ADD)
    again = fresh.request(types.INITIALIZE, {"processId": None, "rootUri": "file:///", "capabilities": {}})
    assert (await fresh.error(again))["code"] == -32600
    at = {"line": 1, "character": 11}
    fresh.notify(
        types.TEXT_DOCUMENT_DID_CHANGE,
        {
            "textDocument": {"uri": uri, "version": 2},
            "contentChanges": [{"range": {"start": at, "end": at}, "text": "a"}],
        },
    )
    await fresh.barrier()
    assert not any("ignoring an edit" in line for line in fresh.stderr), fresh.log()


async def test_a_second_initialized_or_initialize_sets_nothing_up_again(tmp_path: Path) -> None:
    # pygls handed every `initialized` to the server, which set up again: the file watcher was registered twice.
    (tmp_path / "helpers.py").write_text("def helper():\n    return 1\n")
    server = await start_raw(tmp_path / "home", tmp_path, "--verbose")
    try:
        watching = {"workspace": {"didChangeWatchedFiles": {"dynamicRegistration": True}}}
        await server.initialize({"warmOnOpen": False}, capabilities=watching)
        assert await poll(lambda: "indexed 1 files" in server.log(), ANSWER_SECONDS), server.log()
        server.notify(types.INITIALIZED, {})
        again = server.request(types.INITIALIZE, {"processId": None, "rootUri": None, "capabilities": watching})
        assert (await server.error(again))["code"] == -32600
        server.notify(types.INITIALIZED, {})
        uri = server.open("a.py", ADD)
        # The completion path still runs (to the engine, which has no model in this home).
        params = {"textDocument": {"uri": uri}, "position": {"line": 1, "character": 11}}
        assert (
            "not in the store"
            in (await server.error(server.request(types.TEXT_DOCUMENT_COMPLETION, params)))["message"]
        )
        await server.barrier()
        registrations = [message for message in server.received if message.get("method") == "client/registerCapability"]
        assert len(registrations) == 1, registrations
        assert server.log().count("indexed 1 files") == 1, server.log()
        assert not server.tracebacks(), server.log()
    finally:
        await server.close()


async def test_after_shutdown_requests_get_invalid_request_and_exit_ends_with_0(fresh: RawServer) -> None:
    # pygls left them unanswered.
    await fresh.initialize({"warmOnOpen": False})
    assert "result" in await fresh.answer(fresh.request(types.SHUTDOWN))
    params = {"textDocument": {"uri": (fresh.workspace / "a.py").as_uri()}, "position": {"line": 0, "character": 0}}
    assert (await fresh.error(fresh.request(types.TEXT_DOCUMENT_COMPLETION, params)))["code"] == -32600
    assert (await fresh.error(fresh.request(types.SHUTDOWN)))["code"] == -32600
    fresh.notify(types.EXIT, None)
    assert await fresh.exited() == 0
    assert not fresh.tracebacks(), fresh.log()


async def test_exit_without_shutdown_ends_with_1(fresh: RawServer) -> None:
    await fresh.initialize({"warmOnOpen": False})
    fresh.notify(types.EXIT, None)
    assert await fresh.exited() == 1


# --- errors --------------------------------------------------------------------------


async def test_an_engine_error_is_answered_without_a_traceback(fresh: RawServer) -> None:
    # The home has no model: each completion is answered with the engine's sentence. pygls logged two tracebacks
    # for each besides.
    await fresh.initialize({"warmOnOpen": False})
    uri = fresh.open("a.py", ADD)
    for _ in range(2):
        params = {"textDocument": {"uri": uri}, "position": {"line": 1, "character": 11}}
        error = await fresh.error(fresh.request(types.TEXT_DOCUMENT_COMPLETION, params))
        assert error["code"] == types.LSPErrorCodes.RequestFailed.value and "not in the store" in error["message"]
    assert not fresh.tracebacks(), fresh.log()


async def test_a_uri_that_cannot_be_taken_apart_gets_one_warning(shared: RawServer) -> None:
    # pygls showed the user "Error in server: ValueError: Invalid IPv6 URL".
    uri = "file://[bad/x.py"
    shown = len(shared.shown())
    shared.notify(
        types.TEXT_DOCUMENT_DID_OPEN, {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": ADD}}
    )
    params = {"textDocument": {"uri": uri}, "position": {"line": 1, "character": 11}}
    assert (await shared.answer(shared.request(types.TEXT_DOCUMENT_COMPLETION, params)))["result"]["items"] == []
    shared.notify(
        types.WORKSPACE_DID_CHANGE_WATCHED_FILES, {"changes": [{"uri": uri, "type": 2}, {"uri": uri, "type": 3}]}
    )
    shared.notify(types.TEXT_DOCUMENT_DID_SAVE, {"textDocument": {"uri": uri}})
    shared.notify(types.TEXT_DOCUMENT_DID_CLOSE, {"textDocument": {"uri": uri}})
    await shared.barrier()
    assert not [message for message in shared.shown()[shown:] if "Error in server" in message], shared.shown()
    assert any("ignoring the opening of 'file://[bad/x.py'" in line for line in shared.stderr), shared.stderr
    assert not shared.tracebacks(), shared.log()


# --- memory ----------------------------------------------------------------------------


async def test_notifications_leave_nothing_behind(shared: RawServer) -> None:
    # pygls kept the future of each notification to an async handler (and of each step of its own handlers) for
    # good: about 0.8 KB a file-watcher event or keystroke, forever.
    (shared.workspace / "m.py").write_text("def f():\n    pass\n")
    deleted = {"changes": [{"uri": (shared.workspace / "m.py").as_uri(), "type": 3}]}
    uri = shared.open("typed.py", "")
    await shared.barrier()
    before = shared.memory_mib()
    at = {"line": 0, "character": 0}
    for version in range(2, 20_002):
        shared.notify(types.WORKSPACE_DID_CHANGE_WATCHED_FILES, deleted)
        change = {"range": {"start": at, "end": at}, "text": "x"}
        shared.notify(
            types.TEXT_DOCUMENT_DID_CHANGE,
            {"textDocument": {"uri": uri, "version": version}, "contentChanges": [change]},
        )
        if version % 1000 == 0:
            await shared.barrier()
    await shared.barrier()
    assert shared.memory_mib() - before < 12, (before, shared.memory_mib())
    shared.notify(types.TEXT_DOCUMENT_DID_CLOSE, {"textDocument": {"uri": uri}})


# --- with the model -------------------------------------------------------------------


@pytest.fixture(scope="module")
async def editor(default_model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EditorClient]:
    """`ingle lsp --embedded` with the default model, driven by pygls's client."""
    home = link_home(default_model_cache, tmp_path_factory.mktemp("lsp-hostile-protocol-model") / "home")
    client = make_client()
    workspace = tmp_path_factory.mktemp("workspace")
    await start(
        client,
        home,
        workspace,
        "lsp",
        "--embedded",
        options={"answerWithinMs": None, "contextChunks": 0, "snippetTokens": 0},
    )
    client.workspace_path = workspace
    yield client
    await stop(client)


def change(client: EditorClient, uri: str, start: tuple[int, int], end: tuple[int, int], text: str) -> None:
    client.version += 1
    with_range = types.TextDocumentContentChangePartial(types.Range(types.Position(*start), types.Position(*end)), text)
    identifier = types.VersionedTextDocumentIdentifier(version=client.version + 1, uri=uri)
    client.text_document_did_change(types.DidChangeTextDocumentParams(identifier, [with_range]))


@pytest.mark.slow
async def test_the_server_completes_the_text_the_editor_shows(editor: EditorClient) -> None:
    uri = open_document(editor, editor.workspace_path / "edited.py", "def add(a, b):\n    return a")
    # The editor replaces the last line, its range ending past the line's end: pygls kept the old line's last
    # character, and completed `return a`.
    change(editor, uri, (1, 0), (1, 999), "    return ")
    result = await completion(editor, uri, 1, 999)
    assert [item.text_edit.new_text for item in result.items] == ["a + b"]
    edit = result.items[0].text_edit
    assert isinstance(edit, types.TextEdit) and edit.range.end == types.Position(1, 11), edit
    # An inverted range changes nothing.
    change(editor, uri, (1, 11), (1, 0), "")
    assert [item.text_edit.new_text for item in (await completion(editor, uri, 1, 11)).items] == ["a + b"]


@pytest.mark.slow
async def test_near_the_line_limit_the_cache_goes_by_the_lines_around_the_cursor(editor: EditorClient) -> None:
    # The cache's key hashed all of the text on every keystroke (40 ms near the limit), and an edit anywhere in the
    # file lost its suggestions. It holds the lines a suggestion depends on: an edit far from the cursor still
    # finds the suggestion, typing its first characters is served the rest, and an edit among those lines asks
    # the model again.
    filler = "".join(f"value_{index} = {index}\n" for index in range(49_000))
    uri = open_document(editor, editor.workspace_path / "long.py", filler + "def mul(a, b):\n    return \n" + filler)
    line = 49_001

    async def suggested(character: int) -> list[tuple[str, bool]]:
        items = (await completion(editor, uri, line, character)).items
        return [(item.text_edit.new_text, item.data["fromCache"]) for item in items]

    assert await suggested(11) == [("a * b", False)]
    change(editor, uri, (0, 0), (0, 0), "import math\n")  # far above: the same lines, one further down
    line += 1
    assert await suggested(11) == [("a * b", True)]
    change(editor, uri, (line, 11), (line, 11), "a ")
    assert await suggested(13) == [("* b", True)]
    change(editor, uri, (line, 11), (line, 13), "")
    change(editor, uri, (line - 1, 4), (line - 1, 7), "add")  # the function's name, right above the cursor
    assert await suggested(11) == [("a + b", False)], "never the suggestion for the old lines"
