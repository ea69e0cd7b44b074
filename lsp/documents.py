"""The editor's documents as LSP defines them: lines, positions and text the model can take.

LSP breaks lines only at `\\n`, `\\r\\n` and `\\r` (so does Python's parser);
`str.splitlines`, which pygls's documents use, also breaks at form feeds,
`\\x1c`-`\\x1e`, `\\x85`, U+2028 and U+2029, so a file holding one of those
would put every later line, and every edit below it, in the wrong place.
Positions count in the encoding negotiated at `initialize` (UTF-8 for
Neovim 0.10+, UTF-16 by default); pygls's `PositionCodec` knows its units.
And JSON can carry a lone surrogate (`"\\ud800"`), which no tokenizer can
encode: the model gets U+FFFD in its place, one code point for one, so
columns stay where they were.

An open document keeps its lines between edits, and an edit splits again
only the lines it touches: pygls splits the whole text on every edit, which
costs a second per keystroke in a 40 MB log. A range is clamped as LSP says
(past a line's end means its end; past the last line, the end of the text),
where pygls would keep a line's last character; one that ends before it
starts is refused.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from typing import overload
from urllib.parse import unquote, urlparse

from lsprotocol import types
from pygls.workspace import PositionCodec, TextDocument, Workspace

log = logging.getLogger("ingle.lsp")

# The line breaks of LSP: a match ends a line (\r\n before \r, so that it counts once).
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
# Zero-width places right after a line break, to split while keeping each line's ending.
_AFTER_LINE_BREAK = re.compile(r"(?<=\n)|(?<=\r)(?!\n)")
# What `str.splitlines` breaks at besides LSP's breaks: where none occurs, it splits as LSP does, ten times faster.
_OTHER_BREAKS = "\v\f\x1c\x1d\x1e\x85\u2028\u2029"
_SURROGATE = re.compile("[\ud800-\udfff]")
# Longest line the model sees: a longer one (a minified bundle, a data blob) is cut to this in the prompt, and the
# cursor on it gets no suggestion. About 300 tokens of code.
MAX_LINE_CHARS = 1000
# Longest document completed: a longer one is a log or a data dump, not code someone writes, and each completion
# in it costs time in proportion to its length (its lines are copied, cut for the prompt), during which no other
# request is answered: 3 ms at this limit, 30 ms at a million lines. 100,000 lines of code are about 4 MB.
MAX_DOCUMENT_LINES = 100_000


def split_lines(text: str) -> list[str]:
    """The lines of `text` without their endings, as LSP counts them: "a\\n" is two lines, "a" and ""."""
    return _LINE_BREAK.split(text)


def lines_with_endings(text: str) -> list[str]:
    """The lines of `text` as LSP counts them, each with its ending: "a\\n" is "a\\n" and ""."""
    if any(other in text for other in _OTHER_BREAKS):
        return _AFTER_LINE_BREAK.split(text)
    lines = text.splitlines(keepends=True)
    if not lines or lines[-1].endswith(("\n", "\r")):
        lines.append("")
    return lines


def without_surrogates(text: str) -> str:
    """`text` with each lone surrogate replaced by U+FFFD, which every encoder accepts."""
    # Only a string with a character beyond ASCII can hold one, and asking a string whether it has is free.
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


def _content(line: str) -> str:
    """A line as the model gets it: without its ending and without lone surrogates."""
    return without_surrogates(line.rstrip("\r\n"))


def text_lines(document: TextDocument) -> Sequence[str]:
    """A document's lines as LSP counts them, without endings and without lone surrogates (not to be changed: an
    open document keeps them until its next edit)."""
    if isinstance(document, LspTextDocument):
        return document.content_lines
    return split_lines(without_surrogates(document.source))


class PromptLines(Sequence[str]):
    """Lines as the model gets them: each cut to `MAX_LINE_CHARS` when read. A view, not a copy: a suggestion
    reads a few dozen lines around the cursor, and copying a 100,000-line document took 3 ms a keystroke."""

    def __init__(self, lines: Sequence[str]) -> None:
        self._lines = lines

    def __len__(self) -> int:
        return len(self._lines)

    def __iter__(self) -> Iterator[str]:
        return (line[:MAX_LINE_CHARS] for line in self._lines)

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> list[str]: ...
    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [line[:MAX_LINE_CHARS] for line in self._lines[index]]
        return self._lines[index][:MAX_LINE_CHARS]


def prompt_lines(lines: Sequence[str]) -> Sequence[str]:
    """Lines as the model gets them (see PromptLines)."""
    return PromptLines(lines)


class LspTextDocument(TextDocument):
    """pygls's document with LSP's line breaks, so that positions and incremental edits land where the editor
    means them, and with its lines kept from one edit to the next."""

    _with_endings: list[str] | None = None
    """The lines with their endings, the last one without (it may be empty); split when first needed, then
    edited in place. After an edit they are the text, and `_source` is joined from them when asked for."""
    _contents: list[str] | None = None
    """The same lines as `_content` gives them, index for index."""
    _source_behind = False

    @property
    def source(self) -> str:
        """The text (joined from the lines after an edit: what pygls reads)."""
        if self._source_behind and self._with_endings is not None:
            self._source = "".join(self._with_endings)
            self._source_behind = False
        return super().source

    @property
    def lines(self) -> Sequence[str]:
        """The lines with their endings, split where LSP splits; as pygls counts them, without an empty last
        line."""
        lines, _ = self._split()
        return lines if lines[-1] else lines[:-1]

    @property
    def content_lines(self) -> Sequence[str]:
        """The lines as LSP counts them, without endings and lone surrogates; kept until the next edit."""
        _, contents = self._split()
        return contents

    def _split(self) -> tuple[list[str], list[str]]:
        """The lines with their endings, and as `_content` gives them; split when first needed."""
        if self._with_endings is None or self._contents is None:
            self._with_endings = lines_with_endings(self.source)
            self._contents = [_content(line) for line in self._with_endings]
        return self._with_endings, self._contents

    def _apply_full_change(self, change: types.TextDocumentContentChangeEvent) -> None:
        super()._apply_full_change(change)
        self._with_endings = self._contents = None
        self._source_behind = False

    def _apply_incremental_change(self, change: types.TextDocumentContentChangePartial) -> None:
        """Replace a range's text, splitting again only the lines it spans (pygls splits the whole text)."""
        start, end = change.range.start, change.range.end
        if (start.line, start.character) > (end.line, end.character):
            # pygls would write the text between the two twice: each such edit doubled the document.
            log.warning("ignoring an edit of %s: its range ends (%s) before it starts (%s)", self.uri, end, start)
            return
        lines, contents = self._split()
        first, first_column = self._place(start)
        last, last_column = self._place(end)
        piece = lines[first][:first_column] + change.text + lines[last][last_column:]
        if first > 0 and lines[first - 1].endswith("\r") and piece.startswith("\n"):
            first -= 1  # the \r that ends the line above and this \n make one line break now
            piece = lines[first] + piece
        pieces = lines_with_endings(piece)
        if last < len(lines) - 1:
            pieces.pop()  # the piece ends with the ending of `last`: the next line follows, not an empty one
        lines[first : last + 1] = pieces
        contents[first : last + 1] = [_content(line) for line in pieces]
        self._source_behind = True

    def _place(self, position: types.Position) -> tuple[int, int]:
        """The line and code-point column of a position, clamped as LSP says: past a line's end is its end, and
        past the last line is the end of the text."""
        contents = self.content_lines
        if position.line >= len(contents):
            return len(contents) - 1, len(contents[-1])
        return position.line, column_of(contents[position.line], position.character, self.position_codec)


class LspWorkspace(Workspace):
    """pygls's workspace holding `LspTextDocument`s; edits to a document that is not open are ignored."""

    @classmethod
    def like(cls, workspace: Workspace) -> LspWorkspace:
        """An empty workspace with the root, folders, sync kind and position encoding of `workspace`."""
        return cls(
            workspace.root_uri, workspace._sync_kind, list(workspace.folders.values()), workspace.position_encoding
        )

    def _create_text_document(
        self,
        doc_uri: str,
        source: str | None = None,
        version: int | None = None,
        language_id: str | None = None,
    ) -> TextDocument:
        return LspTextDocument(
            doc_uri,
            source=source,
            version=version,
            language_id=language_id,
            sync_kind=self._sync_kind,
            position_codec=self.position_codec,
        )

    def put_text_document(self, text_document: types.TextDocumentItem, notebook_uri: str | None = None) -> None:
        """Open a document; one whose URI cannot be taken apart (`file://[x`) is a client's mistake, logged."""
        if not readable_uri(text_document.uri):
            log.warning("ignoring the opening of %r: it is not a URI", text_document.uri)
            return
        super().put_text_document(text_document, notebook_uri)

    def update_text_document(
        self, text_doc: types.VersionedTextDocumentIdentifier, change: types.TextDocumentContentChangeEvent
    ) -> None:
        """Apply an edit to an open document; one for a document never opened is a client's mistake, logged."""
        if opened_document(self, text_doc.uri) is None:
            log.warning("ignoring an edit of %s: it is not open", text_doc.uri)
            return
        super().update_text_document(text_doc, change)


def readable_uri(uri: str) -> bool:
    """Whether `uri` can be taken apart: urllib refuses some (`file://[x` reads as a broken IPv6 address)."""
    try:
        urlparse(uri)
    except ValueError:
        return False
    return True


def opened_document(workspace: Workspace, uri: str) -> TextDocument | None:
    """The document the editor has open at `uri`, or None (pygls would read the file from disk instead)."""
    return workspace.text_documents.get(unquote(uri))


def client_position(line: int, before: str, codec: PositionCodec) -> types.Position:
    """The position on `line` after the text `before`, in the client's units."""
    return types.Position(line, codec.client_num_units(before))


def column_of(line: str, character: int, codec: PositionCodec) -> int:
    """The code-point index into `line` of a position's character in the client's units; past the end of the
    line means its end, as LSP says."""
    if line.isascii():  # one unit a character in every encoding: no need to count them one by one
        return min(character, len(line))
    clamped = types.Position(0, min(character, codec.client_num_units(line)))
    return codec.position_from_client_units([line], clamped).character
