"""Chunking along a document's structure: blocks under the same headings share a chunk up to a token budget."""

from __future__ import annotations

import re

from .documents import TOKEN_PATTERN, Block, Chunk, estimate_tokens

CHUNK_TOKENS = 180
"""all-MiniLM-L6-v2 was trained on 256 word pieces; words and marks undercount them, hence the margin."""

CHUNK_CHARS = 2000
"""The most characters a chunk holds, whatever its estimated tokens: a minified line or a base64 blob counts as
few "words" but many real tokens, and one such chunk must not fill a chat's context when it is retrieved."""

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_JOINER = 2
"""The characters `_join` puts between two blocks of a chunk."""


def chunk_blocks(blocks: list[Block], budget: int = CHUNK_TOKENS, max_chars: int = CHUNK_CHARS) -> list[Chunk]:
    """Group consecutive blocks with the same headings and page into chunks of at most `budget` tokens
    and `max_chars` characters.

    A block larger than that is split: preformatted text by lines, prose by
    sentences, a sentence or line that is still too long by words, and a word
    that is still too long (no whitespace: minified code, a blob) by characters.
    """
    chunks: list[Chunk] = []
    pending: list[Block] = []
    pending_tokens = 0
    pending_chars = 0

    def flush() -> None:
        nonlocal pending, pending_tokens, pending_chars
        if pending:
            chunks.append(_join(pending))
        pending, pending_tokens, pending_chars = [], 0, 0

    for block in blocks:
        for piece in _split(block, budget, max_chars):
            tokens = estimate_tokens(piece.text)
            same_place = pending and (pending[-1].headings, pending[-1].page) == (piece.headings, piece.page)
            too_big = pending_tokens + tokens > budget or pending_chars + _JOINER + len(piece.text) > max_chars
            if not same_place or too_big:
                flush()
            pending.append(piece)
            pending_tokens += tokens
            pending_chars += len(piece.text) + (_JOINER if len(pending) > 1 else 0)
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


def _fits(text: str, budget: int, max_chars: int) -> bool:
    return len(text) <= max_chars and estimate_tokens(text) <= budget


def _split(block: Block, budget: int, max_chars: int) -> list[Block]:
    """The block itself if it fits, else consecutive pieces that do, each with its own line range."""
    if _fits(block.text, budget, max_chars):
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
    current_chars = 0
    first_line = block.start_line
    line = block.start_line
    last_line = line  # the line of the last part taken: a long line may be cut into several pieces

    def emit() -> None:
        nonlocal current, current_tokens, current_chars, first_line
        if current:
            text = separator.join(current).strip("\n")
            if text.strip():
                last = last_line if line is not None and separator == "\n" else block.end_line
                pieces.append(Block(text, block.headings, first_line, last, block.page, block.preformatted))
        current, current_tokens, current_chars = [], 0, 0
        first_line = line

    for unit in units:
        for part in _words_within(unit, budget, max_chars):
            tokens = estimate_tokens(part)
            if current and (current_tokens + tokens > budget or current_chars + 1 + len(part) > max_chars):
                emit()
            current.append(part)
            current_tokens += tokens
            current_chars += len(part) + (1 if len(current) > 1 else 0)
            last_line = line
        if line is not None and separator == "\n":
            line += 1
    emit()
    return pieces


def _words_within(unit: str, budget: int, max_chars: int) -> list[str]:
    """`unit`, or its words regrouped into parts within `budget` tokens and `max_chars` characters if it is
    longer (a word that is longer still cut by `_cut_word`)."""
    if _fits(unit, budget, max_chars):
        return [unit]
    parts: list[str] = []
    current: list[str] = []
    current_tokens = 0
    current_chars = 0
    for word in unit.split():
        for piece in [word] if _fits(word, budget, max_chars) else _cut_word(word, budget, max_chars):
            tokens = estimate_tokens(piece)
            if current and (current_tokens + tokens > budget or current_chars + 1 + len(piece) > max_chars):
                parts.append(" ".join(current))
                current, current_tokens, current_chars = [], 0, 0
            current.append(piece)
            current_tokens += tokens
            current_chars += len(piece) + (1 if len(current) > 1 else 0)
    if current:
        parts.append(" ".join(current))
    return parts


def _cut_word(word: str, budget: int, max_chars: int) -> list[str]:
    """Text without whitespace (`a.b=1;a.b=2;…`, base64) in consecutive pieces of at most `budget` tokens and
    `max_chars` characters: cut between tokens where it can be, a token longer than `max_chars` by characters."""
    pieces: list[str] = []
    start = 0
    tokens = 0
    for match in TOKEN_PATTERN.finditer(word):
        if match.start() > start and (tokens + 1 > budget or match.end() - start > max_chars):
            pieces.append(word[start : match.start()])
            start, tokens = match.start(), 0
        while match.end() - start > max_chars:
            pieces.append(word[start : start + max_chars])
            start += max_chars
        tokens += 1
    if start < len(word):
        pieces.append(word[start:])
    return pieces
