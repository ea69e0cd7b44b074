"""Knowledge bases over HTTP: `/api/knowledge/...`, and chats that name them (the `knowledge` field).

The daemon reads no paths and fetches no URLs for a client: documents arrive
in the request body. `ingle kb add` and `sync` read files and URLs with the
rights of the user who runs them, tell the daemon what each source holds now
(`/sync`, by sha256) and upload only what it asks for. Management (create,
add, sync, delete) sits behind the same guards as model management.
"""

from __future__ import annotations

import asyncio
import base64

from aiohttp import web

from ...core.errors import InvalidRequest
from ...core.knowledge import KnowledgeLibrary
from ...core.knowledge.grounding import GroundedBackend, source_label
from .common_wire import KnowledgePath
from .errors import read_body, read_path
from .keys import BACKEND, SETTINGS
from .knowledge_wire import (
    CreateRequest,
    DocumentRequest,
    IndexResponse,
    KnowledgeBaseList,
    KnowledgeBaseSummary,
    RemoveDocumentRequest,
    RemoveDocumentResponse,
    SearchHit,
    SearchRequest,
    SearchResponse,
    SourceSummary,
    SyncRequest,
    SyncResponse,
)
from .openapi import documented

KNOWLEDGE = web.AppKey("knowledge", KnowledgeLibrary)
TAGS = ("knowledge",)


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
        sources=[SourceSummary(location=s.location, added_at=s.added_at, documents=s.documents) for s in info.sources]
        if with_sources
        else [],
        problem=info.problem,
    )


@documented("List the knowledge bases.", response=KnowledgeBaseList, tags=TAGS)
async def list_knowledge(request: web.Request) -> web.Response:
    """Every knowledge base with its counts; a damaged one with its problem."""
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
    report = await request.app[KNOWLEDGE].add_document(name, body.location, data, kind, body.source)
    response = IndexResponse(
        indexed=report.indexed,
        unchanged=report.unchanged,
        chunks=report.chunks,
        failures=report.failures,
        notes=report.notes,
    )
    return web.json_response(response.model_dump(), status=422 if report.failures else 200)


@documented(
    "Drop a source with its documents, or one document.",
    request=RemoveDocumentRequest,
    response=RemoveDocumentResponse,
    tags=TAGS,
    path=KnowledgePath,
)
async def remove_document(request: web.Request) -> web.Response:
    """Drop what a location names: a source and every document it brought in, or one document."""
    name = read_path(request, KnowledgePath).name
    body = await read_body(request, RemoveDocumentRequest)
    removed = await asyncio.to_thread(request.app[KNOWLEDGE].remove_location, name, body.location)
    return web.json_response(RemoveDocumentResponse(removed=removed).model_dump())


@documented(
    "Say what one source holds now; the answer names the documents to upload.",
    request=SyncRequest,
    response=SyncResponse,
    tags=TAGS,
    path=KnowledgePath,
)
async def sync_source(request: web.Request) -> web.Response:
    """A client's sync: documents gone from the source are dropped, new or changed ones are asked for."""
    name = read_path(request, KnowledgePath).name
    body = await read_body(request, SyncRequest)
    sha256s = {document.location: document.sha256 for document in body.documents}
    upload, report = await request.app[KNOWLEDGE].plan_upload(name, body.source, sha256s, body.remove_missing)
    response = SyncResponse(upload=upload, unchanged=report.unchanged, removed=report.removed, notes=report.notes)
    return web.json_response(response.model_dump())


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
    app.router.add_delete("/api/knowledge/{name}/documents", remove_document)
    app.router.add_post("/api/knowledge/{name}/sync", sync_source)
    app.router.add_post("/api/knowledge/{name}/search", search_knowledge)
