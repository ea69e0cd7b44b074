"""Stored Responses (`/v1/responses`): one SQLite file under the home, so `previous_response_id` works.

Each row keeps the response as answered and the conversation that led to it
(the chat turns, without the instructions, which OpenAI does not carry over),
so a follow-up continues it. Rows older than `responses_keep_days` are
deleted whenever a response is stored. The schema grows by append-only,
named migrations; sqlite3 blocks, so every call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# (name, statement), applied once each, in order. Never edit or reorder one that shipped; append.
MIGRATIONS: list[tuple[str, str]] = [
    (
        "m001_responses",
        """
        CREATE TABLE responses (
            id TEXT PRIMARY KEY,
            created_at REAL NOT NULL,
            conversation TEXT NOT NULL,
            response TEXT NOT NULL
        )
        """,
    ),
    ("m002_responses_by_age", "CREATE INDEX responses_by_age ON responses (created_at)"),
]


@dataclass
class StoredResponse:
    """A response and the conversation (chat turns as dicts) that includes its answer."""

    response: dict[str, Any]
    conversation: list[dict[str, Any]]


class ResponseStore:
    """Responses kept for `keep_seconds`; use as an async context manager."""

    def __init__(self, path: Path, keep_seconds: float) -> None:
        self._path = path
        self._keep_seconds = keep_seconds
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    async def __aenter__(self) -> ResponseStore:
        await asyncio.to_thread(self._open)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._run(lambda db: db.close())

    def _open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
        done = {row[0] for row in db.execute("SELECT name FROM _migrations")}
        for name, statement in MIGRATIONS:
            if name not in done:
                with db:
                    db.execute("BEGIN")
                    db.execute(statement)
                    db.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", (name, time.time()))
        self._db = db

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                if self._db is None:
                    raise RuntimeError("the response store is closed")
                return work(self._db)

        return await asyncio.to_thread(locked)

    async def put(self, response_id: str, stored: StoredResponse) -> None:
        """Keep a response, and drop the expired ones."""
        now = time.time()
        row = (response_id, now, json.dumps(stored.conversation), json.dumps(stored.response))

        def write(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN")
                db.execute("DELETE FROM responses WHERE created_at < ?", (now - self._keep_seconds,))
                db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?)", row)

        await self._run(write)

    async def get(self, response_id: str) -> StoredResponse | None:
        """A stored response that has not expired, or None."""
        oldest = time.time() - self._keep_seconds
        query = "SELECT conversation, response FROM responses WHERE id = ? AND created_at >= ?"
        row = await self._run(lambda db: db.execute(query, (response_id, oldest)).fetchone())
        if row is None:
            return None
        return StoredResponse(response=json.loads(row[1]), conversation=json.loads(row[0]))

    async def delete(self, response_id: str) -> bool:
        """Forget a response; False if there was none."""
        cursor = await self._run(lambda db: db.execute("DELETE FROM responses WHERE id = ?", (response_id,)))
        return cursor.rowcount > 0
