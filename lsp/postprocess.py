"""Turning what the model generated into a suggestion worth showing.

Two halves: `StreamStop` decides while tokens stream in when the suggestion is
complete, so the generation is closed (and its sequence freed) early; and
`clean_suggestion` applies the stop rules to the text: no repeating the text
after the cursor, end at the end of the block by indentation, a line limit,
trimmed, and nothing empty or repeated.
"""

from __future__ import annotations

from .prompt import NEXT_LINES_REACH, Cursor, LineWindow


def indentation(line: str) -> int:
    """Columns of leading whitespace (a tab counts as one: only comparisons within a file matter)."""
    return len(line) - len(line.lstrip(" \t"))


def block_indent(cursor: Cursor) -> int:
    """The indentation a suggestion's later lines must keep to stay in the cursor's block."""
    if cursor.line_prefix.strip():
        return indentation(cursor.current)
    # On a blank or indentation-only line, the cursor column is the block's indentation.
    return len(cursor.line_prefix)


class StreamStop:
    """Watches the streamed text and says when the suggestion has everything it can show."""

    def __init__(self, cursor: Cursor, max_lines: int) -> None:
        self.first_line_only = cursor.completes_line
        self.max_lines = max_lines
        self.base_indent = block_indent(cursor)
        self.text = ""

    @property
    def has_first_line(self) -> bool:
        """True once a non-blank line is complete: enough to show while the rest streams in."""
        return any(line.strip() for line in self.text.split("\n")[:-1])

    def feed(self, piece: str) -> bool:
        """Add streamed text; True once more text could not change the suggestion."""
        self.text += piece
        lines = self.text.split("\n")
        complete = lines[:-1]  # the last one may still grow
        if not complete:
            return False
        shown = [line for line in complete if line.strip()]
        if self.first_line_only and shown:
            return True
        if len(shown) >= self.max_lines:
            return True
        # A non-blank line after the first that dedents past the block ends it.
        return any(line.strip() and indentation(line) < self.base_indent for line in complete[1:])


def stop_rule_window(max_lines: int) -> LineWindow:
    """The lines around the cursor's line that `clean_suggestion` compares a suggestion with: it reads no others."""
    return LineWindow(above=1, below=NEXT_LINES_REACH * (max_lines + 1))


def clean_suggestion(raw: str, cursor: Cursor, max_lines: int) -> str:
    """The suggestion to insert at the cursor, or "" when there is nothing worth showing."""
    raw = raw.replace("\r\n", "\n")
    if cursor.at_indentation:
        raw = _without_indentation(raw, cursor.line_prefix)
    lines = raw.split("\n")
    base = block_indent(cursor)
    kept: list[str] = []
    upcoming = cursor.next_lines(max_lines + 1)
    for index, line in enumerate(lines):
        if index > 0 and line.strip():
            if indentation(line) < base:
                break  # the block ended
            if upcoming and line.strip() == upcoming[0].strip():
                break  # from here on it repeats the text after the cursor
            if kept and line.strip() == kept[-1].strip():
                break  # the model started looping
        kept.append(line.rstrip())
        if cursor.completes_line and line.strip():
            break
        if sum(1 for text in kept if text.strip()) >= max_lines:
            break
    while kept and not kept[-1].strip():
        kept.pop()
    if not kept:
        return ""
    kept[0] = _without_line_suffix(kept[0], cursor.line_suffix) if len(kept) == 1 else kept[0]
    text = "\n".join(kept)
    if not text.strip() or _repeats_existing(text, cursor):
        return ""
    return text


def _without_indentation(raw: str, indentation: str) -> str:
    """The model's text without the indentation the document already has before the cursor (see build_prompt)."""
    first = raw.split("\n", 1)[0]
    leading = len(first) - len(first.lstrip(" \t"))
    return raw[min(leading, len(indentation)) :]


def _without_line_suffix(first: str, line_suffix: str) -> str:
    """Drop the end of a one-line suggestion that the line already has after the cursor (e.g. a closing bracket)."""
    tail = line_suffix.strip()
    if tail and first.rstrip().endswith(tail):
        return first.rstrip()[: -len(tail)].rstrip() if first.rstrip() != tail else ""
    return first


def _repeats_existing(text: str, cursor: Cursor) -> bool:
    """True when the suggestion only restates lines that are already there."""
    first = (cursor.line_prefix + text.split("\n")[0]).strip()
    above = cursor.lines[cursor.line - 1].strip() if cursor.line > 0 else None
    following = cursor.next_lines(1)
    if text.strip() == cursor.line_suffix.strip():
        return True
    return bool("\n" not in text and first and (first == above or (following and first == following[0].strip())))
