"""Backends and readers the bot tests share: a recorder around the real engine, scripted and busy fakes."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path

from ingle.core.backend import GenerationBackend
from ingle.core.errors import QueueFull
from ingle.core.generation import (
    EmbeddingResult,
    GenerationChunk,
    GenerationRequest,
    GenerationStats,
)


class RecordingBackend:
    """Passes requests to a real backend and remembers each, so tests can see what the model was sent."""

    def __init__(self, inner: GenerationBackend) -> None:
        self.inner = inner
        self.requests: list[GenerationRequest] = []

    def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        """Record, then delegate."""
        self.requests.append(request)
        return self.inner.generate(request)

    async def embed(
        self, model: str, inputs: list[str], keep_alive: float | None = None, truncate: bool = True
    ) -> EmbeddingResult:
        """Delegate."""
        return await self.inner.embed(model, inputs, keep_alive, truncate)


class ScriptedBackend:
    """Streams fixed pieces, one per event-loop turn (or `delay` apart), like a model would."""

    def __init__(self, pieces: list[str], delay: float = 0.0) -> None:
        self.pieces = pieces
        self.delay = delay
        self.requests: list[GenerationRequest] = []

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        """Yield the pieces, then a done chunk."""
        self.requests.append(request)
        for piece in self.pieces:
            await asyncio.sleep(self.delay)
            yield GenerationChunk(text=piece)
        yield GenerationChunk(text="", done=True, stats=GenerationStats(completion_tokens=len(self.pieces)))

    async def embed(
        self, model: str, inputs: list[str], keep_alive: float | None = None, truncate: bool = True
    ) -> EmbeddingResult:
        """Not used by bots."""
        raise NotImplementedError


class BusyBackend:
    """Answers every generation like a daemon whose queue is full (its 503)."""

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        """Raise QueueFull before the first chunk."""
        raise QueueFull("Every sequence of the model is busy and the queue is full; retry later.", retry_after=1.0)
        yield  # pragma: no cover - makes this an async generator

    async def embed(
        self, model: str, inputs: list[str], keep_alive: float | None = None, truncate: bool = True
    ) -> EmbeddingResult:
        """Not used by bots."""
        raise NotImplementedError


def stored_messages(database: Path, role: str | None = None) -> list[tuple[str, str]]:
    """(role, content) of every stored message, oldest first, read with a separate connection."""
    if not database.exists():
        return []
    with sqlite3.connect(database) as db:
        try:
            rows = db.execute("SELECT role, content FROM messages ORDER BY id").fetchall()
        except sqlite3.OperationalError:  # not migrated yet
            return []
    return [(r, c) for r, c in rows if role is None or r == role]
