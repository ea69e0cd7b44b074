"""Knowledge bases: documents read into structured chunks, indexed for BM25 and vectors in one SQLite file each.

The bots, the HTTP API and the CLI retrieve from them through KnowledgeLibrary;
grounding.py turns what was found into a prompt that treats it as quoted data.
"""

from __future__ import annotations

from .library import Embedder, IndexProgress, IndexReport, KnowledgeBaseInfo, KnowledgeLibrary
from .retrieval import Hit, SearchMode, SearchResult

__all__ = [
    "Embedder",
    "Hit",
    "IndexProgress",
    "IndexReport",
    "KnowledgeBaseInfo",
    "KnowledgeLibrary",
    "SearchMode",
    "SearchResult",
]
