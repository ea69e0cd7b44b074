"""Chunking along a document's structure: blocks under the same headings share a chunk up to a token budget."""

from __future__ import annotations

import re

from .documents import Block, Chunk, estimate_tokens

CHUNK_TOKENS = 180
"""all-MiniLM-L6-v2 was trained on 256 word pieces; words and marks undercount them, hence the margin."""

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def chunk_blocks(blocks: list[Block], budget: int = CHUNK_TOKENS) -> list[Chunk]:
    """Group consecutive blocks with the same headings and page into chunks of at most `budget` tokens.

    A block larger than the budget is split: preformatted text by lines, prose
    by sentences (and a sentence longer than the budget by words).
    """
    chunks: list[Chunk] = []
    pending: list[Block] = []
    pending_tokens = 0

    def flush() -> None:
        nonlocal pending, pending_tokens
        if pending:
            chunks.append(_join(pending))
        pending, pending_tokens = [], 0

    for block in blocks:
        for piece in _split(block, budget):
            tokens = estimate_tokens(piece.text)
            same_place = pending and (pending[-1].headings, pending[-1].page) == (piece.headings, piece.page)
            if not same_place or pending_tokens + tokens > budget:
                flush()
            pending.append(piece)
            pending_tokens += tokens
    flush()
    return chunks


def _join(blocks: list[Block]) -> Chunk:
    lines = [b.start_line for b in blocks if b.start_line is not None]
    ends = [b.end_line for b in blocks if b.end_line is not None]
    return Chunk(
        text="\n\n".join(b.text for b in blocks),
        headings=blocks[0].headings,
        start_line=min(lines) if lines else None,
        end_line=max(ends) if ends else None,
        page=blocks[0].page,
    )


def _split(block: Block, budget: int) -> list[Block]:
    """The block itself if it fits, else consecutive pieces that do, each with its own line range."""
    if estimate_tokens(block.text) <= budget:
        return [block]
    if block.preformatted or (block.start_line is not None and "\n" in block.text):
        units = block.text.split("\n")
        separator = "\n"
    else:
        units = [unit for unit in _SENTENCE_END.split(block.text) if unit]
        separator = " "
    pieces: list[Block] = []
    current: list[str] = []
    current_tokens = 0
    first_line = block.start_line
    line = block.start_line

    def emit() -> None:
        nonlocal current, current_tokens, first_line
        if current:
            text = separator.join(current).strip("\n")
            if text.strip():
                last = line - 1 if line is not None and separator == "\n" else block.end_line
                pieces.append(Block(text, block.headings, first_line, last, block.page, block.preformatted))
        current, current_tokens = [], 0
        first_line = line

    for unit in units:
        for part in _words_within(unit, budget):
            tokens = estimate_tokens(part)
            if current and current_tokens + tokens > budget:
                emit()
            current.append(part)
            current_tokens += tokens
        if line is not None and separator == "\n":
            line += 1
    emit()
    return pieces


def _words_within(unit: str, budget: int) -> list[str]:
    """`unit`, or its words regrouped into parts of at most `budget` tokens if it is longer."""
    if estimate_tokens(unit) <= budget:
        return [unit]
    parts: list[str] = []
    current: list[str] = []
    current_tokens = 0
    for word in unit.split():
        tokens = estimate_tokens(word)
        if current and current_tokens + tokens > budget:
            parts.append(" ".join(current))
            current, current_tokens = [], 0
        current.append(word)
        current_tokens += tokens
    if current:
        parts.append(" ".join(current))
    return parts
