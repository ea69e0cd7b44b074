"""The wire models of `/api/knowledge/...`: what clients send and what the daemon answers.

Pure pydantic, so that `ingle kb` reads the daemon's answers with the same models
the routes write them with.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from ...core.knowledge.library import MAX_FILES_PER_SOURCE
from .common_wire import Base64Field, KnowledgeNameField

MAX_SEARCH_RESULTS = 50
MAX_LOCATION_CHARS = 2048
"""A path or URL longer than this names no real document."""
SHA256_PATTERN = r"^[0-9a-f]{64}$"


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


LocationField = Annotated[str, Field(min_length=1, max_length=MAX_LOCATION_CHARS)]
"""A path or URL as the client names it."""


class CreateRequest(_Input):
    """Create an empty knowledge base."""

    name: KnowledgeNameField
    """Lowercase letters, digits, '.', '_' or '-'."""


class DocumentRequest(_Input):
    """Index one document (replacing an earlier version with the same location)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"oneOf": [{"required": ["content"]}, {"required": ["content_base64"]}]}
    )

    location: LocationField
    """Where the document comes from (a path or URL): shown in citations and the key for updates."""
    # Field(default=None) without `| None`: one of the two is sent, and neither may be null.
    content: str = Field(default=None)  # pyright: ignore[reportAssignmentType]
    """The document's text (Markdown, reStructuredText, HTML, plain text, code)."""
    content_base64: Base64Field = Field(default=None)  # pyright: ignore[reportAssignmentType]
    """The document's bytes in base64, for PDF and other binary formats; instead of `content`."""
    format: str | None = Field(default=None, max_length=16)
    """The file suffix that picks the reader, e.g. '.md', '.pdf'; default: from `location`."""
    source: LocationField | None = None
    """The path or URL given to `add` that the document was found under (its folder), as sent to `sync`;
    default: the document is its own source."""


class RemoveDocumentRequest(_Input):
    """Drop a source with the documents it brought in, or one document."""

    location: LocationField
    """A source as `show` lists it (a folder, file or URL given to `add`), or one document's location."""


class RemoveDocumentResponse(BaseModel):
    """What a removal dropped."""

    removed: int
    """Documents dropped."""


class SyncDocument(_Input):
    """A document the client found under a source, and the hash of its bytes."""

    location: LocationField
    """The document's path or URL."""
    sha256: Annotated[str, Field(pattern=SHA256_PATTERN)] | None
    """The sha256 of the document's bytes, as 64 lowercase hex digits; null when the client could not read
    it this time, which keeps what is stored."""


class SyncRequest(_Input):
    """What one source holds now, as the client read it: the daemon answers which documents to upload."""

    source: LocationField
    """The path or URL given to `add` (a folder, file or URL); recorded as a source if it is new."""
    documents: list[SyncDocument] = Field(max_length=MAX_FILES_PER_SOURCE)
    """Every document the source holds now; an empty list when it is gone."""
    remove_missing: bool = True
    """Drop the stored documents of the source that `documents` no longer lists (false: only add)."""


class SyncResponse(BaseModel):
    """What to upload (with `POST /api/knowledge/{name}/documents`, naming the same `source`) and what was done."""

    upload: list[str]
    """The documents that are new or changed, in the order sent."""
    unchanged: int
    """Documents whose hash matches what is indexed: kept as they are."""
    removed: int
    """Stored documents of the source that the client no longer has: dropped."""
    notes: list[str]
    """How it indexes, e.g. for BM25 only because no embedding model is pulled."""


class SearchRequest(_Input):
    """Search a knowledge base."""

    query: str = Field(min_length=1, max_length=4096)
    """The question, in plain words."""
    limit: int = Field(default=5, ge=1, le=MAX_SEARCH_RESULTS)
    """How many chunks to return."""
    mode: Literal["hybrid", "bm25", "vector"] = "hybrid"
    """hybrid: BM25 and vectors fused by rank; or one of them alone."""


class SourceSummary(BaseModel):
    """A path or URL given to `add`."""

    location: str
    """The path or URL."""
    added_at: str
    """When it was added (ISO 8601, UTC)."""
    documents: int
    """Documents it holds now."""


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
    sources: list[SourceSummary] = []
    """Paths and URLs it was built from (in `show` only)."""
    problem: str | None = None
    """Why it cannot be used (its file is damaged, or not a file), and what to do; its counts are then zero.
    Null when it is usable."""


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

    mode: Literal["hybrid", "bm25", "vector"]
    """How it searched: hybrid, bm25 or vector."""
    hits: list[SearchHit]
    """Best first."""
    notes: list[str]
    """Why it searched as it did (e.g. BM25 only)."""
