"""Extra context for completions: chunks of recently edited files, in a ring buffer.

As in llama.vim, chunks are gathered when a file is saved or edited and the
oldest falls out when the ring is full; unlike llama.vim, not when a file is
merely opened, which would change every other document's prompt head (what a
file needs from the others comes from the repository index). The order matters for speed:
a new chunk goes to the end, so the chunks ahead of it stay an unchanged
prompt prefix that the engine does not evaluate again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from ingle.core.generation import ContextChunk

# Chunks with fewer non-blank lines carry too little to be worth their tokens.
MIN_CHUNK_LINES = 3
# A new chunk this similar to an old one (share of common lines) replaces it instead of sitting beside it.
SIMILAR = 0.9


@dataclass(frozen=True)
class RingChunk:
    """A range of lines of one file."""

    filename: str
    start: int
    lines: tuple[str, ...]

    @property
    def end(self) -> int:
        """Line after the last one."""
        return self.start + len(self.lines)

    def overlaps(self, other: RingChunk) -> bool:
        """Whether both are from the same file and share a line number."""
        return self.filename == other.filename and self.start < other.end and other.start < self.end

    def similarity(self, other: RingChunk) -> float:
        """Share of lines the two chunks have in common (llama.vim's measure)."""
        mine, theirs = set(self.lines), set(other.lines)
        common = sum(1 for line in self.lines if line in theirs) + sum(1 for line in other.lines if line in mine)
        return common / max(1, len(self.lines) + len(other.lines))


class ContextRing:
    """The ring buffer of chunks from other files."""

    def __init__(self, max_chunks: int, chunk_lines: int) -> None:
        self.max_chunks = max_chunks
        self.chunk_lines = chunk_lines
        self._chunks: deque[RingChunk] = deque()

    def resize(self, max_chunks: int, chunk_lines: int) -> None:
        """Apply new settings, dropping the oldest chunks if the ring shrank."""
        self.max_chunks = max_chunks
        self.chunk_lines = chunk_lines
        while len(self._chunks) > max_chunks:
            self._chunks.popleft()

    def pick(self, filename: str, lines: Sequence[str], around: int) -> None:
        """Add the chunk of `lines` centred on line `around` of `filename`."""
        if self.max_chunks == 0 or not lines:
            return
        start = max(0, min(around - self.chunk_lines // 2, len(lines) - self.chunk_lines))
        chunk = RingChunk(filename, start, tuple(lines[start : start + self.chunk_lines]))
        if sum(1 for line in chunk.lines if line.strip()) < MIN_CHUNK_LINES:
            return
        if chunk in self._chunks:
            return
        # One chunk per region of a file: the newer text of a region replaces the older.
        for old in [old for old in self._chunks if old.overlaps(chunk) or old.similarity(chunk) > SIMILAR]:
            self._chunks.remove(old)
        self._chunks.append(chunk)
        while len(self._chunks) > self.max_chunks:
            self._chunks.popleft()

    def forget(self, filename: str) -> None:
        """Drop every chunk of a file (it was deleted or renamed)."""
        self._chunks = deque(chunk for chunk in self._chunks if chunk.filename != filename)

    def chunks_for(self, filename: str) -> list[ContextChunk]:
        """The chunks to send with a completion in `filename`: those of other files, oldest first."""
        return [
            ContextChunk(text="\n".join(chunk.lines) + "\n", filename=chunk.filename)
            for chunk in self._chunks
            if chunk.filename != filename
        ]

    def __len__(self) -> int:
        return len(self._chunks)
