"""Search over one or more knowledge bases: BM25 and vector rankings fused by reciprocal rank."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .index import KnowledgeIndex, StoredChunk

SearchMode = Literal["hybrid", "bm25", "vector"]

RRF_K = 60
"""The usual constant of reciprocal rank fusion (Cormack et al. 2009): damps the head of each list."""

CANDIDATES = 40
"""How deep each ranking is read before fusion."""

MIN_SIMILARITY = 0.3
"""Below this cosine similarity a vector hit is noise for all-MiniLM-L6-v2; it does not count as found."""


@dataclass(frozen=True)
class Hit:
    """A retrieved chunk, its knowledge base and its fused score."""

    knowledge_base: str
    stored: StoredChunk
    score: float
    similarity: float | None = None
    """Cosine similarity to the question, when vectors took part."""


@dataclass
class SearchResult:
    """The best chunks for a question, and how they were found."""

    hits: list[Hit]
    mode: SearchMode
    notes: list[str] = field(default_factory=list)
    """Why the search ran as it did (e.g. BM25 only, because no embedding model is pulled)."""


def reciprocal_rank_fusion(rankings: list[list[tuple[str, int]]]) -> dict[tuple[str, int], float]:
    """Sum of 1 / (RRF_K + rank) over the rankings each item appears in."""
    scores: dict[tuple[str, int], float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking, start=1):
            scores[key] = scores.get(key, 0.0) + 1.0 / (RRF_K + rank)
    return scores


def search_indexes(
    indexes: dict[str, KnowledgeIndex],
    question: str,
    vector: list[float] | None,
    limit: int,
    mode: SearchMode,
) -> list[Hit]:
    """The `limit` best chunks across `indexes`; `vector` is the question's embedding (None: BM25 only)."""
    rankings: list[list[tuple[str, int]]] = []
    similarities: dict[tuple[str, int], float] = {}
    for name, index in indexes.items():
        if mode in ("hybrid", "bm25"):
            rankings.append([(name, chunk_id) for chunk_id in index.search_text(question, CANDIDATES)])
        if mode in ("hybrid", "vector") and vector is not None:
            nearest = [(chunk_id, s) for chunk_id, s in index.search_vectors(vector, CANDIDATES) if s >= MIN_SIMILARITY]
            rankings.append([(name, chunk_id) for chunk_id, _ in nearest])
            similarities.update({(name, chunk_id): s for chunk_id, s in nearest})
    fused = sorted(reciprocal_rank_fusion(rankings).items(), key=lambda item: -item[1])[:limit]
    hits = []
    for name in indexes:
        stored = indexes[name].chunks([chunk_id for (kb, chunk_id), _ in fused if kb == name])
        hits.extend(
            Hit(name, stored[chunk_id], score, similarities.get((kb, chunk_id)))
            for (kb, chunk_id), score in fused
            if kb == name and chunk_id in stored
        )
    return sorted(hits, key=lambda hit: -hit.score)
