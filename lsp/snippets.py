"""Code elsewhere in the workspace that reads like the code above the cursor, with what followed it there.

A repository repeats itself: sibling methods that start alike, handlers
registered the same way, the same lines around every call of a helper. The
lines above the cursor are compared with every window of as many lines in
the indexed files, as sets of identifiers (Jaccard similarity, as RepoCoder
and Tabby's similar-snippet context do); the most similar windows are given
to the model ahead of the prompt, each cut to its last lines and the lines
that came after it, since those are what the model is about to write here.

Lookups go through an inverted index from identifiers to windows, seeded by
the query's rarest identifiers, so a request costs about a millisecond
however large the workspace (bounded by repository.py's scan limits).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from ingle.core.generation import ContextChunk

from .symbols import CHARS_PER_TOKEN, IDENTIFIER

# Lines compared: the query is the last QUERY_LINES non-blank lines above the cursor, a window as many lines.
QUERY_LINES = 6
# Of a matched window, its last LEAD_LINES lines and the FOLLOW_LINES after it are given to the model.
LEAD_LINES = 2
FOLLOW_LINES = 3
# Windows less similar than this are not worth their tokens.
MIN_SIMILARITY = 0.3
# Windows scored exactly per request, found by the query's rarest identifiers.
CANDIDATES = 300
# Identifiers that are this common (`self`, `return`) find too many windows to seed the search with.
SEED_IDENTIFIERS = 6


@dataclass(frozen=True)
class _Window:
    path: str
    start: int
    words: frozenset[str]


class SnippetIndex:
    """Windows of lines of the workspace's files, by the identifiers they hold; safe to update from the scan's
    thread while the event loop queries."""

    def __init__(self) -> None:
        self._lines: dict[str, list[str]] = {}
        self._windows: dict[str, list[_Window]] = {}
        self._postings: dict[str, set[tuple[str, int]]] = {}
        self._lock = threading.Lock()

    def update(self, path: str, lines: Sequence[str]) -> None:
        """Index a file's lines again."""
        words = [frozenset(IDENTIFIER.findall(text)) for text in lines]
        windows = [
            _Window(path, start, frozenset().union(*words[start : start + QUERY_LINES]))
            for start in range(max(0, len(lines) - QUERY_LINES + 1))
        ]
        with self._lock:
            self._drop(path)
            self._lines[path] = list(lines)
            self._windows[path] = windows
            for window in windows:
                for word in window.words:
                    self._postings.setdefault(word, set()).add((path, window.start))

    def remove(self, path: str) -> None:
        """Forget a deleted file."""
        with self._lock:
            self._drop(path)

    def _drop(self, path: str) -> None:
        for window in self._windows.pop(path, []):
            for word in window.words:
                holders = self._postings.get(word)
                if holders is not None:
                    holders.discard((path, window.start))
                    if not holders:
                        del self._postings[word]
        self._lines.pop(path, None)

    def similar(self, path: str, lines: Sequence[str], line: int, token_budget: int) -> list[ContextChunk]:
        """Chunks of code like the lines above `line` of the document `path`, most similar first, within
        the budget; never from the document's own lines around the cursor."""
        above = [text for text in lines[max(0, line - 3 * QUERY_LINES) : line] if text.strip()][-QUERY_LINES:]
        query = frozenset(IDENTIFIER.findall("\n".join(above)))
        if not query or token_budget <= 0:
            return []
        with self._lock:
            ranked = self._rank(query, path, line)
            chosen: list[ContextChunk] = []
            budget = token_budget * CHARS_PER_TOKEN
            taken: list[tuple[str, int]] = []
            for _, window in ranked:
                if any(where == window.path and abs(start - window.start) < QUERY_LINES for where, start in taken):
                    continue  # the same lines again, shifted by one
                source = self._lines[window.path]
                end = window.start + QUERY_LINES
                text = "\n".join(source[end - LEAD_LINES : end + FOLLOW_LINES]) + "\n"
                if len(text) + len(window.path) + 2 > budget:
                    break
                budget -= len(text) + len(window.path) + 2
                taken.append((window.path, window.start))
                chosen.append(ContextChunk(text=text, filename=window.path))
        return chosen

    def _rank(self, query: frozenset[str], path: str, line: int) -> list[tuple[float, _Window]]:
        seeds = sorted(query, key=lambda word: len(self._postings.get(word, ())))[:SEED_IDENTIFIERS]
        hits = Counter(key for word in seeds for key in self._postings.get(word, ()))
        scored: list[tuple[float, _Window]] = []
        for (where, start), _ in hits.most_common(CANDIDATES):
            # The cursor's own neighbourhood holds the query itself, and what the user is writing.
            if where == path and line - 4 * QUERY_LINES < start < line + 2 * QUERY_LINES:
                continue
            window = self._windows[where][start]
            similarity = len(query & window.words) / len(query | window.words)
            if similarity >= MIN_SIMILARITY:
                scored.append((similarity, window))
        scored.sort(key=lambda pair: (-pair[0], pair[1].path, pair[1].start))
        return scored
