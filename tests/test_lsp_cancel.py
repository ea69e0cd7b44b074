"""Requests in flight, driven in-process on the session engine: cancelled, superseded, or finished in the background.

Cancelling a completion frees the engine's sequence; a block's first line is
shown before the rest is generated, and a newer request stops that rest.
"""

from __future__ import annotations

import asyncio
import re

import pytest
from lsprotocol import types
from pygls.workspace import Workspace

from ingle.adapters.cli.engine_access import EngineChoice
from ingle.adapters.engine_api import EngineApi, LocalEngine
from ingle.core.engine import Engine
from ingle.lsp.server import IngleLanguageServer, create_server

pytestmark = pytest.mark.slow

# Long enough for a multi-line block to still be generating when it is cancelled.
STACK = "class Stack:\n    def __init__(self):\n        \n"
# A function body the model writes over several lines, after enough lines that evaluating them again shows.
HELPERS = "".join(f"def scale_{index}(value):\n    return value * {index}\n\n" for index in range(6))
SORT = HELPERS + "def bubble_sort(items):\n    \n"
BODY_LINE = SORT.count("\n") - 1


def server_on(engine: Engine, api: EngineApi | None = None) -> IngleLanguageServer:
    """The language server on the shared engine (or `api`), with a workspace as `initialize` would make it."""
    server = create_server(engine.settings, EngineChoice(embedded=True), api=api or LocalEngine(engine))
    server.protocol._workspace = Workspace(None)
    server.protocol.client_capabilities = types.ClientCapabilities()
    server.configure({"maxLines": 32, "maxTokens": 256, "startDaemon": False})
    return server


def open_in(server: IngleLanguageServer, name: str, text: str) -> str:
    uri = f"file:///tmp/{name}"
    server.workspace.put_text_document(types.TextDocumentItem(uri, "python", 1, text))
    return uri


async def until_idle(engine: Engine) -> None:
    """Poll (bounded, generously: a busy machine writes a block slowly) until no request holds a sequence."""
    async with asyncio.timeout(180):
        while any(stats.active or stats.waiting for stats in engine.queue_stats()):
            await asyncio.sleep(0.01)


async def until_generating(engine: Engine) -> None:
    """Poll (bounded) until a request holds a sequence."""
    async with asyncio.timeout(30):
        while not any(stats.active for stats in engine.queue_stats()):
            await asyncio.sleep(0.01)


async def test_cancelling_the_request_frees_the_sequence(engine: Engine) -> None:
    server = server_on(engine)
    uri = open_in(server, "stack_cancel.py", STACK)
    request = asyncio.create_task(server.complete(uri, types.Position(2, 8)))
    await until_generating(engine)
    request.cancel()  # what pygls does on $/cancelRequest
    with pytest.raises(asyncio.CancelledError):
        await request
    await until_idle(engine)


async def test_a_newer_request_supersedes_and_frees_the_older(engine: Engine) -> None:
    server = server_on(engine)
    uri = open_in(server, "stack_supersede.py", STACK)
    older = asyncio.create_task(server.complete(uri, types.Position(2, 8)))
    await until_generating(engine)
    server.configure({"maxLines": 1})
    newer = await asyncio.wait_for(server.complete(uri, types.Position(2, 8)), 60)
    assert await older is None, "the superseded request shows nothing"
    assert newer is not None and newer.text.strip()
    await until_idle(engine)


async def test_a_block_shows_its_first_line_at_once_and_the_whole_block_follows(engine: Engine) -> None:
    server = server_on(engine)
    uri = open_in(server, "sort_first_line.py", SORT)
    first = await asyncio.wait_for(server.complete(uri, types.Position(BODY_LINE, 4)), 60)
    assert first is not None and first.text.strip() and "\n" not in first.text, first
    assert not first.text[0].isspace(), "the line's indentation is already in the document"
    await until_idle(engine)  # the rest of the block was generated meanwhile
    again = await asyncio.wait_for(server.complete(uri, types.Position(BODY_LINE, 4)), 60)
    assert again is not None and again.from_cache
    assert again.text.startswith(first.text) and again.text.count("\n") >= 2, again.text


async def test_a_newer_request_stops_the_rest_and_reuses_its_sequence(engine: Engine) -> None:
    server = server_on(engine)
    uri = open_in(server, "sort_newer.py", SORT)
    first = await asyncio.wait_for(server.complete(uri, types.Position(BODY_LINE, 4)), 60)
    assert first is not None and uri in server.finishing, "the rest of the block is still being generated"
    rest = server.finishing[uri]
    typed = "swaps_made = 0"  # not the start of the suggestion, so the model is asked again on the next line
    assert not first.text.startswith(typed)
    server.workspace.put_text_document(
        types.TextDocumentItem(uri, "python", 2, SORT.replace("    \n", f"    {typed}\n    \n"))
    )
    newer = await asyncio.wait_for(server.complete(uri, types.Position(BODY_LINE + 1, 4)), 60)
    assert rest.task.done() and server.finishing.get(uri) is not rest, "the newer request stopped the block's rest"
    assert newer is not None and not newer.from_cache
    # Only the tail after the shared prompt prefix is decoded: it landed on the sequence the block left.
    assert 0 < newer.evaluated_tokens < 30 < first.evaluated_tokens, (newer.evaluated_tokens, first.evaluated_tokens)
    await until_idle(engine)


async def test_when_time_is_up_the_words_written_so_far_are_shown_and_the_rest_follows(engine: Engine) -> None:
    server = server_on(engine)
    server.configure({"answerWithinMs": 0})  # as if evaluating the prompt had taken all the time there is
    uri = open_in(server, "sort_in_time.py", SORT)
    first = await asyncio.wait_for(server.complete(uri, types.Position(BODY_LINE, 4)), 60)
    assert first is not None and first.text.strip() and not first.text[-1].isalnum(), "whole words only"
    assert len(re.findall(r"\w+", first.text)) >= 2, f"a line was asked for, not a lone keyword: {first.text!r}"
    await until_idle(engine)
    again = await asyncio.wait_for(server.complete(uri, types.Position(BODY_LINE, 4)), 60)
    assert again is not None and again.from_cache
    assert again.text.startswith(first.text) and len(again.text.split("\n")[0]) > len(first.text), again.text
