"""What readers produce and the index stores: blocks of structured text, and chunks made of them."""

from __future__ import annotations

import re
from dataclasses import dataclass

TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")
"""What estimate_tokens counts: a run of word characters, or one mark."""


def estimate_tokens(text: str) -> int:
    """About how many tokens a WordPiece or BPE tokenizer makes of `text`: words and punctuation marks.

    Cheap and model-independent; real tokenizers split rare words further, so
    budgets are set below the embedding model's window.
    """
    return len(TOKEN_PATTERN.findall(text))


@dataclass(frozen=True)
class Block:
    """One structural unit of a document: a paragraph, a list, a code block, a definition, a page's text."""

    text: str
    headings: tuple[str, ...] = ()
    """The headings it sits under, outermost first (for code: the definition it belongs to)."""
    start_line: int | None = None
    """First line, 1-based, in the source file (or in the PDF page)."""
    end_line: int | None = None
    page: int | None = None
    """PDF page, 1-based."""
    preformatted: bool = False
    """Code or a literal block: split by lines, never re-flowed."""


@dataclass(frozen=True)
class Document:
    """A read document: its title and its blocks in order."""

    location: str
    """A path or URL: where it came from, shown in citations."""
    title: str
    blocks: list[Block]
    cut: str | None = None
    """A sentence saying how the document was cut to ingle's limits, if it was (the rest is not indexed)."""


@dataclass(frozen=True)
class Chunk:
    """A piece of a document small enough to embed, with the place it came from."""

    text: str
    headings: tuple[str, ...]
    start_line: int | None
    end_line: int | None
    page: int | None

    @property
    def heading_path(self) -> str:
        """The headings joined as `A › B › C`."""
        return " › ".join(self.headings)

    def place(self) -> str:
        """Where in the document: `page 3, lines 4–9`, `lines 10–22`, or ''."""
        parts = []
        if self.page is not None:
            parts.append(f"page {self.page}")
        if self.start_line is not None:
            end = self.end_line if self.end_line is not None else self.start_line
            parts.append(f"line {self.start_line}" if end == self.start_line else f"lines {self.start_line}–{end}")
        return ", ".join(parts)
