"""Knowledge bases over HTTP: `/api/knowledge/...`, and chats that name them (the `knowledge` field).

The daemon reads no paths and fetches no URLs for a client: documents arrive
in the request body. `ingle kb add` reads files and URLs with the rights of
the user who runs it. Management (create, add, delete) sits behind the same
guards as model management.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from ...core.errors import InvalidRequest
from ...core.knowledge import KnowledgeLibrary
from ...core.knowledge.grounding import GroundedBackend, source_label
from .common_wire import Base64Field, KnowledgeNameField, KnowledgePath
from .errors import read_body, read_path
from .keys import BACKEND, SETTINGS
from .openapi import documented

KNOWLEDGE = web.AppKey("knowledge", KnowledgeLibrary)
TAGS = ("knowledge",)
MAX_SEARCH_RESULTS = 50


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateRequest(_Input):
    """Create an empty knowledge base."""

    name: KnowledgeNameField
    """Lowercase letters, digits, '.', '_' or '-'."""


class DocumentRequest(_Input):
    """Index one document (replacing an earlier version with the same location)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"oneOf": [{"required": ["content"]}, {"required": ["content_base64"]}]}
    )

    location: str = Field(min_length=1, max_length=2048)
    """Where the document comes from (a path or URL): shown in citations and the key for updates."""
    # Field(default=None) without `| None`: one of the two is sent, and neither may be null.
    content: str = Field(default=None)  # pyright: ignore[reportAssignmentType]
    """The document's text (Markdown, reStructuredText, HTML, plain text, code)."""
    content_base64: Base64Field = Field(default=None)  # pyright: ignore[reportAssignmentType]
    """The document's bytes in base64, for PDF and other binary formats; instead of `content`."""
    format: str | None = Field(default=None, max_length=16)
    """The file suffix that picks the reader, e.g. '.md', '.pdf'; default: from `location`."""


class SearchRequest(_Input):
    """Search a knowledge base."""

    query: str = Field(min_length=1, max_length=4096)
    """The question, in plain words."""
    limit: int = Field(default=5, ge=1, le=MAX_SEARCH_RESULTS)
    """How many chunks to return."""
    mode: Literal["hybrid", "bm25", "vector"] = "hybrid"
    """hybrid: BM25 and vectors fused by rank; or one of them alone."""


class KnowledgeBaseSummary(BaseModel):
    """A knowledge base and its size."""

    name: str
    """Its name."""
    documents: int
    """Documents indexed."""
    chunks: int
    """Chunks indexed."""
    vectors: int
    """Chunks with a vector (0: BM25 search only)."""
    embedding_model: str | None
    """The model that made the vectors."""
    size: int
    """Bytes on disk."""
    sources: list[str] = []
    """Paths and URLs it was built from (in `show` only)."""


class KnowledgeBaseList(BaseModel):
    """Every knowledge base."""

    knowledge_bases: list[KnowledgeBaseSummary]
    """Sorted by name."""


class IndexResponse(BaseModel):
    """What indexing did."""

    indexed: int
    """Documents indexed (new or changed)."""
    unchanged: int
    """Documents skipped because their content hash was unchanged."""
    chunks: int
    """Chunks written."""
    failures: list[str]
    """One sentence per document that could not be read."""
    notes: list[str]
    """How it was indexed, e.g. for BM25 only because no embedding model is pulled."""


class SearchHit(BaseModel):
    """One retrieved chunk."""

    source: str
    """The document, heading path and line or page range, as citations show it."""
    location: str
    """The document's path or URL."""
    headings: list[str]
    """The headings the chunk sits under."""
    start_line: int | None
    """First line in the document (or in its PDF page)."""
    end_line: int | None
    """Last line."""
    page: int | None
    """PDF page."""
    text: str
    """The chunk."""
    score: float
    """Reciprocal-rank-fusion score: higher is better."""


class SearchResponse(BaseModel):
    """The best chunks for a query."""

    mode: str
    """How it searched: hybrid, bm25 or vector."""
    hits: list[SearchHit]
    """Best first."""
    notes: list[str]
    """Why it searched as it did (e.g. BM25 only)."""


def _summary(library: KnowledgeLibrary, name: str, with_sources: bool = False) -> KnowledgeBaseSummary:
    info = library.info(name)
    stats = info.stats
    return KnowledgeBaseSummary(
        name=name,
        documents=stats.documents,
        chunks=stats.chunks,
        vectors=stats.vectors,
        embedding_model=stats.embedding_model,
        size=stats.size_bytes,
        sources=[source.location for source in info.sources] if with_sources else [],
    )


@documented("List the knowledge bases.", response=KnowledgeBaseList, tags=TAGS)
async def list_knowledge(request: web.Request) -> web.Response:
    """Every knowledge base with its counts."""
    library = request.app[KNOWLEDGE]
    summaries = await asyncio.to_thread(lambda: [_summary(library, name) for name in library.names()])
    return web.json_response(KnowledgeBaseList(knowledge_bases=summaries).model_dump())


@documented(
    "Create an empty knowledge base.", request=CreateRequest, response=KnowledgeBaseSummary, tags=TAGS, statuses=(201,)
)
async def create_knowledge(request: web.Request) -> web.Response:
    """Create a knowledge base."""
    body = await read_body(request, CreateRequest)
    library = request.app[KNOWLEDGE]
    await asyncio.to_thread(library.create, body.name)
    summary = await asyncio.to_thread(_summary, library, body.name)
    return web.json_response(summary.model_dump(), status=201)


@documented("Show a knowledge base.", response=KnowledgeBaseSummary, tags=TAGS, path=KnowledgePath)
async def show_knowledge(request: web.Request) -> web.Response:
    """Counts and sources of one knowledge base."""
    library = request.app[KNOWLEDGE]
    summary = await asyncio.to_thread(_summary, library, read_path(request, KnowledgePath).name, True)
    return web.json_response(summary.model_dump())


@documented("Delete a knowledge base.", tags=TAGS, path=KnowledgePath, statuses=(204,))
async def delete_knowledge(request: web.Request) -> web.Response:
    """Delete a knowledge base (its index; documents elsewhere are untouched)."""
    await asyncio.to_thread(request.app[KNOWLEDGE].remove, read_path(request, KnowledgePath).name)
    return web.Response(status=204)


@documented(
    "Index a document sent in the body.",
    request=DocumentRequest,
    response=IndexResponse,
    tags=TAGS,
    path=KnowledgePath,
    statuses=(200, 422),
)
async def add_document(request: web.Request) -> web.Response:
    """Index one uploaded document."""
    name = read_path(request, KnowledgePath).name
    body = await read_body(request, DocumentRequest)
    if (body.content is None) == (body.content_base64 is None):
        raise InvalidRequest("Send the document as exactly one of 'content' or 'content_base64'.")
    data = body.content.encode("utf-8") if body.content is not None else base64.b64decode(body.content_base64)
    kind = body.format.lower() if body.format else None
    if kind is not None and not kind.startswith("."):
        kind = "." + kind
    report = await request.app[KNOWLEDGE].add_document(name, body.location, data, kind)
    response = IndexResponse(
        indexed=report.indexed,
        unchanged=report.unchanged,
        chunks=report.chunks,
        failures=report.failures,
        notes=report.notes,
    )
    return web.json_response(response.model_dump(), status=422 if report.failures else 200)


@documented("Search a knowledge base.", request=SearchRequest, response=SearchResponse, tags=TAGS, path=KnowledgePath)
async def search_knowledge(request: web.Request) -> web.Response:
    """The chunks that best answer a query, with their sources."""
    name = read_path(request, KnowledgePath).name
    body = await read_body(request, SearchRequest)
    result = await request.app[KNOWLEDGE].search([name], body.query, body.limit, body.mode)
    hits = [
        SearchHit(
            source=source_label(hit),
            location=hit.stored.location,
            headings=list(hit.stored.chunk.headings),
            start_line=hit.stored.chunk.start_line,
            end_line=hit.stored.chunk.end_line,
            page=hit.stored.chunk.page,
            text=hit.stored.chunk.text,
            score=hit.score,
        )
        for hit in result.hits
    ]
    return web.json_response(SearchResponse(mode=result.mode, hits=hits, notes=result.notes).model_dump())


def add_routes(app: web.Application) -> None:
    """Register the knowledge routes and let chat requests that name knowledge bases answer from them."""
    library = KnowledgeLibrary(app[SETTINGS], app[BACKEND])
    app[KNOWLEDGE] = library
    app[BACKEND] = GroundedBackend(app[BACKEND], library)
    app.router.add_get("/api/knowledge", list_knowledge)
    app.router.add_post("/api/knowledge", create_knowledge)
    app.router.add_get("/api/knowledge/{name}", show_knowledge)
    app.router.add_delete("/api/knowledge/{name}", delete_knowledge)
    app.router.add_post("/api/knowledge/{name}/documents", add_document)
    app.router.add_post("/api/knowledge/{name}/search", search_knowledge)
