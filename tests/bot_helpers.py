"""What the bot tests share: a recorder around the real engine, scripted and busy fakes, store readers, and
`ingle bot` run as a process of its own (to stop with SIGTERM or kill with SIGKILL)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from ingle.core.backend import GenerationBackend
from ingle.core.errors import QueueFull
from ingle.core.generation import (
    EmbeddingResult,
    GenerationChunk,
    GenerationRequest,
    GenerationStats,
)

from .fakes import poll_until
from .test_cli import ingle_executable


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


def open_owed_answers(database: Path) -> int:
    """How many answers the bot still owes (promised, not delivered), read with a separate connection."""
    with sqlite3.connect(database) as db:
        return int(db.execute("SELECT count(*) FROM owed_answers WHERE delivered_at IS NULL").fetchone()[0])


@asynccontextmanager
async def bot_process(
    platform: str, home: Path, section: dict[str, object]
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`ingle bot PLATFORM --embedded` configured with `section` (as `INGLE_<PLATFORM>_*`), until the block ends.

    Its output, with ingle's INFO lines (`--verbose`), goes to `<home>/<platform>.log` (a pipe nobody reads could
    fill and stall it). At the end a process still running is killed.
    """
    # One decode thread: on a machine busier than its cores, llama.cpp's threads wait on each other at every step
    # (a 30-token answer took 218 s with two threads and 28 s with one, at a load of 18 on two cores).
    env = {**os.environ, "INGLE_HOME": str(home), "INGLE_NUM_THREADS": "1"}
    for key, value in section.items():
        env[f"INGLE_{platform.upper()}_{key.upper()}"] = json.dumps(value) if isinstance(value, list) else str(value)
    with (home / f"{platform}.log").open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            ingle_executable(), "--verbose", "bot", platform, "--embedded", env=env, stdout=log, stderr=log
        )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def stop(process: asyncio.subprocess.Process, how: signal.Signals = signal.SIGTERM) -> int:
    """Send `how` and wait (bounded) for the process to end; its exit status."""
    process.send_signal(how)
    return await asyncio.wait_for(process.wait(), timeout=60)


async def kill_mid_answer_then_restart(
    platform: str,
    home: Path,
    section: dict[str, Any],
    *,
    ready: Callable[[], Any],
    ask: Callable[[], Awaitable[object]],
    half_shown: Callable[[], Any],
    shown: Callable[[], str],
    render: Callable[[str], str],
) -> tuple[str, str | None]:
    """Ask the bot (its own process) a question, `kill -9` it while the answer streams, and start it again.

    `section` configures the bot (answers are greedy and up to 96 tokens, previews five a second, unless it
    says otherwise); `ready` says the bot is connected, `ask` asks, `half_shown` says the answer has shown
    its first words (and grown once), `shown` reads the answer's message, `render` turns Markdown into what
    that message shows. After the restart this waits until the message shows the whole answer (when `resume_within`
    allows it) or the cut-off mark, and until the store has nothing left to answer; then stops the bot.
    Returns what the message showed at the kill, and the answer (None where the user was asked to repeat).
    """
    database = home / "bots" / f"{platform}.db"
    section = {"temperature": 0, "max_answer_tokens": 96, "edit_interval": 0.2, **section}
    log = home / f"{platform}.log"
    try:
        async with bot_process(platform, home, section) as first:
            await poll_until(ready, 120, f"the {platform} bot to connect")
            await ask()
            await poll_until(half_shown, 180, "the answer's first words")
            await stop(first, signal.SIGKILL)
        at_kill = shown()
        answer: str | None = None
        async with bot_process(platform, home, section) as second:
            if section["resume_within"] > 1:
                [(_, stored)] = await poll_until(lambda: stored_messages(database, "assistant"), 180, "the answer")
                answer, finished = stored, render(stored)
                await poll_until(lambda: shown() == finished, 180, "the answer in the message the user saw")
            else:
                await poll_until(lambda: "restarted" in shown(), 180, "the cut-off mark")
            # Delivered and recorded as delivered: nothing is left to answer at the next start.
            await poll_until(lambda: open_owed_answers(database) == 0, 60, "the delivery to be recorded")
            status = await stop(second)
    except TimeoutError as error:
        raise AssertionError(f"{error}; the bot's log:\n{log.read_text()}") from error
    assert status == 0, f"exit status {status}; the bot's log:\n{log.read_text()}"
    return at_kill, answer
