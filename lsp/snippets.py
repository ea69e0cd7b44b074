"""Code elsewhere in the workspace that reads like the code above the cursor, with what followed it there.

A repository repeats itself: sibling methods that start alike, handlers
registered the same way, the same lines around every call of a helper. The
lines above the cursor are compared with every window of as many lines in
the indexed files, as sets of identifiers (Jaccard similarity, as RepoCoder
and Tabby's similar-snippet context do); the most similar windows are given
to the model ahead of the prompt, each cut to its last lines and the lines
that came after it, since those are what the model is about to write here.

Lookups go through an inverted index from identifiers to lines, seeded by
the query's rarest identifiers, so a request costs milliseconds, not a pass
over the workspace; the index holds MAX_LINES lines, and MAX_BYTES of memory,
at most.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence

from ingle.core.generation import ContextChunk

from .documents import MAX_LINE_CHARS
from .symbols import CHARS_PER_TOKEN, IDENTIFIER
from .tags import family_of

# Lines compared: the query is the last QUERY_LINES non-blank lines above the cursor, a window as many lines.
QUERY_LINES = 6
# Of a matched window, its last LEAD_LINES lines and the FOLLOW_LINES after it are given to the model.
LEAD_LINES = 2
FOLLOW_LINES = 3
# Windows less similar than this are not worth their tokens.
MIN_SIMILARITY = 0.3
# Windows scored exactly per request, found by the query's rarest identifiers.
CANDIDATES = 300
# The query's rarest identifiers seed the search; one on more lines than MAX_SEED_LINES (`self`, `return`)
# would find too many windows to be worth counting.
SEED_IDENTIFIERS = 6
MAX_SEED_LINES = 5000
# Lines indexed at most: each costs about 1.3 kB (measured on 200,000 lines of site-packages: 4 s to index,
# a lookup p95 4 ms), so a huge workspace cannot take the editor's memory.
MAX_LINES = 100_000
# Memory of a held line beyond its text: the line itself, and each identifier on it in the line's set and in the
# postings (measured: 230 bytes a line, 250 more a name, on lines of 0 to 100 names).
LINE_BYTES = 250
WORD_BYTES = 250
# Memory the index may take: what MAX_LINES lines of ordinary code take (1.0 kB a line on site-packages), so that
# lines unusually long or full of names (generated tables) cannot make it more.
MAX_BYTES = 100_000_000


class SnippetIndex:
    """The lines of the workspace's files and the identifiers each holds; safe to update from the scan's
    thread while the event loop queries."""

    def __init__(self, max_lines: int = MAX_LINES, max_bytes: int = MAX_BYTES) -> None:
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self._lines: dict[str, list[str]] = {}
        self._words: dict[str, list[frozenset[str]]] = {}
        self._postings: dict[str, set[tuple[str, int]]] = {}
        """Identifier to the (path, line number) of the lines holding it."""
        self._total = 0
        self._costs: dict[str, int] = {}
        """Each file's share of max_bytes."""
        self._bytes = 0
        self._lock = threading.Lock()

    def update(self, path: str, lines: Sequence[str]) -> None:
        """Index a file's lines again (not a file that would take the index past max_lines or max_bytes)."""
        # A line longer than completion takes at the cursor is minified or generated, and no chunk within a budget
        # of snippet tokens could show it: held blank, which keeps the numbering.
        lines = [text if len(text) <= MAX_LINE_CHARS else "" for text in lines]
        words = [frozenset(IDENTIFIER.findall(text)) for text in lines]
        cost = sum(LINE_BYTES + len(text) + WORD_BYTES * len(found) for text, found in zip(lines, words, strict=True))
        with self._lock:
            held = len(self._lines.get(path, ()))
            if (
                self._total - held + len(lines) > self.max_lines
                or self._bytes - self._costs.get(path, 0) + cost > self.max_bytes
            ):
                return  # a workspace this big gets the files it saw first
            self._drop(path)
            self._lines[path] = lines
            self._words[path] = words
            self._total += len(lines)
            self._costs[path] = cost
            self._bytes += cost
            for number, found in enumerate(words):
                for word in found:
                    self._postings.setdefault(word, set()).add((path, number))

    def remove(self, path: str) -> None:
        """Forget a deleted file."""
        with self._lock:
            self._drop(path)

    def _drop(self, path: str) -> None:
        for number, found in enumerate(self._words.pop(path, [])):
            for word in found:
                holders = self._postings.get(word)
                if holders is not None:
                    holders.discard((path, number))
                    if not holders:
                        del self._postings[word]
        self._total -= len(self._lines.pop(path, ()))
        self._bytes -= self._costs.pop(path, 0)

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
            for where, start in ranked:
                if any(other == where and abs(first - start) < QUERY_LINES for other, first in taken):
                    continue  # the same lines again, shifted by one
                end = start + QUERY_LINES
                text = "\n".join(self._lines[where][end - LEAD_LINES : end + FOLLOW_LINES]) + "\n"
                if len(text) + len(where) + 2 > budget:
                    break
                budget -= len(text) + len(where) + 2
                taken.append((where, start))
                chosen.append(ContextChunk(text=text, filename=where))
        return chosen

    def _rank(self, query: frozenset[str], path: str, line: int) -> list[tuple[str, int]]:
        """Windows (path, first line) at least MIN_SIMILARITY alike to the query, most alike first."""
        seeds = [word for word in query if len(self._postings.get(word, ())) <= MAX_SEED_LINES]
        seeds = sorted(seeds, key=lambda word: len(self._postings.get(word, ())))
        hits: Counter[tuple[str, int]] = Counter()
        for word in seeds[:SEED_IDENTIFIERS]:
            # Each window holding the word once, however many of its lines hold it.
            hits.update(
                {
                    (where, start)
                    for where, number in self._postings.get(word, ())
                    for start in range(max(0, number - QUERY_LINES + 1), number + 1)
                }
            )
        scored: list[tuple[float, str, int]] = []
        # Code in another language (a Python backend's beside a TypeScript client's) may share the names, but it
        # shows the model the wrong syntax. A document in no known language takes code from any file.
        family = family_of(path)
        for (where, start), _ in hits.most_common(CANDIDATES):
            # The cursor's own neighbourhood holds the query itself, and what the user is writing.
            if where == path and line - 4 * QUERY_LINES < start < line + 2 * QUERY_LINES:
                continue
            if family is not None and family_of(where) != family:
                continue
            words = self._words[where]
            if start + QUERY_LINES > len(words):
                continue
            window = frozenset().union(*words[start : start + QUERY_LINES])
            similarity = len(query & window) / len(query | window)
            if similarity >= MIN_SIMILARITY:
                scored.append((similarity, where, start))
        scored.sort(key=lambda item: (-item[0], item[1], item[2]))
        return [(where, start) for _, where, start in scored]
