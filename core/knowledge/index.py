"""One knowledge base = one SQLite file: documents, their chunks, an FTS5 index and sqlite-vec vectors.

Writes are one transaction per document, so a process killed mid-way (even
with SIGKILL) leaves every document either fully indexed or not at all, and
the next run finds it by its content hash. The schema grows by named,
append-only migrations.
"""

from __future__ import annotations

import functools
import json
import os
import re
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import apsw

from ..errors import IngleError, InvalidRequest, QueueFull, StorageFull
from .documents import Chunk

try:  # vectors are optional: without the extension the index still answers with BM25
    import sqlite_vec
except ImportError:  # pragma: no cover - the dependency is declared; a platform may lack its wheel
    sqlite_vec = None

BUSY_TIMEOUT_MS = 5_000
"""How long a write waits for another process's: each document is its own short transaction, so a wait longer
than this means a stuck writer, and the user hears about it rather than watching nothing happen."""


class KnowledgeBaseUnavailable(IngleError):
    """SQLite could not open, read or write a knowledge base file; the message says what to do."""


class KnowledgeBaseDamaged(KnowledgeBaseUnavailable):
    """The file is not a usable SQLite database (damaged, or something else under a knowledge base's name)."""


class KnowledgeBaseBusy(QueueFull):
    """Another process holds the knowledge base's write lock past BUSY_TIMEOUT_MS; try again later."""


class KnowledgeBaseStorageFull(StorageFull):
    """The disk holding the knowledge base is full."""


def storage_error(path: Path, error: apsw.Error) -> IngleError:
    """The sentence for an apsw error on a knowledge base file (the one place apsw's errors are translated)."""
    name = path.stem
    if isinstance(error, apsw.BusyError | apsw.LockedError):
        return KnowledgeBaseBusy(
            f"Another process is writing to the knowledge base '{name}': try again when it has finished.",
            retry_after=BUSY_TIMEOUT_MS / 1000,
        )
    if isinstance(error, apsw.FullError) or (isinstance(error, apsw.IOError) and _disk_full(path)):
        return KnowledgeBaseStorageFull(f"The disk holding {path} is full: free some space and try again.")
    if isinstance(error, apsw.NotADBError | apsw.CorruptError):
        return KnowledgeBaseDamaged(
            f"{path} is damaged or not a knowledge base: delete it with `ingle kb rm {name}` and create it again."
        )
    if isinstance(error, apsw.ReadOnlyError | apsw.CantOpenError | apsw.IOError) and _read_only_disk(path):
        return KnowledgeBaseUnavailable(
            f"{path} is on a read-only disk: ingle writes to a knowledge base even to search it "
            "(SQLite's WAL); remount it read-write or use another home."
        )
    if isinstance(error, apsw.ReadOnlyError):
        return KnowledgeBaseUnavailable(
            f"{path} is read-only here (a read-only disk, or a file of another user): "
            "ingle needs to write to it even to read it; fix its permissions or use another home."
        )
    if isinstance(error, apsw.CantOpenError | apsw.PermissionsError | apsw.AuthError):
        return KnowledgeBaseUnavailable(
            f"ingle cannot open {path}: check that you may read and write it and its folder (a read-only disk?)."
        )
    if isinstance(error, apsw.IOError):
        return KnowledgeBaseUnavailable(
            f"Reading or writing {path} failed (a disk I/O error): check that the disk is not full or failing."
        )
    return KnowledgeBaseUnavailable(f"SQLite failed on {path} ({type(error).__name__}): {error}.")


def _disk_full(path: Path) -> bool:
    """Whether the disk has no room for SQLite's WAL files, whose creation fails as a plain I/O error."""
    try:
        found = os.statvfs(path.parent)
    except (OSError, AttributeError):
        return False
    return found.f_bavail * found.f_frsize < 2**20


def _read_only_disk(path: Path) -> bool:
    try:
        return bool(os.statvfs(path.parent).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (Windows): the general sentence then
        return False


P = ParamSpec("P")
R = TypeVar("R")


def _translated(method: Callable[Concatenate[KnowledgeIndex, P], R]) -> Callable[Concatenate[KnowledgeIndex, P], R]:
    """The method with apsw's errors turned into storage_error's sentences."""

    @functools.wraps(method)
    def translated(self: KnowledgeIndex, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        except apsw.Error as error:
            raise storage_error(self.path, error) from error

    return translated


MIGRATIONS: list[tuple[str, str]] = [
    (
        "001_documents_chunks_fts",
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE sources (id INTEGER PRIMARY KEY, location TEXT NOT NULL UNIQUE, added_at TEXT NOT NULL);
        CREATE TABLE documents (
            id INTEGER PRIMARY KEY,
            source_id INTEGER NOT NULL REFERENCES sources(id) ON DELETE CASCADE,
            location TEXT NOT NULL UNIQUE,
            title TEXT NOT NULL,
            content_hash TEXT NOT NULL,
            indexed_at TEXT NOT NULL
        );
        CREATE INDEX documents_by_source ON documents(source_id);
        CREATE TABLE chunks (
            id INTEGER PRIMARY KEY,
            document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
            ordinal INTEGER NOT NULL,
            headings TEXT NOT NULL,
            text TEXT NOT NULL,
            start_line INTEGER,
            end_line INTEGER,
            page INTEGER,
            UNIQUE (document_id, ordinal)
        );
        CREATE VIRTUAL TABLE chunks_fts USING fts5(
            headings, text, content='chunks', content_rowid='id', tokenize='porter unicode61 remove_diacritics 2'
        );
        CREATE TRIGGER chunks_fts_insert AFTER INSERT ON chunks BEGIN
            INSERT INTO chunks_fts(rowid, headings, text) VALUES (new.id, new.headings, new.text);
        END;
        CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks BEGIN
            INSERT INTO chunks_fts(chunks_fts, rowid, headings, text) VALUES ('delete', old.id, old.headings, old.text);
        END;
        """,
    ),
    (
        # Files written while foreign_keys stayed off kept the chunks of dropped and re-indexed documents.
        "002_drop_orphaned_chunks",
        "DELETE FROM chunks WHERE document_id NOT IN (SELECT id FROM documents);",
    ),
]

# Words that would make every chunk match a natural-language question.
_STOPWORDS = frozenset(
    {
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "do",
        "does",
        "for",
        "from",
        "how",
        "i",
        "in",
        "is",
        "it",
        "of",
        "on",
        "or",
        "so",
        "that",
        "the",
        "this",
        "to",
        "was",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
        "my",
        "me",
        "we",
        "our",
        "there",
        "their",
        "them",
        "then",
        "than",
        "into",
        "about",
    }
)


@dataclass(frozen=True)
class StoredChunk:
    """A chunk as stored, with the document it belongs to."""

    id: int
    location: str
    title: str
    chunk: Chunk


@dataclass(frozen=True)
class SourceInfo:
    """A path or URL given to `add`, with what it currently holds."""

    location: str
    added_at: str
    documents: int


@dataclass(frozen=True)
class IndexStats:
    """Counts shown by `ingle kb show`."""

    documents: int
    chunks: int
    vectors: int
    embedding_model: str | None
    size_bytes: int


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def fts_query(question: str) -> str | None:
    """An FTS5 expression for a question: its content words, each quoted, any of them; None if it has none."""
    words = [w for w in re.findall(r"\w+", question.lower()) if w not in _STOPWORDS]
    if not words:
        return None
    return " OR ".join(f'"{word}"' for word in dict.fromkeys(words))


def _pack(vector: Sequence[float]) -> bytes:
    return struct.pack(f"{len(vector)}f", *vector)


class KnowledgeIndex:
    """The SQLite file of one knowledge base. Blocking: call it off the event loop."""

    def __init__(self, path: Path) -> None:
        """Open (creating it if there is none) and migrate; storage_error's sentence if SQLite cannot."""
        self.path = path
        try:
            self._db = apsw.Connection(str(path))
        except apsw.Error as error:
            raise storage_error(path, error) from error
        try:
            self._db.setbusytimeout(BUSY_TIMEOUT_MS)
            # One statement per call: apsw runs the statements after one that returns rows (journal_mode
            # answers "wal") only as those rows are read, so foreign_keys, and with it ON DELETE CASCADE
            # for the chunks of a dropped document, would silently stay off.
            for pragma in ("journal_mode=WAL", "foreign_keys=ON", "synchronous=NORMAL"):
                self._db.execute(f"PRAGMA {pragma}").fetchall()
            self.vectors_available = self._load_vectors()
            self._migrate()
        except apsw.Error as error:
            self._db.close()
            raise storage_error(path, error) from error

    def _load_vectors(self) -> bool:
        if sqlite_vec is None:
            return False
        try:
            self._db.enable_load_extension(True)
            self._db.load_extension(sqlite_vec.loadable_path())
            return True
        except apsw.Error:
            return False
        finally:
            self._db.enable_load_extension(False)

    def _migrate(self) -> None:
        with self._db:
            self._db.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
            done = {row[0] for row in self._db.execute("SELECT name FROM migrations")}
            for name, script in MIGRATIONS:
                if name not in done:
                    self._db.execute(script)
                    self._db.execute("INSERT INTO migrations VALUES (?, ?)", (name, _now()))

    @_translated
    def close(self) -> None:
        """Close the database file."""
        self._db.close()

    # --- metadata and sources ------------------------------------------------------

    @_translated
    def meta(self, key: str) -> str | None:
        """A metadata value (e.g. `embedding_model`)."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    @_translated
    def set_meta(self, key: str, value: str) -> None:
        """Set a metadata value."""
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    @_translated
    def add_source(self, location: str) -> int:
        """Record a path or URL to index (once); its id."""
        with self._db:
            self._db.execute("INSERT OR IGNORE INTO sources(location, added_at) VALUES (?, ?)", (location, _now()))
        return int(self._scalar("SELECT id FROM sources WHERE location = ?", (location,)))

    @_translated
    def source_id(self, location: str) -> int | None:
        """The id of the source recorded for `location`, or None."""
        row = self._db.execute("SELECT id FROM sources WHERE location = ?", (location,)).fetchone()
        return int(row[0]) if row else None

    @_translated
    def sources(self) -> list[tuple[int, str]]:
        """Every source's id and location, in the order added."""
        return [(int(i), str(loc)) for i, loc in self._db.execute("SELECT id, location FROM sources ORDER BY id")]

    @_translated
    def source_infos(self) -> list[SourceInfo]:
        """Every source with its document count."""
        rows = self._db.execute(
            "SELECT s.location, s.added_at, count(d.id) FROM sources s LEFT JOIN documents d ON d.source_id = s.id "
            "GROUP BY s.id ORDER BY s.id"
        )
        return [SourceInfo(location, added_at, count) for location, added_at, count in rows]

    # --- documents -----------------------------------------------------------------

    @_translated
    def content_hash(self, location: str) -> str | None:
        """The content hash the document at `location` was indexed with, or None if it is not indexed."""
        row = self._db.execute("SELECT content_hash FROM documents WHERE location = ?", (location,)).fetchone()
        return row[0] if row else None

    @_translated
    def documents_of(self, source_id: int) -> list[str]:
        """The locations of the documents a source brought in."""
        rows = self._db.execute("SELECT location FROM documents WHERE source_id = ?", (source_id,))
        return [row[0] for row in rows]

    @_translated
    def put_document(
        self,
        source_id: int,
        location: str,
        title: str,
        content_hash: str,
        chunks: list[Chunk],
        vectors: list[list[float]] | None,
    ) -> None:
        """Replace whatever is indexed for `location` with these chunks (and vectors), in one transaction."""
        with self._db:
            self._delete_document(location)
            self._db.execute(
                "INSERT INTO documents(source_id, location, title, content_hash, indexed_at) VALUES (?, ?, ?, ?, ?)",
                (source_id, location, title, content_hash, _now()),
            )
            document_id = self._db.last_insert_rowid()
            ids = []
            for ordinal, chunk in enumerate(chunks):
                self._db.execute(
                    "INSERT INTO chunks(document_id, ordinal, headings, text, start_line, end_line, page) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        document_id,
                        ordinal,
                        json.dumps(chunk.headings, ensure_ascii=False),
                        chunk.text,
                        chunk.start_line,
                        chunk.end_line,
                        chunk.page,
                    ),
                )
                ids.append(self._db.last_insert_rowid())
            if vectors is not None:
                self._put_vectors(zip(ids, vectors, strict=True))

    @_translated
    def remove_document(self, location: str) -> None:
        """Drop a document and its chunks."""
        with self._db:
            self._delete_document(location)

    @_translated
    def remove_source(self, source_id: int) -> None:
        """Drop a source and every document it brought in."""
        with self._db:
            for location in self.documents_of(source_id):
                self._delete_document(location)
            self._db.execute("DELETE FROM sources WHERE id = ?", (source_id,))

    def _delete_document(self, location: str) -> None:
        if self._has_vector_table():
            self._db.execute(
                "DELETE FROM chunk_vectors WHERE rowid IN "
                "(SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id WHERE d.location = ?)",
                (location,),
            )
        self._db.execute("DELETE FROM documents WHERE location = ?", (location,))

    # --- vectors -------------------------------------------------------------------

    def _has_vector_table(self) -> bool:
        row = self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'chunk_vectors'").fetchone()
        return row is not None and self.vectors_available

    def _put_vectors(self, rows: Iterable[tuple[int, list[float]]]) -> None:
        rows = list(rows)
        if not rows:
            return
        dimensions = len(rows[0][1])
        if not self._has_vector_table():
            self._db.execute(
                f"CREATE VIRTUAL TABLE chunk_vectors USING vec0(embedding float[{dimensions}] distance_metric=cosine)"
            )
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('dimensions', ?)", (str(dimensions),))
        elif self.meta("dimensions") != str(dimensions):
            raise InvalidRequest(
                f"{self.path.stem} holds {self.meta('dimensions')}-dimensional vectors, not {dimensions}: "
                "use the embedding model it was built with, or remove and re-create it."
            )
        self._db.executemany(
            "INSERT OR REPLACE INTO chunk_vectors(rowid, embedding) VALUES (?, ?)",
            [(chunk_id, _pack(vector)) for chunk_id, vector in rows],
        )

    @_translated
    def put_vectors(self, rows: list[tuple[int, list[float]]]) -> None:
        """Store vectors for chunks that lack them."""
        with self._db:
            self._put_vectors(rows)

    @_translated
    def chunks_without_vectors(self, limit: int) -> list[StoredChunk]:
        """Up to `limit` chunks that have no vector yet (indexed while no embedding model was there)."""
        where = "WHERE c.id NOT IN (SELECT rowid FROM chunk_vectors)" if self._has_vector_table() else ""
        return self._chunks_where(f"{where} ORDER BY c.id LIMIT {int(limit)}", ())

    # --- search --------------------------------------------------------------------

    @_translated
    def search_text(self, question: str, limit: int) -> list[int]:
        """Chunk ids by BM25 (headings weigh double), best first."""
        query = fts_query(question)
        if query is None:
            return []
        rows = self._db.execute(
            "SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY bm25(chunks_fts, 2.0, 1.0) LIMIT ?",
            (query, limit),
        )
        return [int(row[0]) for row in rows]

    @_translated
    def search_vectors(self, vector: list[float], limit: int) -> list[tuple[int, float]]:
        """Chunk ids and cosine similarities of the nearest vectors, best first."""
        if not self._has_vector_table():
            return []
        rows = self._db.execute(
            "SELECT rowid, distance FROM chunk_vectors WHERE embedding MATCH ? AND k = ? ORDER BY distance",
            (_pack(vector), limit),
        )
        return [(int(chunk_id), 1.0 - float(distance)) for chunk_id, distance in rows]

    @_translated
    def has_vectors(self) -> bool:
        """Whether any chunk has a vector (and vectors can be searched here)."""
        return (
            self._has_vector_table() and self._db.execute("SELECT 1 FROM chunk_vectors LIMIT 1").fetchone() is not None
        )

    @_translated
    def chunks(self, ids: list[int]) -> dict[int, StoredChunk]:
        """The stored chunks with these ids."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        return {c.id: c for c in self._chunks_where(f"WHERE c.id IN ({marks})", tuple(ids))}

    def _chunks_where(self, clause: str, parameters: tuple[object, ...]) -> list[StoredChunk]:
        rows = self._db.execute(
            "SELECT c.id, d.location, d.title, c.headings, c.text, c.start_line, c.end_line, c.page "
            f"FROM chunks c JOIN documents d ON d.id = c.document_id {clause}",
            parameters,
        )
        return [
            StoredChunk(int(i), loc, title, Chunk(text, tuple(json.loads(headings)), start, end, page))
            for i, loc, title, headings, text, start, end, page in rows
        ]

    @_translated
    def stats(self) -> IndexStats:
        """Counts of documents, chunks and vectors."""
        documents = int(self._scalar("SELECT count(*) FROM documents"))
        chunks = int(self._scalar("SELECT count(*) FROM chunks"))
        vectors = int(self._scalar("SELECT count(*) FROM chunk_vectors")) if self._has_vector_table() else 0
        return IndexStats(documents, chunks, vectors, self.meta("embedding_model"), self.path.stat().st_size)

    def _scalar(self, sql: str, parameters: tuple[object, ...] = ()) -> Any:
        """The first column of the first row (the query always has one)."""
        row = self._db.execute(sql, parameters).fetchone()
        if row is None:
            raise RuntimeError(f"no row for {sql}")
        return row[0]
