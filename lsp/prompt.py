"""The fill-in-the-middle request for a cursor in a document, laid out for prompt reuse.

The engine reuses the longest token prefix a sequence already holds, so what
decides the speed of a keystroke is how much of the prompt changes. The
layout, from the start of the prompt:

1. repository context: definitions from other files of the names this file
   imports and uses, and the file's own import statements (fixed when the
   file opens or is saved, see repository.py);
2. extra context chunks from other files (change when another file is edited);
3. code elsewhere in the workspace like the lines above the cursor, with what
   followed it there (see snippets.py), chosen with the prefix start below
   and kept as long as it is;
4. a chunk of the text further below the cursor, chosen once and kept while
   its text is unchanged and the cursor stays above it;
5. the FIM prefix: from an anchored start line down to the cursor. The start
   only moves when the prefix grows past `prefix_lines + anchor_lines` lines
   or shrinks under half of `prefix_lines`, so typing only appends to it;
6. the FIM suffix: the rest of the line and a few lines after it. It is kept
   short because it comes after the cursor and is evaluated on every keystroke.

So a keystroke re-evaluates the last few tokens of the prefix plus the short
suffix: tens of tokens, not the hundreds a long suffix window costs.

On a line holding only whitespace there is no suffix: the request continues
the file from the cursor after the same parts 1-5 (`raw`, which the engine
lays out like a FIM prompt's head), because the default model writes the
next line much better that way (README, completion quality). Inside a line
the rest of it and the lines below matter, and it fills in the middle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ingle.core.generation import ContextChunk, GenerationRequest, SamplingOptions

from .settings import CompletionSettings

# `Cursor.next_lines` looks this many times as far down as the lines it is asked for, past blank ones.
NEXT_LINES_REACH = 4


@dataclass(frozen=True)
class LineWindow:
    """Lines around the cursor's line: so many above it and so many below it."""

    above: int
    below: int

    def union(self, other: LineWindow) -> LineWindow:
        """The window holding both."""
        return LineWindow(max(self.above, other.above), max(self.below, other.below))


def prompt_window(settings: CompletionSettings) -> LineWindow:
    """The lines around the cursor's line that `build_prompt` can take text from: it reads no others."""
    # The prefix starts at most `prefix_lines + anchor_lines` up; the below chunk is looked for down to
    # `anchor_lines` past the suffix, and spans `below_lines`.
    below_chunk = settings.anchor_lines + settings.below_lines if settings.below_lines else 0
    return LineWindow(above=settings.prefix_lines + settings.anchor_lines, below=settings.suffix_lines + below_chunk)


@dataclass
class Anchors:
    """Where one document's prompt parts start; kept between requests so the prompt head stays the same."""

    prefix_start: int | None = None
    below: tuple[str, ...] = ()
    """The lines of the below-cursor chunk, found again by content after lines are inserted above it."""
    similar: tuple[ContextChunk, ...] = ()
    """Code like the code at the cursor, chosen when `prefix_start` was."""


@dataclass(frozen=True)
class Cursor:
    """A document and a position in it, as the completion sees them."""

    filename: str
    lines: Sequence[str]
    """The document's lines, without line endings."""
    line: int
    character: int

    @property
    def line_prefix(self) -> str:
        """Text of the cursor's line before the cursor."""
        return self.current[: self.character]

    @property
    def line_suffix(self) -> str:
        """Text of the cursor's line after the cursor."""
        return self.current[self.character :]

    @property
    def current(self) -> str:
        """The cursor's line."""
        return self.lines[self.line] if self.line < len(self.lines) else ""

    def lines_above(self, count: int) -> Sequence[str]:
        """Up to `count` lines right above the cursor's line."""
        return self.lines[max(0, self.line - count) : self.line]

    def lines_below(self, count: int) -> Sequence[str]:
        """Up to `count` lines right below the cursor's line."""
        return self.lines[self.line + 1 : self.line + 1 + count]

    def next_lines(self, count: int) -> list[str]:
        """Up to `count` non-blank lines after the cursor's line."""
        found = [line for line in self.lines_below(NEXT_LINES_REACH * count) if line.strip()]
        return found[:count]

    @property
    def at_indentation(self) -> bool:
        """True when there is only whitespace (and some) before the cursor on its line."""
        return bool(self.line_prefix) and not self.line_prefix.strip()

    @property
    def starts_line(self) -> bool:
        """True when the cursor's line holds nothing but whitespace: the suggestion is the next line(s)."""
        return not self.current.strip()

    @property
    def completes_line(self) -> bool:
        """True when the cursor is after text on its line: then the suggestion finishes that line only."""
        return bool(self.line_prefix.strip())


@dataclass(frozen=True)
class FimPrompt:
    """The parts of a fill-in-the-middle prompt, or of a plain continuation of the file (no suffix)."""

    prefix: str
    suffix: str | None
    """None: a plain continuation of the file from the prefix, no fill-in-the-middle."""
    chunks: list[ContextChunk]
    filename: str

    def request(self, model: str, max_tokens: int) -> GenerationRequest:
        """The engine request: greedy, so that the same context gives the same suggestion (and caches well)."""
        options = SamplingOptions(temperature=0.0, top_k=1, repeat_penalty=1.0, max_tokens=max_tokens)
        return GenerationRequest(
            model=model,
            prompt=self.prefix,
            suffix=self.suffix,
            raw=self.suffix is None,
            extra_context=self.chunks,
            filename=self.filename,
            options=options,
        )


def build_prompt(
    cursor: Cursor,
    anchors: Anchors,
    ring_chunks: list[ContextChunk],
    settings: CompletionSettings,
    repository: list[ContextChunk] | None = None,
    similar_code: Callable[[Cursor], list[ContextChunk]] | None = None,
) -> FimPrompt:
    """The prompt for `cursor`; updates `anchors` for the next keystroke."""
    line = cursor.line
    start = anchors.prefix_start
    if (
        start is None
        or start > line
        or line - start > settings.prefix_lines + settings.anchor_lines
        or (line - start < settings.prefix_lines // 2 and start > 0)
    ):
        start = max(0, line - settings.prefix_lines)
        # Looked up again only with the prefix start: while it stays, the prompt head stays the same.
        anchors.similar = tuple(similar_code(cursor)) if similar_code else ()
    anchors.prefix_start = start
    # Not on the first line: a plain continuation of nothing has no prompt to send.
    plain = settings.plain_at_line_start and cursor.starts_line and line > 0
    # A plain continuation ends in the indentation, which the engine heals (core/runtime/indentation.py). Filling
    # in at a line's indentation, the prefix ends at the line break and the model writes the indentation itself
    # (clean_suggestion takes it off again); the two measured alike there (README, completion quality).
    typed = "" if cursor.at_indentation and not plain else cursor.line_prefix
    prefix = "".join(text + "\n" for text in cursor.lines[start:line]) + typed

    after = cursor.lines[line + 1 : line + 1 + settings.suffix_lines]
    suffix = None if plain else cursor.line_suffix + "\n" + "".join(text + "\n" for text in after)

    chunks = [*(repository or []), *ring_chunks, *anchors.similar]
    below = _below_chunk(cursor, anchors, settings)
    if below:
        chunks.append(ContextChunk(text="\n".join(below) + "\n", filename=cursor.filename))
    return FimPrompt(prefix=prefix, suffix=suffix, chunks=chunks, filename=cursor.filename)


def _below_chunk(cursor: Cursor, anchors: Anchors, settings: CompletionSettings) -> tuple[str, ...]:
    """The lines below the suffix window, reused while they are unchanged, below the cursor and close to it."""
    if settings.below_lines == 0:
        return ()
    lines = cursor.lines
    first_after_suffix = cursor.line + 1 + settings.suffix_lines
    if anchors.below:
        found = _find(lines, anchors.below, cursor.line + 1, first_after_suffix + settings.anchor_lines)
        if found is not None:
            return anchors.below
    fresh = tuple(lines[first_after_suffix : first_after_suffix + settings.below_lines])
    anchors.below = fresh if any(text.strip() for text in fresh) else ()
    return anchors.below


def _find(lines: Sequence[str], block: tuple[str, ...], lowest: int, highest: int) -> int | None:
    """First line index in [lowest, highest] where `block` occurs in `lines`, else None."""
    size = len(block)
    for index in range(lowest, min(highest, len(lines) - size) + 1):
        if lines[index] == block[0] and tuple(lines[index : index + size]) == block:
            return index
    return None
