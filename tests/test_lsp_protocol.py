"""`ingle lsp` over stdio, driven by pygls's own client, on the real default model."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcRequestCancelled
from pygls.lsp.client import LanguageClient

from .conftest import link_home

# A bound on every wait in these tests: a real answer takes well under a second or two after the load.
ANSWER_SECONDS = 60.0
INGLE = str(Path(sys.executable).with_name("ingle"))


class EditorClient(LanguageClient):
    """pygls's client with what a small editor keeps: messages shown, progress seen, the server's stderr."""

    def __init__(self) -> None:
        super().__init__("ingle-tests", "1")
        self.messages: list[str] = []
        # Not `progress`: that is the client's own method for sending $/progress.
        self.progress_seen: list[Any] = []
        """`$/progress` values (LSPAny: plain dicts)."""
        self.workspace_path = Path()
        """The folder the tests open documents in."""
        self.stderr: list[str] = []
        self.version = 0
        self.position_encoding = "utf-16"
        """The unit of the positions the server and this client exchange, as negotiated at start."""


def make_client() -> EditorClient:
    """A client that records window/showMessage and $/progress, and accepts progress tokens."""
    client = EditorClient()

    @client.feature(types.WINDOW_SHOW_MESSAGE)
    def show_message(params: types.ShowMessageParams) -> None:
        client.messages.append(params.message)

    @client.feature(types.WINDOW_LOG_MESSAGE)
    def log_message(params: types.LogMessageParams) -> None:
        client.messages.append(params.message)

    @client.feature(types.WINDOW_WORK_DONE_PROGRESS_CREATE)
    def create_progress(params: types.WorkDoneProgressCreateParams) -> None:
        return None

    @client.feature(types.PROGRESS)
    def progress(params: types.ProgressParams) -> None:
        client.progress_seen.append(params.value)

    return client


async def start(
    client: EditorClient,
    home: Path,
    tmp: Path,
    *args: str,
    options: dict | None = None,
    encodings: list[str] | None = None,
) -> types.InitializeResult:
    """Start `ingle [args] lsp` on the given home, initialize (offering `encodings` for positions, as Neovim 0.10
    does), and keep its stderr drained."""
    environment = {
        **os.environ,
        "INGLE_HOME": str(home),
        "INGLE_CONFIG": str(tmp / "no-config.toml"),
        "INGLE_NUM_THREADS": "2",
        "INGLE_NUM_CTX": "2048",
        "INGLE_NUM_PARALLEL": "2",
    }
    await client.start_io(INGLE, *args, env=environment)

    async def drain() -> None:
        async for line in client._server.stderr:
            client.stderr.append(line.decode(errors="replace"))

    client._async_tasks.append(asyncio.create_task(drain()))
    capabilities = types.ClientCapabilities(
        window=types.WindowClientCapabilities(work_done_progress=True),
        general=types.GeneralClientCapabilities(position_encodings=encodings) if encodings else None,
    )
    result = await asyncio.wait_for(
        client.initialize_async(
            types.InitializeParams(capabilities=capabilities, root_uri=tmp.as_uri(), initialization_options=options)
        ),
        ANSWER_SECONDS,
    )
    client.initialized(types.InitializedParams())
    client.position_encoding = str(result.capabilities.position_encoding or "utf-16")
    return result


async def stop(client: EditorClient) -> None:
    """Shut the server down the polite way, bounded."""
    try:
        await asyncio.wait_for(client.shutdown_async(None), ANSWER_SECONDS)
        client.exit(None)
        await asyncio.wait_for(client.stop(), ANSWER_SECONDS)
    finally:
        if client._server is not None and client._server.returncode is None:
            client._server.kill()


def open_document(client: EditorClient, path: Path, text: str, language: str = "python") -> str:
    """didOpen a document; returns its URI."""
    uri = path.as_uri()
    client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(uri, language, 1, text)))
    return uri


def replace_text(client: EditorClient, uri: str, text: str) -> None:
    """didChange with the whole new text (as an edit of the full range, the way editors send it)."""
    client.version += 1
    whole = types.Range(types.Position(0, 0), types.Position(10_000, 0))
    change = types.TextDocumentContentChangePartial(range=whole, text=text)
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            types.VersionedTextDocumentIdentifier(version=client.version + 1, uri=uri), [change]
        )
    )


async def completion(client: EditorClient, uri: str, line: int, character: int) -> types.CompletionList:
    """A textDocument/completion request, bounded."""
    params = types.CompletionParams(types.TextDocumentIdentifier(uri), types.Position(line, character))
    result = await asyncio.wait_for(client.text_document_completion_async(params), ANSWER_SECONDS)
    assert isinstance(result, types.CompletionList), result
    return result


@pytest.fixture(scope="module")
def lsp_home(default_model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One home with the default model for this module's servers."""
    return link_home(default_model_cache, tmp_path_factory.mktemp("lsp") / "home")


@pytest.fixture(scope="module")
async def editor(lsp_home: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EditorClient]:
    """One `ingle lsp --embedded` for the module (the model loads once)."""
    client = make_client()
    workspace = tmp_path_factory.mktemp("workspace")
    # Whole answers, however busy the machine: showing the words written so far in time is tested in-process.
    await start(client, lsp_home, workspace, "lsp", "--embedded", options={"maxLines": 4, "answerWithinMs": None})
    client.workspace_path = workspace
    yield client
    await stop(client)


@pytest.mark.slow
async def test_add_completes_to_a_plus_b_and_nothing_after(editor: EditorClient) -> None:
    uri = open_document(editor, editor.workspace_path / "add.py", "def add(a, b):\n    return \n")
    result = await completion(editor, uri, 1, 11)
    assert [item.text_edit.new_text for item in result.items] == ["a + b"]
    assert result.is_incomplete, "the editor should ask again as the user types"


@pytest.mark.slow
async def test_inline_completion_and_the_load_status(editor: EditorClient) -> None:
    uri = open_document(editor, editor.workspace_path / "sub.py", "def sub(a, b):\n    return \n")
    params = types.InlineCompletionParams(
        context=types.InlineCompletionContext(types.InlineCompletionTriggerKind.Invoked),
        text_document=types.TextDocumentIdentifier(uri),
        position=types.Position(1, 11),
    )
    result = await asyncio.wait_for(editor.text_document_inline_completion_async(params), ANSWER_SECONDS)
    assert isinstance(result, types.InlineCompletionList), result
    assert [(item.insert_text, item.range and item.range.start.character) for item in result.items] == [("a - b", 11)]
    # The load was reported as work-done progress: a begin with the model's name, then an end.
    kinds = [value.get("kind") for value in editor.progress_seen]
    assert kinds[:1] == ["begin"] and kinds[-1] == "end", editor.progress_seen
    assert "qwen2.5-coder:0.5b" in editor.progress_seen[0]["title"]


@pytest.mark.slow
async def test_typing_the_suggestion_is_served_from_the_cache(editor: EditorClient) -> None:
    uri = open_document(editor, editor.workspace_path / "mul.py", "def mul(a, b):\n    return \n")
    first = await completion(editor, uri, 1, 11)
    assert first.items[0].text_edit.new_text == "a * b"
    replace_text(editor, uri, "def mul(a, b):\n    return a \n")
    typed = await completion(editor, uri, 1, 13)
    assert [item.text_edit.new_text for item in typed.items] == ["* b"]


@pytest.mark.slow
async def test_settings_disable_a_language_and_a_bad_value_is_reported(editor: EditorClient) -> None:
    uri = open_document(editor, editor.workspace_path / "div.py", "def div(a, b):\n    return \n")
    editor.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"ingle": {"disabledLanguages": ["python"]}})
    )
    assert not (await completion(editor, uri, 1, 11)).items
    editor.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"maxLines": -3}))
    editor.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"disabledLanguages": []}))
    assert (await completion(editor, uri, 1, 11)).items, "python is enabled again"
    assert any("maxLines" in message for message in editor.messages), editor.messages


@pytest.mark.slow
async def test_cancel_request_is_answered_and_the_next_request_works(editor: EditorClient) -> None:
    # A blank line in a body asks for a multi-line block: long enough to still be running when cancelled.
    text = "class Stack:\n    def __init__(self):\n        \n"
    uri = open_document(editor, editor.workspace_path / "stack.py", text)
    editor.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"maxLines": 32, "maxTokens": 256})
    )
    params = types.CompletionParams(types.TextDocumentIdentifier(uri), types.Position(2, 8))
    pending = editor.protocol.send_request_async(types.TEXT_DOCUMENT_COMPLETION, params, msg_id="cancel-me")
    editor.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="cancel-me"))
    with pytest.raises(JsonRpcRequestCancelled):
        await asyncio.wait_for(pending, ANSWER_SECONDS)
    editor.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"maxLines": 4}))
    follow = open_document(editor, editor.workspace_path / "again.py", "def add(a, b):\n    return \n")
    assert (await completion(editor, follow, 1, 11)).items[0].text_edit.new_text == "a + b"


@pytest.mark.slow
async def test_a_newer_request_for_the_same_document_supersedes_the_older(editor: EditorClient) -> None:
    uri = open_document(editor, editor.workspace_path / "both.py", "def both(a, b):\n    return \n")
    older = asyncio.ensure_future(completion(editor, uri, 1, 11))
    replace_text(editor, uri, "def both(a, b):\n    return a and \n")
    newer = asyncio.ensure_future(completion(editor, uri, 1, 17))
    older_result, newer_result = await asyncio.gather(older, newer)
    assert not older_result.items
    assert [item.text_edit.new_text for item in newer_result.items] == ["b"]


async def test_an_unreachable_daemon_is_shown_not_silent(tmp_path: Path) -> None:
    client = make_client()
    # Port 9 (discard) has no ingle behind it; a daemon named with --host must answer, so there is no fallback.
    await start(client, tmp_path / "home", tmp_path, "--host", "http://127.0.0.1:9", "lsp")
    try:
        uri = open_document(client, tmp_path / "x.py", "x = \n")
        with pytest.raises(JsonRpcException) as raised:
            await completion(client, uri, 0, 4)
        assert raised.value.code == types.LSPErrorCodes.RequestFailed.value
        assert any("127.0.0.1:9" in message for message in client.messages), client.messages
    finally:
        await stop(client)
