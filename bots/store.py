"""The bots' memory: conversations and their messages in one SQLite file per bot.

The file runs in WAL mode and every write commits before the call returns,
so a platform that acknowledges a message only after `add_user_message` has
returned never loses it, even if the process is killed a moment later.

The schema grows by append-only, named migrations (the way simonw/llm's
`migrations.py` does it): each is a function registered in order, applied
once, and recorded in `_migrations`. Never edit or reorder one that shipped;
add a new one.

sqlite3 calls block, so every public method runs its statement in a worker
thread (one connection, serialised by a lock) and the event loop never waits
on the disk.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

Migration = Callable[[sqlite3.Connection], None]


class Migrations:
    """An ordered list of named schema changes, each applied once."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Migration]] = []

    def __call__(self, step: Migration) -> Migration:
        """Register `step` (a decorator); its function name is its permanent name."""
        self._steps.append((step.__name__, step))
        return step

    def apply(self, db: sqlite3.Connection) -> None:
        """Run every migration not yet recorded in `_migrations`, in order, each in its own transaction."""
        db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
        done = {row[0] for row in db.execute("SELECT name FROM _migrations")}
        for name, step in self._steps:
            if name in done:
                continue
            with db:
                step(db)
                db.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", (name, time.time()))


migrations = Migrations()


@migrations
def m001_conversations_and_messages(db: sqlite3.Connection) -> None:
    db.execute(
        """
        CREATE TABLE conversations (
            id INTEGER PRIMARY KEY,
            platform TEXT NOT NULL,
            channel TEXT NOT NULL,
            thread TEXT NOT NULL DEFAULT '',
            model TEXT,
            system TEXT,
            created_at REAL NOT NULL,
            UNIQUE (platform, channel, thread)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            role TEXT NOT NULL,
            content TEXT NOT NULL,
            user_id TEXT,
            created_at REAL NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX messages_by_conversation ON messages (conversation_id, id)")


@migrations
def m002_seen_events(db: sqlite3.Connection) -> None:
    # Platforms redeliver events (Slack retries a slow one, Telegram repeats unacknowledged
    # updates after a crash); remembering their ids here is what keeps replies from doubling.
    db.execute(
        """
        CREATE TABLE seen_events (
            platform TEXT NOT NULL,
            event_id TEXT NOT NULL,
            seen_at REAL NOT NULL,
            PRIMARY KEY (platform, event_id)
        )
        """
    )


@migrations
def m003_strangers_told(db: sqlite3.Connection) -> None:
    # Strangers are told once that the bot will not answer them, then ignored.
    db.execute(
        """
        CREATE TABLE strangers_told (
            platform TEXT NOT NULL,
            user_id TEXT NOT NULL,
            told_at REAL NOT NULL,
            PRIMARY KEY (platform, user_id)
        )
        """
    )


@dataclass(frozen=True)
class ConversationKey:
    """Where a conversation happens: the platform, its channel (or chat) and thread ('' for none)."""

    platform: str
    channel: str
    thread: str = ""


@dataclass
class Conversation:
    """A conversation's settings; None means the bot's default."""

    id: int
    key: ConversationKey
    model: str | None
    system: str | None


@dataclass
class StoredMessage:
    """One remembered turn."""

    id: int
    role: str
    content: str
    user_id: str | None


class BotStore:
    """Conversations, messages and small bookkeeping for one bot, in SQLite. Use `async with`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    async def __aenter__(self) -> BotStore:
        await asyncio.to_thread(self._open)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit, transactions only where `with db:` opens one.
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk when it returns, which is what "acknowledged" promises.
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA busy_timeout=5000")
        migrations.apply(db)
        self._db = db

    async def close(self) -> None:
        """Close the database file."""
        if self._db is not None:
            db, self._db = self._db, None
            await asyncio.to_thread(db.close)

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            if self._db is None:
                raise RuntimeError("the bot store is not open")
            with self._lock:
                return work(self._db)

        return await asyncio.to_thread(locked)

    # --- conversations ----------------------------------------------------------

    async def conversation(self, key: ConversationKey) -> Conversation:
        """The conversation at `key`, created on first use."""

        def work(db: sqlite3.Connection) -> Conversation:
            with db:
                db.execute(
                    "INSERT OR IGNORE INTO conversations (platform, channel, thread, created_at) VALUES (?, ?, ?, ?)",
                    (key.platform, key.channel, key.thread, time.time()),
                )
                row = db.execute(
                    "SELECT id, model, system FROM conversations WHERE platform = ? AND channel = ? AND thread = ?",
                    (key.platform, key.channel, key.thread),
                ).fetchone()
            return Conversation(id=row[0], key=key, model=row[1], system=row[2])

        return await self._run(work)

    async def set_model(self, conversation_id: int, model: str | None) -> None:
        """Use `model` in this conversation from now on (None: the bot's default)."""
        await self._update(conversation_id, "model", model)

    async def set_system(self, conversation_id: int, system: str | None) -> None:
        """Give this conversation its own system prompt (None: the bot's default)."""
        await self._update(conversation_id, "system", system)

    async def _update(self, conversation_id: int, column: str, value: str | None) -> None:
        # `column` is one of two literals above, never user input.
        def work(db: sqlite3.Connection) -> None:
            with db:
                db.execute(f"UPDATE conversations SET {column} = ? WHERE id = ?", (value, conversation_id))

        await self._run(work)

    # --- messages -----------------------------------------------------------------

    async def add_message(self, conversation_id: int, role: str, content: str, user_id: str | None = None) -> int:
        """Append a message and commit; returns its id."""

        def work(db: sqlite3.Connection) -> int:
            with db:
                cursor = db.execute(
                    "INSERT INTO messages (conversation_id, role, content, user_id, created_at) VALUES (?, ?, ?, ?, ?)",
                    (conversation_id, role, content, user_id, time.time()),
                )
            return int(cursor.lastrowid)

        return await self._run(work)

    async def add_user_message(
        self, conversation_id: int, platform: str, event_id: str, content: str, user_id: str
    ) -> int | None:
        """Record an incoming message once per event id, in one transaction; None if the event was seen before."""

        def work(db: sqlite3.Connection) -> int | None:
            with db:
                seen = db.execute(
                    "INSERT OR IGNORE INTO seen_events (platform, event_id, seen_at) VALUES (?, ?, ?)",
                    (platform, event_id, time.time()),
                )
                if seen.rowcount == 0:
                    return None
                cursor = db.execute(
                    "INSERT INTO messages (conversation_id, role, content, user_id, created_at) VALUES (?, ?, ?, ?, ?)",
                    (conversation_id, "user", content, user_id, time.time()),
                )
            return int(cursor.lastrowid)

        return await self._run(work)

    async def mark_seen(self, platform: str, event_id: str) -> bool:
        """Remember an event id; False if it was already remembered (a redelivery)."""

        def work(db: sqlite3.Connection) -> bool:
            with db:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO seen_events (platform, event_id, seen_at) VALUES (?, ?, ?)",
                    (platform, event_id, time.time()),
                )
            return cursor.rowcount == 1

        return await self._run(work)

    async def history(self, conversation_id: int) -> list[StoredMessage]:
        """The conversation's messages, oldest first."""

        def work(db: sqlite3.Connection) -> list[StoredMessage]:
            rows = db.execute(
                "SELECT id, role, content, user_id FROM messages WHERE conversation_id = ? ORDER BY id",
                (conversation_id,),
            ).fetchall()
            return [StoredMessage(id=row[0], role=row[1], content=row[2], user_id=row[3]) for row in rows]

        return await self._run(work)

    async def history_for(self, conversation_id: int, message_id: int) -> list[StoredMessage]:
        """What the model sees when answering user message `message_id`, which comes last.

        Users' messages that arrived after it are left out (their turns come
        later); answers stored since it arrived are kept, since they answer
        earlier turns.
        """
        messages = await self.history(conversation_id)
        current = [message for message in messages if message.id == message_id]
        earlier = [
            message
            for message in messages
            if message.id != message_id and (message.role != "user" or message.id < message_id)
        ]
        return earlier + current

    async def forget(self, conversation_id: int) -> int:
        """Delete the conversation's messages (its model and system prompt stay); returns how many."""

        def work(db: sqlite3.Connection) -> int:
            with db:
                return db.execute("DELETE FROM messages WHERE conversation_id = ?", (conversation_id,)).rowcount

        return await self._run(work)

    # --- strangers ------------------------------------------------------------------

    async def first_refusal(self, platform: str, user_id: str) -> bool:
        """True the first time a stranger is refused (tell them), False ever after (stay silent)."""

        def work(db: sqlite3.Connection) -> bool:
            with db:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO strangers_told (platform, user_id, told_at) VALUES (?, ?, ?)",
                    (platform, user_id, time.time()),
                )
            return cursor.rowcount == 1

        return await self._run(work)
