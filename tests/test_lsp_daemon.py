"""`ingle lsp` through the daemon (`IngleClient` against the real app on a loopback port), on the session engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from lsprotocol import types

from ingle.adapters.client import IngleClient
from ingle.core.engine import Engine

from .servers import serving
from .test_lsp_cancel import BODY_LINE, HELPERS, SORT, open_in, server_on, until_idle

pytestmark = pytest.mark.slow


@pytest.fixture
async def daemon_client(engine: Engine) -> AsyncIterator[IngleClient]:
    """A client of the app serving the session engine over real HTTP."""
    async with serving(engine.settings, engine) as url, IngleClient(url) as client:
        yield client


async def test_the_prompt_tokens_evaluated_are_reported_through_the_daemon(
    daemon_client: IngleClient, engine: Engine
) -> None:
    server = server_on(engine, api=daemon_client)
    server.configure({"maxLines": 1})  # the stream is closed as soon as the first line is there
    # Inside a line, where both requests fill in the middle (on a fresh line the file is continued instead).
    uri = open_in(server, "sort_counts.py", SORT.replace("    \n", "    swaps\n"))
    first = await asyncio.wait_for(server.complete(uri, types.Position(BODY_LINE, 9)), 60)
    assert first is not None and not first.from_cache
    # A new document: most of the prompt (six helper functions and the cursor's line) is evaluated.
    assert first.evaluated_tokens > 40, first.evaluated_tokens
    typed = "swaps_total_count = "
    server.workspace.put_text_document(
        types.TextDocumentItem(uri, "python", 2, SORT.replace("    \n", f"    {typed}\n"))
    )
    newer = await asyncio.wait_for(server.complete(uri, types.Position(BODY_LINE, 4 + len(typed))), 60)
    assert newer is not None and not newer.from_cache
    # A keystroke later only the end of the prompt is new: the daemon reused the rest, and says so.
    assert 0 < newer.evaluated_tokens < 30, newer.evaluated_tokens
    await until_idle(engine)


async def test_a_prompt_beyond_the_context_answers_nothing_through_the_daemon(
    daemon_client: IngleClient, engine: Engine
) -> None:
    server = server_on(engine, api=daemon_client)
    # Lines of data just above the cursor (the longest the prompt takes) make a prompt of about 6,000 tokens:
    # more than the engine's 4,096-token context.
    data = "".join(f"DATA_{row} = '" + "ab, " * 240 + "'\n" for row in range(12))
    uri = open_in(server, "overflow.py", HELPERS + data + "def bubble_sort(items):\n    \n")
    # The editor gets no suggestion, as with `ingle lsp --embedded`, rather than an error.
    assert await asyncio.wait_for(server.complete(uri, types.Position(BODY_LINE + 12, 4)), 60) is None
