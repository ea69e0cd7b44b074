"""Cancelling a completion frees the engine's sequence (the server driven in-process on the session engine)."""

from __future__ import annotations

import asyncio

import pytest
from ingle.adapters.cli.engine_access import EngineChoice
from ingle.adapters.engine_api import LocalEngine
from ingle.core.engine import Engine
from ingle.lsp.server import IngleLanguageServer, create_server
from lsprotocol import types
from pygls.workspace import Workspace

pytestmark = pytest.mark.slow

# Long enough for a multi-line block to still be generating when it is cancelled.
STACK = "class Stack:\n    def __init__(self):\n        \n"


def server_on(engine: Engine) -> IngleLanguageServer:
    """The language server on the shared engine, with a workspace as `initialize` would make it."""
    server = create_server(engine.settings, EngineChoice(embedded=True), api=LocalEngine(engine))
    server.protocol._workspace = Workspace(None)
    server.protocol.client_capabilities = types.ClientCapabilities()
    server.configure({"maxLines": 32, "maxTokens": 256, "startDaemon": False})
    return server


def open_in(server: IngleLanguageServer, name: str, text: str) -> str:
    uri = f"file:///tmp/{name}"
    server.workspace.put_text_document(types.TextDocumentItem(uri, "python", 1, text))
    return uri


async def until_idle(engine: Engine) -> None:
    """Poll (bounded) until no request holds a sequence."""
    async with asyncio.timeout(10):
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
