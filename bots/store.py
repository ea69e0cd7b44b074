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
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

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


@migrations
def m004_owed_answers(db: sqlite3.Connection) -> None:
    # An answer is owed from the moment its question is committed until it has been delivered. A row still
    # open at start-up is an answer a crash (kill -9, OOM, power loss) interrupted: `reply` says where it was
    # going (and which message it had placed), `partial` what the user saw of it, `answer_id` whether it was
    # finished before the crash.
    db.execute(
        """
        CREATE TABLE owed_answers (
            question_id INTEGER PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
            reply TEXT NOT NULL,
            partial TEXT NOT NULL DEFAULT '',
            answer_id INTEGER REFERENCES messages(id) ON DELETE SET NULL,
            delivered_at REAL
        )
        """
    )
    db.execute("CREATE INDEX owed_answers_open ON owed_answers (question_id) WHERE delivered_at IS NULL")


@migrations
def m005_channel_cursors(db: sqlite3.Connection) -> None:
    # The newest post seen in each channel, in the platform's own clock, so a bot whose connection dropped
    # can ask the platform for what it missed.
    db.execute(
        """
        CREATE TABLE channel_cursors (
            platform TEXT NOT NULL,
            channel TEXT NOT NULL,
            position INTEGER NOT NULL,
            PRIMARY KEY (platform, channel)
        )
        """
    )


@migrations
def m006_answers_by_question(db: sqlite3.Connection) -> None:
    # History is read in question-answer order, which looks each answer's question up by the answer's id.
    db.execute("CREATE INDEX owed_answers_by_answer ON owed_answers (answer_id)")


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


ReplyState = Mapping[str, Any]
"""Where a reply goes and what it has placed so far, as JSON values (see `ReplyStream.state`)."""


@dataclass
class OwedAnswer:
    """An answer that was promised (its question is stored) but never delivered: a crash came first."""

    question_id: int
    key: ConversationKey
    asked_at: float
    """When the question was stored (Unix time)."""
    reply: dict[str, Any]
    """The reply's last recorded state, which rebuilds it."""
    partial: str
    """The Markdown the user last saw of the answer ('' if nothing)."""
    answer: str | None
    """The finished answer, if it was stored before the crash (then only its delivery is owed)."""


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

            def close() -> None:
                # Under the lock: a statement whose awaiting task was cancelled may still be running in its thread.
                with self._lock:
                    db.close()

            await asyncio.to_thread(close)

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                if self._db is None:
                    raise RuntimeError("the bot store is not open")
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

    async def add_user_message(
        self,
        conversation_id: int,
        platform: str,
        event_id: str,
        content: str,
        user_id: str,
        reply: ReplyState | None = None,
    ) -> int | None:
        """Record an incoming message once per event id, and the answer it is owed, in one transaction.

        None if the event was seen before. `reply` is where the answer goes (see `owed_answers`).
        """

        def work(db: sqlite3.Connection) -> int | None:
            with db:
                if not _mark_seen(db, platform, event_id):
                    return None
                question_id = _insert_message(db, conversation_id, "user", content, user_id)
                db.execute(
                    "INSERT INTO owed_answers (question_id, reply) VALUES (?, ?)",
                    (question_id, json.dumps(reply or {})),
                )
            return question_id

        return await self._run(work)

    async def mark_seen(self, platform: str, event_id: str) -> bool:
        """Remember an event id; False if it was already remembered (a redelivery)."""

        def work(db: sqlite3.Connection) -> bool:
            with db:
                return _mark_seen(db, platform, event_id)

        return await self._run(work)

    async def history(self, conversation_id: int) -> list[StoredMessage]:
        """The conversation's messages in conversation order: each answer right after the question it answers.

        Questions keep the order they arrived in, but answers are stored when they finish: q1, q2 and q3 sent
        while the bot was busy are stored before a1, a2 and a3. `owed_answers` links each answer to its question,
        so the pairs are put back together here (q1, a1, q2, a2, q3, a3).
        """

        def work(db: sqlite3.Connection) -> list[StoredMessage]:
            rows = db.execute(
                """
                SELECT m.id, m.role, m.content, m.user_id FROM messages m
                LEFT JOIN owed_answers o ON o.answer_id = m.id
                WHERE m.conversation_id = ?
                ORDER BY coalesce(o.question_id, m.id), m.id
                """,
                (conversation_id,),
            ).fetchall()
            return [StoredMessage(id=row[0], role=row[1], content=row[2], user_id=row[3]) for row in rows]

        return await self._run(work)

    async def history_for(self, conversation_id: int, message_id: int) -> list[StoredMessage]:
        """What the model sees when answering user message `message_id`: the turns before it, then the message.

        Questions that arrived after it, and their answers, are left out: their turns come later.
        """
        messages = await self.history(conversation_id)
        ids = [message.id for message in messages]
        return messages[: ids.index(message_id) + 1] if message_id in ids else messages

    async def forget(self, conversation_id: int) -> int:
        """Delete the conversation's messages (its model and system prompt stay); returns how many."""

        def work(db: sqlite3.Connection) -> int:
            with db:
                return db.execute("DELETE FROM messages WHERE conversation_id = ?", (conversation_id,)).rowcount

        return await self._run(work)

    # --- owed answers -----------------------------------------------------------------

    async def note_progress(self, question_id: int, reply: ReplyState, partial: str) -> None:
        """Record how far the answer to `question_id` got: the reply's state and the Markdown shown so far."""

        def work(db: sqlite3.Connection) -> None:
            with db:
                db.execute(
                    "UPDATE owed_answers SET reply = ?, partial = ? WHERE question_id = ?",
                    (json.dumps(dict(reply)), partial, question_id),
                )

        await self._run(work)

    async def add_answer(self, conversation_id: int, question_id: int, content: str) -> int:
        """Store the finished answer to `question_id`, and that it is finished, in one transaction."""

        def work(db: sqlite3.Connection) -> int:
            with db:
                answer_id = _insert_message(db, conversation_id, "assistant", content, None)
                db.execute("UPDATE owed_answers SET answer_id = ? WHERE question_id = ?", (answer_id, question_id))
            return answer_id

        return await self._run(work)

    async def withdraw_answer(self, answer_id: int) -> None:
        """Delete a stored answer the user never saw; its question is then owed no stored answer any more."""

        def work(db: sqlite3.Connection) -> None:
            with db:  # owed_answers.answer_id is set to NULL by its foreign key
                db.execute("DELETE FROM messages WHERE id = ? AND role = 'assistant'", (answer_id,))

        await self._run(work)

    async def mark_delivered(self, question_id: int) -> None:
        """The answer to `question_id` is shown (or its failure told): nothing is owed any more."""

        def work(db: sqlite3.Connection) -> None:
            with db:
                db.execute("UPDATE owed_answers SET delivered_at = ? WHERE question_id = ?", (time.time(), question_id))

        await self._run(work)

    async def owed_answers(self) -> list[OwedAnswer]:
        """Every answer promised and not delivered, oldest question first."""

        def work(db: sqlite3.Connection) -> list[OwedAnswer]:
            rows = db.execute(
                """
                SELECT o.question_id, c.platform, c.channel, c.thread, q.created_at, o.reply, o.partial, a.content
                FROM owed_answers o
                JOIN messages q ON q.id = o.question_id
                JOIN conversations c ON c.id = q.conversation_id
                LEFT JOIN messages a ON a.id = o.answer_id
                WHERE o.delivered_at IS NULL
                ORDER BY o.question_id
                """
            ).fetchall()
            return [
                OwedAnswer(
                    question_id=row[0],
                    key=ConversationKey(row[1], row[2], row[3]),
                    asked_at=row[4],
                    reply=json.loads(row[5]),
                    partial=row[6],
                    answer=row[7],
                )
                for row in rows
            ]

        return await self._run(work)

    # --- channel cursors ----------------------------------------------------------------

    async def advance_cursor(self, platform: str, channel: str, position: int) -> None:
        """Remember that the bot has seen `channel` up to `position` (never moves back)."""

        def work(db: sqlite3.Connection) -> None:
            with db:
                db.execute(
                    """
                    INSERT INTO channel_cursors (platform, channel, position) VALUES (?, ?, ?)
                    ON CONFLICT (platform, channel) DO UPDATE SET position = max(position, excluded.position)
                    """,
                    (platform, channel, position),
                )

        await self._run(work)

    async def cursors(self, platform: str) -> dict[str, int]:
        """Each channel the bot has seen on `platform`, and how far."""

        def work(db: sqlite3.Connection) -> dict[str, int]:
            rows = db.execute("SELECT channel, position FROM channel_cursors WHERE platform = ?", (platform,))
            return {row[0]: int(row[1]) for row in rows}

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


def _insert_message(db: sqlite3.Connection, conversation_id: int, role: str, content: str, user_id: str | None) -> int:
    cursor = db.execute(
        "INSERT INTO messages (conversation_id, role, content, user_id, created_at) VALUES (?, ?, ?, ?, ?)",
        (conversation_id, role, content, user_id, time.time()),
    )
    return int(cursor.lastrowid or 0)


def _mark_seen(db: sqlite3.Connection, platform: str, event_id: str) -> bool:
    cursor = db.execute(
        "INSERT OR IGNORE INTO seen_events (platform, event_id, seen_at) VALUES (?, ?, ?)",
        (platform, event_id, time.time()),
    )
    return cursor.rowcount == 1
