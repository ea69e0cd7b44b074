"""Where the CLI gets its engine from: the one place to change when a daemon serves it.

For now every command runs the engine in-process. Once `ingle serve` exists,
`open_engine` will return a client of the running daemon with the same
methods, so three terminals never load three copies of a model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ingle.core.engine import Engine
from ingle.core.settings import Settings


@asynccontextmanager
async def open_engine(settings: Settings) -> AsyncIterator[Engine]:
    """Yield an engine for one command and close it (unloading its models) afterwards."""
    async with Engine(settings) as engine:
        yield engine
