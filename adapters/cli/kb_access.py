"""Where `ingle kb` keeps knowledge bases: through the daemon when one answers, else in the files under the home.

The rule is the one every command follows (engine_access.py): `--host` names a
daemon that must answer; else the daemon's unix socket in this home, then
`host:port` from the settings; `--embedded` (or no daemon) works on the files
here. On a server whose home belongs to the service user, that is what lets a
user's `ingle kb add` work: the daemon writes, the user's process only reads.

Either way files and URLs are read by this process, with the user's rights:
through a daemon, `add` and `sync` read each source, send the sha256 of every
document it holds (`POST /api/knowledge/NAME/sync`), and upload only the
documents the daemon asks for.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Protocol

from ingle.adapters.client import IngleClient
from ingle.adapters.http.knowledge_wire import (
    IndexResponse,
    KnowledgeBaseList,
    KnowledgeBaseSummary,
    SearchResponse,
    SyncResponse,
)
from ingle.core.errors import InvalidRequest, SourceError
from ingle.core.knowledge import IndexReport, KnowledgeBaseInfo, KnowledgeLibrary, SearchResult
from ingle.core.knowledge.documents import Chunk
from ingle.core.knowledge.index import IndexStats, KnowledgeBaseDamaged, SourceInfo, StoredChunk
from ingle.core.knowledge.library import (
    IndexProgress,
    ProgressCallback,
    documents_under,
    read_source,
    resolve_sources,
    sha256_of,
    validate_name,
)
from ingle.core.knowledge.retrieval import Hit, SearchMode

from .context import CliContext
from .engine_access import connect_daemon, open_engine


class Knowledge(Protocol):
    """What `ingle kb` does with knowledge bases, wherever they are kept."""

    where: str
    """The daemon's address, or the folder of the files."""

    async def create(self, name: str) -> None:
        """Create an empty knowledge base."""
        ...

    async def remove(self, name: str) -> None:
        """Delete a knowledge base."""
        ...

    async def infos(self) -> list[KnowledgeBaseInfo]:
        """Every knowledge base with its counts, sorted by name."""
        ...

    async def info(self, name: str) -> KnowledgeBaseInfo:
        """Counts and sources of one knowledge base."""
        ...

    async def add(self, name: str, locations: list[str], progress: ProgressCallback | None) -> IndexReport:
        """Add paths and URLs as sources and index them."""
        ...

    async def sync(self, name: str, progress: ProgressCallback | None) -> IndexReport:
        """Re-read every source."""
        ...

    async def search(self, name: str, question: str, limit: int, mode: SearchMode) -> SearchResult:
        """The best chunks for a question."""
        ...


@asynccontextmanager
async def open_knowledge(context: CliContext, embeds: bool) -> AsyncIterator[Knowledge]:
    """The daemon's knowledge bases if one answers (see the module), else those under this home.

    `embeds` says the command may embed text (add, sync, a non-BM25 search): without a daemon it
    then runs the engine in this process.
    """
    choice = context.engine_choice
    client = None if choice.embedded else await connect_daemon(context.settings, choice)
    if client is not None:
        async with client:
            yield DaemonKnowledge(client)
        return
    if not embeds:
        yield LocalKnowledge(KnowledgeLibrary(context.settings))
        return
    async with open_engine(context.settings, replace(choice, embedded=True)) as engine:
        yield LocalKnowledge(KnowledgeLibrary(context.settings, engine))


class LocalKnowledge:
    """The SQLite files under this home, written by this process."""

    def __init__(self, library: KnowledgeLibrary) -> None:
        self.library = library
        self.where = str(library.folder)

    async def create(self, name: str) -> None:
        """Create an empty knowledge base."""
        await asyncio.to_thread(self.library.create, name)

    async def remove(self, name: str) -> None:
        """Delete a knowledge base."""
        await asyncio.to_thread(self.library.remove, name)

    async def infos(self) -> list[KnowledgeBaseInfo]:
        """Every knowledge base with its counts."""
        return await asyncio.to_thread(lambda: [self.library.info(name) for name in self.library.names()])

    async def info(self, name: str) -> KnowledgeBaseInfo:
        """Counts and sources of one knowledge base."""
        return await asyncio.to_thread(self.library.info, name)

    async def add(self, name: str, locations: list[str], progress: ProgressCallback | None) -> IndexReport:
        """Add paths and URLs as sources and index them."""
        return await self.library.add(name, locations, progress)

    async def sync(self, name: str, progress: ProgressCallback | None) -> IndexReport:
        """Re-read every source."""
        return await self.library.sync(name, progress)

    async def search(self, name: str, question: str, limit: int, mode: SearchMode) -> SearchResult:
        """The best chunks for a question."""
        return await self.library.search([name], question, limit, mode)


class DaemonKnowledge:
    """The daemon's knowledge bases, over `/api/knowledge`."""

    def __init__(self, client: IngleClient) -> None:
        self.client = client
        self.where = client.daemon_url

    async def create(self, name: str) -> None:
        """Create an empty knowledge base."""
        await self.client.request_json("POST", "/api/knowledge", {"name": name}, manage=True)

    async def remove(self, name: str) -> None:
        """Delete a knowledge base."""
        await self.client.request_json("DELETE", _path(name), manage=True)

    async def infos(self) -> list[KnowledgeBaseInfo]:
        """Every knowledge base with its counts."""
        answer = KnowledgeBaseList.model_validate(await self.client.request_json("GET", "/api/knowledge"))
        return [_info(summary) for summary in answer.knowledge_bases]

    async def info(self, name: str) -> KnowledgeBaseInfo:
        """Counts and sources of one knowledge base."""
        return _info(KnowledgeBaseSummary.model_validate(await self.client.request_json("GET", _path(name))))

    async def add(self, name: str, locations: list[str], progress: ProgressCallback | None) -> IndexReport:
        """Read the paths and URLs here and send the daemon what it lacks; nothing already there is dropped."""
        await self._usable(name)  # a missing or damaged knowledge base fails before any reading
        report = IndexReport()
        sources = await asyncio.to_thread(resolve_sources, locations, report)
        for source in sources:
            await self._send_source(name, source, report, progress, remove_missing=False)
        return report

    async def sync(self, name: str, progress: ProgressCallback | None) -> IndexReport:
        """Read every source here; the daemon drops what is gone and asks for what changed."""
        report = IndexReport()
        for source in (await self._usable(name)).sources:
            await self._send_source(name, source.location, report, progress, remove_missing=True)
        return report

    async def _usable(self, name: str) -> KnowledgeBaseInfo:
        """`info(name)`, or KnowledgeBaseDamaged as opening it here would raise: a damaged one lists no sources,
        and a sync of none would report success."""
        info = await self.info(name)
        if info.problem is not None:
            raise KnowledgeBaseDamaged(info.problem)
        return info

    async def _send_source(
        self, name: str, source: str, report: IndexReport, progress: ProgressCallback | None, remove_missing: bool
    ) -> None:
        documents = await asyncio.to_thread(documents_under, source, report)
        hashes: list[dict[str, str | None]] = []
        for done, location in enumerate(documents):
            if progress is not None:
                progress(IndexProgress(done, len(documents), location, report.chunks, "reading"))
            try:
                sha256: str | None = sha256_of((await read_source(location))[0])
            except SourceError as error:
                report.failures.append(error.message)
                sha256 = None  # kept as stored: unreadable now is not gone
            hashes.append({"location": location, "sha256": sha256})
        body = {"source": source, "documents": hashes, "remove_missing": remove_missing}
        plan = SyncResponse.model_validate(
            await self.client.request_json("POST", f"{_path(name)}/sync", body, manage=True)
        )
        report.unchanged += plan.unchanged
        report.removed += plan.removed
        report.notes.extend(plan.notes)
        for done, location in enumerate(plan.upload):
            if progress is not None:
                progress(IndexProgress(done, len(plan.upload), location, report.chunks, "uploading"))
            await self._upload(name, source, location, report)

    async def _upload(self, name: str, source: str, location: str, report: IndexReport) -> None:
        try:
            data, kind = await read_source(location)
        except SourceError as error:
            report.failures.append(error.message)
            return
        body = {"location": location, "source": source, "content_base64": base64.b64encode(data).decode("ascii")}
        if kind is not None:
            body["format"] = kind
        try:
            answer = await self.client.request_json(
                "POST", f"{_path(name)}/documents", body, manage=True, answered=(422,)
            )
        except InvalidRequest as error:  # e.g. larger than the daemon's max_request_bytes: the rest goes on
            report.failures.append(f"{location}: the daemon refused it: {error.message}")
            return
        indexed = IndexResponse.model_validate(answer)
        report.indexed += indexed.indexed
        report.unchanged += indexed.unchanged
        report.chunks += indexed.chunks
        report.failures.extend(indexed.failures)
        report.notes.extend(indexed.notes)

    async def search(self, name: str, question: str, limit: int, mode: SearchMode) -> SearchResult:
        """The best chunks for a question."""
        body = {"query": question, "limit": limit, "mode": mode}
        answer = SearchResponse.model_validate(await self.client.request_json("POST", f"{_path(name)}/search", body))
        hits = [
            Hit(
                name,
                StoredChunk(
                    0,
                    hit.location,
                    "",
                    Chunk(hit.text, tuple(hit.headings), hit.start_line, hit.end_line, hit.page),
                ),
                hit.score,
            )
            for hit in answer.hits
        ]
        return SearchResult(hits, answer.mode, answer.notes)


def _path(name: str) -> str:
    """The route of a knowledge base; the name is checked first, so it cannot reach another route."""
    return f"/api/knowledge/{validate_name(name)}"


def _info(summary: KnowledgeBaseSummary) -> KnowledgeBaseInfo:
    stats = IndexStats(summary.documents, summary.chunks, summary.vectors, summary.embedding_model, summary.size)
    sources = [SourceInfo(s.location, s.added_at, s.documents) for s in summary.sources]
    return KnowledgeBaseInfo(summary.name, stats, sources, summary.problem)
