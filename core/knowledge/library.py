"""The knowledge bases under the home: create, add sources, sync, search, remove.

Files and URLs are read by the process that runs this (the CLI reads them
with the rights of the user at the shell); the daemon's HTTP API only takes
uploaded text. Embeddings come from the engine (or the daemon) through the
small Embedder protocol; without an embedding model everything still works
on BM25 alone, and the result says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ParamSpec, Protocol, TypeVar

import httpx

from ..errors import InvalidRequest, KnowledgeBaseNotFound, ModelNotFound, SourceError, UnsupportedFeature
from ..generation import EmbeddingResult
from ..regular_files import NotARegularFile, kind_of_file, read_regular_file
from ..settings import Settings
from .chunking import chunk_blocks
from .documents import Chunk
from .index import IndexStats, KnowledgeBaseDamaged, KnowledgeBaseUnavailable, KnowledgeIndex, SourceInfo
from .readers import SUPPORTED, UnreadableDocument, kind_of, read_document
from .retrieval import SearchMode, SearchResult, search_indexes

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
"""A knowledge base name, matched whole (fullmatch: `$` would let a trailing newline through)."""
READER_VERSION = "2"
"""Part of every content hash: bump it when readers or chunking change, and sync re-indexes everything."""
MAX_DOCUMENT_BYTES = 50 * 1024 * 1024
MAX_DOCUMENT_CHUNKS = 2_000
"""Chunks kept per document; with readers.MAX_DOCUMENT_CHARS, what bounds one file's cost to index and embed."""
MAX_FILES_PER_SOURCE = 100_000
EMBED_BATCH = 28
"""Chunks embedded per engine call: 4 full decodes of the embedding context's 7 sequences."""
_SKIPPED_FOLDERS = frozenset({"node_modules", "__pycache__"})


class Embedder(Protocol):
    """What the knowledge base needs from the engine or the daemon's client."""

    async def embed(
        self, model: str, inputs: list[str], keep_alive: float | None = None, truncate: bool = True
    ) -> EmbeddingResult:
        """One vector per input."""
        ...


@dataclass(frozen=True)
class IndexProgress:
    """Where a long add or sync is."""

    files_done: int
    files_total: int
    location: str
    chunks: int
    """Chunks written so far."""
    stage: str = "indexing"
    """What is being done to the files: indexing, or (through a daemon) reading, then uploading."""


ProgressCallback = Callable[[IndexProgress], None]


@dataclass
class IndexReport:
    """What an add or sync did."""

    indexed: int = 0
    unchanged: int = 0
    removed: int = 0
    chunks: int = 0
    failures: list[str] = field(default_factory=list)
    """One sentence per file or source that could not be read; the rest went on."""
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Prepared:
    """A document read and chunked, waiting to be embedded and written."""

    source_id: int
    location: str
    title: str
    digest: str
    chunks: list[Chunk]


@dataclass(frozen=True)
class KnowledgeBaseInfo:
    """`ingle kb show`: counts and sources."""

    name: str
    stats: IndexStats
    sources: list[SourceInfo]
    problem: str | None = None
    """Why the file cannot be used (damaged, not a file), with what to do; its counts are then zero."""


def validate_name(name: str) -> str:
    """`name` if it can name a knowledge base file, else InvalidRequest."""
    if not _NAME.fullmatch(name):
        raise InvalidRequest(
            f"{name!r} is not a knowledge base name: use lowercase letters, digits, '.', '_' or '-' (64 at most)."
        )
    return name


P = ParamSpec("P")
R = TypeVar("R")


async def _abandonable(function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """`function` in a thread of its own that the caller stops waiting for when cancelled (Ctrl-C).

    For reading and extracting documents, which touch no knowledge base: asyncio.to_thread's pool
    thread would hold up asyncio.run, and the interpreter's exit, until a slow read or a heavy PDF
    finished. A daemon thread's late result is dropped.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[R] = loop.create_future()

    def settle(result: R | None, error: Exception | None) -> None:
        if future.done():  # cancelled: nobody is waiting
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        try:
            outcome: tuple[R | None, Exception | None] = (function(*args, **kwargs), None)
        except Exception as error:
            outcome = (None, error)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:  # the loop is closed: the command was stopped
            pass

    threading.Thread(target=work, name="ingle-knowledge-read", daemon=True).start()
    return await future


async def _finished(function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """`function` in a worker thread, waited for to the end even when the caller is cancelled.

    For every call on a KnowledgeIndex: a write is one short transaction, and the index is closed
    right after a cancellation, which must not happen under a call still running on it.
    """
    task = asyncio.ensure_future(asyncio.to_thread(function, *args, **kwargs))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise


def content_hash(sha256: str) -> str:
    """The hash that decides whether a document changed: its bytes' sha256 (hex) with the reader version.

    Built from the plain sha256 so that a client of the daemon can send the sha256 of what it read
    (`POST /api/knowledge/NAME/sync`) and upload only what changed.
    """
    return hashlib.sha256(f"{READER_VERSION}:{sha256}".encode()).hexdigest()


def sha256_of(data: bytes) -> str:
    """The sha256 of a document's bytes, in hex."""
    return hashlib.sha256(data).hexdigest()


def is_url(location: str) -> bool:
    """Whether a source is fetched over HTTP rather than read from disk."""
    return location.startswith(("http://", "https://"))


def embedding_text(title: str, chunk: Chunk) -> str:
    """What gets embedded: the chunk under its document title and headings, which carry much of its meaning."""
    return "\n".join(part for part in (" › ".join((title, *chunk.headings)), chunk.text) if part)


class KnowledgeLibrary:
    """Every knowledge base of one home, as SQLite files in `<home>/knowledge/`."""

    def __init__(self, settings: Settings, embedder: Embedder | None = None) -> None:
        self.settings = settings
        self.folder = settings.home / "knowledge"
        self.embedder = embedder

    # --- the files -------------------------------------------------------------------

    def path(self, name: str) -> Path:
        """The SQLite file of a knowledge base."""
        return self.folder / f"{validate_name(name)}.sqlite"

    def names(self) -> list[str]:
        """The knowledge bases that exist, sorted."""
        if not self.folder.is_dir():
            return []
        # Everything under a knowledge base's name is listed, a damaged file or a folder too (info() says
        # what is wrong with it): hiding it would leave `kb create` answering "exists already" about nothing.
        return sorted(p.stem for p in self.folder.glob("*.sqlite") if _NAME.fullmatch(p.stem))

    def open(self, name: str) -> KnowledgeIndex:
        """An existing knowledge base; KnowledgeBaseNotFound if there is none of that name."""
        path = self.path(name)
        if not path.exists():
            raise KnowledgeBaseNotFound(
                f"There is no knowledge base '{name}': create it with `ingle kb create {name}`."
            )
        if not path.is_file():
            raise KnowledgeBaseDamaged(_not_a_file(path))
        return KnowledgeIndex(path)

    def create(self, name: str) -> None:
        """Create an empty knowledge base; InvalidRequest if it exists. Nothing is left behind if it fails."""
        path = self.path(name)
        if path.exists():
            raise InvalidRequest(
                f"The knowledge base '{name}' exists already; add to it with `ingle kb add {name} PATH`."
            )
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise KnowledgeBaseUnavailable(f"ingle cannot create {self.folder} ({error.strerror}).") from error
        try:
            KnowledgeIndex(path).close()
        except BaseException:
            # A disk that filled up half-way leaves no stub that lists as a knowledge base.
            with contextlib.suppress(OSError):
                _unlink_files(path)
            raise

    def remove(self, name: str) -> None:
        """Delete a knowledge base and its files, a damaged one too (it is never opened)."""
        path = self.path(name)
        if not path.exists():
            raise KnowledgeBaseNotFound(f"There is no knowledge base '{name}'.")
        if not path.is_file():
            raise KnowledgeBaseDamaged(_not_a_file(path))
        try:
            _unlink_files(path)
        except OSError as error:
            raise KnowledgeBaseUnavailable(f"ingle cannot delete {path} ({error.strerror}).") from error

    def info(self, name: str) -> KnowledgeBaseInfo:
        """Counts and sources of a knowledge base; a damaged one with zero counts and its `problem`."""
        try:
            index = self.open(name)
            try:
                return KnowledgeBaseInfo(name, index.stats(), index.source_infos())
            finally:
                index.close()
        except KnowledgeBaseDamaged as error:
            path = self.path(name)
            size = path.stat().st_size if path.is_file() else 0
            return KnowledgeBaseInfo(name, IndexStats(0, 0, 0, None, size), [], error.message)

    # --- indexing --------------------------------------------------------------------

    async def add(self, name: str, locations: list[str], progress: ProgressCallback | None = None) -> IndexReport:
        """Record paths (files, folders) and URLs as sources of `name` and index them."""
        index = await _finished(self.open, name)
        try:
            report = IndexReport()
            sources = []
            for resolved in await _abandonable(resolve_sources, locations, report):
                sources.append((await _finished(index.add_source, resolved), resolved))
            await self._index_sources(index, sources, report, progress, drop_missing=False)
            return report
        finally:
            index.close()

    async def sync(self, name: str, progress: ProgressCallback | None = None) -> IndexReport:
        """Re-read every source: changed documents re-indexed, removed ones dropped, unchanged ones kept."""
        index = await _finished(self.open, name)
        try:
            report = IndexReport()
            sources = await _finished(index.sources)
            await self._index_sources(index, sources, report, progress, drop_missing=True)
            return report
        finally:
            index.close()

    async def add_document(
        self, name: str, location: str, data: bytes, kind: str | None = None, source: str | None = None
    ) -> IndexReport:
        """Index one uploaded document (the HTTP API's way in: the daemon reads no paths and fetches no URLs).

        `source` is the path or URL given to `add` that the document was found under (its folder);
        by default the document is its own source.
        """
        index = await _finished(self.open, name)
        try:
            report = IndexReport()
            source_id = await _finished(index.add_source, source or location)
            vectors_on = await self._vectors_on(index, report)
            prepared = await self._prepare(index, source_id, location, data, kind, report)
            if prepared is not None:
                await self._write(index, [prepared], report, vectors_on)
            return report
        finally:
            index.close()

    async def plan_upload(
        self, name: str, source: str, sha256s: dict[str, str | None], remove_missing: bool
    ) -> tuple[list[str], IndexReport]:
        """A client's sync of one source: which of its documents to upload, the rest kept or dropped.

        `sha256s` maps every document the client found under `source` to the sha256 of its bytes
        (None: it could not read it this time, so what is stored stays).
        The source is recorded if it is new; stored documents of it that the client no longer
        has are dropped when `remove_missing`. Answers the documents that are new or changed, and
        gives vectors to chunks indexed while no embedding model was there.
        """
        index = await _finished(self.open, name)
        try:
            report = IndexReport()
            # One thread hop for the whole list: a source may hold 100,000 documents.
            upload = await _finished(_compare_source, index, source, sha256s, remove_missing, report)
            if await self._vectors_on(index, report):
                await self._embed_missing(index, report)
            return upload, report
        finally:
            index.close()

    def remove_location(self, name: str, location: str) -> int:
        """Drop a source and every document it brought in, or one document; how many documents went.

        KnowledgeBaseNotFound if `name` holds neither. A document dropped from a folder that is still
        a source comes back with the next sync, as the folder still holds it.
        """
        index = self.open(name)
        try:
            source_id = index.source_id(location)
            if source_id is not None:
                removed = len(index.documents_of(source_id))
                index.remove_source(source_id)
                return removed
            if index.content_hash(location) is not None:
                index.remove_document(location)
                return 1
        finally:
            index.close()
        raise KnowledgeBaseNotFound(f"The knowledge base '{name}' has no source or document '{location}'.")

    async def _index_sources(
        self,
        index: KnowledgeIndex,
        sources: list[tuple[int, str]],
        report: IndexReport,
        progress: ProgressCallback | None,
        drop_missing: bool,
    ) -> None:
        vectors_on = await self._vectors_on(index, report)
        plan: list[tuple[int, str]] = []
        for source_id, location in sources:
            documents = await _abandonable(documents_under, location, report)
            plan.extend((source_id, document) for document in documents)
            if drop_missing and not is_url(location):
                present = set(documents)
                for gone in await _finished(index.documents_of, source_id):
                    if gone not in present:
                        await _finished(index.remove_document, gone)
                        report.removed += 1
        pending: list[_Prepared] = []
        for done, (source_id, location) in enumerate(plan):
            if progress is not None:
                progress(IndexProgress(done, len(plan), location, report.chunks))
            try:
                data, kind = await read_source(location)
            except SourceError as error:
                report.failures.append(error.message)
                continue
            prepared = await self._prepare(index, source_id, location, data, kind, report)
            if prepared is not None:
                pending.append(prepared)
            if sum(len(p.chunks) for p in pending) >= EMBED_BATCH:
                await self._write(index, pending, report, vectors_on)
        await self._write(index, pending, report, vectors_on)
        if vectors_on:
            await self._embed_missing(index, report)
        if progress is not None:
            progress(IndexProgress(len(plan), len(plan), "", report.chunks))

    async def _prepare(
        self, index: KnowledgeIndex, source_id: int, location: str, data: bytes, kind: str | None, report: IndexReport
    ) -> _Prepared | None:
        """The document read and chunked, or None if it is unchanged or unreadable (noted in the report)."""
        digest = content_hash(sha256_of(data))
        if await _finished(index.content_hash, location) == digest:
            report.unchanged += 1
            return None
        try:
            title, chunks, cut = await _abandonable(_read_and_chunk, location, data, kind)
        except UnreadableDocument as error:
            report.failures.append(error.message)
            return None
        if cut is not None:
            report.notes.append(cut)
        return _Prepared(source_id, location, title, digest, chunks)

    async def _write(
        self, index: KnowledgeIndex, prepared: list[_Prepared], report: IndexReport, vectors_on: bool
    ) -> None:
        """Embed the chunks of several documents together (fewer, fuller decodes), then write each in its own
        transaction, so a kill between two writes loses no finished document."""
        vectors: list[list[float]] = []
        if vectors_on:
            vectors = await self._embed([embedding_text(p.title, chunk) for p in prepared for chunk in p.chunks])
        offset = 0
        for item in prepared:
            own = vectors[offset : offset + len(item.chunks)] if vectors_on else None
            offset += len(item.chunks)
            await _finished(
                index.put_document, item.source_id, item.location, item.title, item.digest, item.chunks, own
            )
            report.indexed += 1
            report.chunks += len(item.chunks)
        prepared.clear()

    async def _vectors_on(self, index: KnowledgeIndex, report: IndexReport) -> bool:
        """Whether chunks get vectors now; if not, a note in the report says why."""
        model = self.settings.embedding_model
        if not index.vectors_available:
            report.notes.append("sqlite-vec is not available on this platform: indexed for BM25 search only.")
            return False
        if self.embedder is None:
            return False
        recorded = await _finished(index.meta, "embedding_model")
        if recorded is not None and recorded != model:
            report.notes.append(
                f"this knowledge base was embedded with {recorded}, not {model}: indexed for BM25 search only."
            )
            return False
        try:
            await self.embedder.embed(model, ["probe"])
        except (ModelNotFound, UnsupportedFeature):
            report.notes.append(
                f"no embedding model {model}: indexed for BM25 search only; `ingle pull embed` and "
                "`ingle kb sync` add vector search."
            )
            return False
        if recorded is None:
            await _finished(index.set_meta, "embedding_model", model)
        return True

    async def _embed(self, texts: list[str]) -> list[list[float]]:
        if self.embedder is None:
            raise UnsupportedFeature("No embedding model is configured.")
        vectors: list[list[float]] = []
        for start in range(0, len(texts), EMBED_BATCH):
            result = await self.embedder.embed(self.settings.embedding_model, texts[start : start + EMBED_BATCH])
            vectors.extend(result.embeddings)
        return vectors

    async def _embed_missing(self, index: KnowledgeIndex, report: IndexReport) -> None:
        """Give vectors to chunks indexed while no embedding model was there."""
        added = 0
        while missing := await _finished(index.chunks_without_vectors, EMBED_BATCH * 8):
            vectors = await self._embed([embedding_text(c.title, c.chunk) for c in missing])
            await _finished(index.put_vectors, [(c.id, v) for c, v in zip(missing, vectors, strict=True)])
            added += len(missing)
        if added:
            report.notes.append(f"added vectors to {added} chunks indexed without them.")

    # --- searching -------------------------------------------------------------------

    async def search(
        self, names: list[str], question: str, limit: int = 5, mode: SearchMode = "hybrid"
    ) -> SearchResult:
        """The best chunks for `question` across the knowledge bases `names`."""
        if not question.strip():
            raise InvalidRequest("The question is empty.")
        indexes = await _finished(lambda: {name: self.open(name) for name in dict.fromkeys(names)})
        try:
            notes: list[str] = []
            vector = None
            if mode != "bm25":
                vector = await self._question_vector(indexes, question, notes)
                if vector is None:
                    mode = "bm25"
            hits = await _finished(search_indexes, indexes, question, vector, limit, mode)
            return SearchResult(hits, mode, notes)
        finally:
            for index in indexes.values():
                index.close()

    async def _question_vector(
        self, indexes: dict[str, KnowledgeIndex], question: str, notes: list[str]
    ) -> list[float] | None:
        model = self.settings.embedding_model
        with_vectors = [n for n, index in indexes.items() if index.has_vectors()]
        if not with_vectors:
            notes.append(
                "searched with BM25 only: no chunk has a vector (`ingle pull embed`, then `ingle kb sync NAME`)."
            )
            return None
        if self.embedder is None:
            notes.append("searched with BM25 only: no engine to embed the question.")
            return None
        try:
            return (await self.embedder.embed(model, [question])).embeddings[0]
        except (ModelNotFound, UnsupportedFeature):
            notes.append(f"searched with BM25 only: the embedding model {model} is not available (`ingle pull embed`).")
            return None


def _unreadable(location: str, error: OSError) -> str:
    return f"{location}: cannot read it ({error.strerror or error})."


def _read_and_chunk(location: str, data: bytes, kind: str | None) -> tuple[str, list[Chunk], str | None]:
    """A document's title and chunks, within MAX_DOCUMENT_CHUNKS, and the sentence on what was cut, if anything.

    Blocking and CPU-bound (PDF extraction): run through _abandonable.
    """
    document = read_document(location, data, kind)
    chunks = chunk_blocks(document.blocks)
    cut = document.cut
    if len(chunks) > MAX_DOCUMENT_CHUNKS:
        cut = f"{location}: only its first {MAX_DOCUMENT_CHUNKS:,} of {len(chunks):,} chunks were indexed."
        chunks = chunks[:MAX_DOCUMENT_CHUNKS]
    return document.title, chunks, cut


def _not_a_file(path: Path) -> str:
    return f"{path} is not a knowledge base file but a folder or device: move it out of the way yourself."


def _unlink_files(path: Path) -> None:
    """Delete a knowledge base's SQLite file and its WAL companions."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _compare_source(
    index: KnowledgeIndex, source: str, sha256s: dict[str, str | None], remove_missing: bool, report: IndexReport
) -> list[str]:
    """plan_upload's blocking part: the documents to upload; unchanged and dropped ones counted in `report`."""
    source_id = index.add_source(source)
    upload = []
    for location, sha256 in sha256s.items():
        if sha256 is None:  # unreadable by the client this time: kept as stored
            continue
        if index.content_hash(location) == content_hash(sha256):
            report.unchanged += 1
        else:
            upload.append(location)
    if remove_missing:
        for gone in index.documents_of(source_id):
            if gone not in sha256s:
                index.remove_document(gone)
                report.removed += 1
    return upload


def resolve_sources(locations: list[str], report: IndexReport) -> list[str]:
    """URLs as given and paths made absolute; a path with nothing there is a failure in the report. Blocking."""
    resolved = []
    for location in locations:
        found = location if is_url(location) else _existing_path(location)
        if found is None:
            report.failures.append(f"{location}: no such file or folder.")
        else:
            resolved.append(found)
    return resolved


def documents_under(source: str, report: IndexReport) -> list[str]:
    """The documents a source holds now: a URL or a file itself, or the supported files of a folder. Blocking."""
    if is_url(source):
        return [source]
    return [str(path) for path in _files_under(Path(source), report)]


def _files_under(path: Path, report: IndexReport) -> Iterator[Path]:
    """A file itself, or the supported files in a folder and its subfolders (hidden ones skipped), sorted.

    Only regular files: opening a named pipe or a device blocks, or never ends; each is named in the report.
    """
    try:
        mode = path.stat().st_mode
    except OSError:
        report.failures.append(f"{path}: no longer exists.")
        return
    if stat.S_ISREG(mode):
        yield path
        return
    if not stat.S_ISDIR(mode):
        report.failures.append(f"{path}: {kind_of_file(mode)}, not a file ingle reads.")
        return
    count = 0
    root = path.resolve()
    for folder, subfolders, files in os.walk(
        path, onerror=lambda error: report.failures.append(_unreadable(error.filename, error))
    ):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".") and d not in _SKIPPED_FOLDERS)
        for file in sorted(files):
            if file.startswith(".") or Path(file).suffix.lower() not in SUPPORTED:
                continue
            found = Path(folder) / file
            try:
                mode = found.stat().st_mode  # through a link: what it points to is what would be read
            except OSError as error:
                report.failures.append(_unreadable(str(found), error))
                continue
            if not stat.S_ISREG(mode):
                report.failures.append(f"{found}: {kind_of_file(mode)}, not a file ingle reads.")
                continue
            # A folder's links can point anywhere (a key in ~/.ssh), and what is indexed is what a bot may quote
            # to a whole team: the folder was chosen, not the link's target. (os.walk enters no linked folder.)
            if found.is_symlink() and not found.resolve().is_relative_to(root):
                report.failures.append(f"{found} links to {found.resolve()}, outside {path}: add that file itself.")
                continue
            count += 1
            if count > MAX_FILES_PER_SOURCE:
                report.failures.append(f"{path}: holds more than {MAX_FILES_PER_SOURCE} files; the rest were skipped.")
                return
            yield found


async def read_source(location: str) -> tuple[bytes, str | None]:
    """The bytes of a file or URL and, for a URL, the reader its content type calls for.

    SourceError, with a sentence naming the location, if it cannot be read.
    """
    if is_url(location):
        return await _fetch(location)
    try:
        return await _abandonable(_read_file, Path(location)), None
    except OSError as error:
        raise SourceError(_unreadable(location, error)) from error


def _read_file(path: Path) -> bytes:
    try:
        data = read_regular_file(path, MAX_DOCUMENT_BYTES)
    except NotARegularFile as error:
        raise SourceError(f"{path}: {error}.") from error
    if len(data) > MAX_DOCUMENT_BYTES:
        raise SourceError(f"{path}: larger than {MAX_DOCUMENT_BYTES // 2**20} MiB, skipped.")
    return data


def _existing_path(location: str) -> str | None:
    """The absolute form of a local path, or None if nothing is there."""
    path = Path(location).expanduser().resolve()
    return str(path) if path.exists() else None


async def _fetch(url: str) -> tuple[bytes, str | None]:
    try:
        async with httpx.AsyncClient(follow_redirects=True, timeout=60) as client:
            async with client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise SourceError(f"{url}: the server answered {response.status_code}.")
                data = bytearray()
                async for piece in response.aiter_bytes():
                    data += piece
                    if len(data) > MAX_DOCUMENT_BYTES:
                        raise SourceError(f"{url}: larger than {MAX_DOCUMENT_BYTES // 2**20} MiB, skipped.")
                return bytes(data), kind_of(url, response.headers.get("Content-Type"))
    except httpx.HTTPError as error:
        raise SourceError(f"{url}: cannot fetch it ({type(error).__name__}).") from error
