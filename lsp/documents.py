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
"""

from __future__ import annotations

import logging
import re
from collections.abc import Generator, Sequence
from typing import Any
from urllib.parse import unquote

from cattrs.errors import ClassValidationError
from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams
from pygls.protocol import LanguageServerProtocol, lsp_method
from pygls.workspace import PositionCodec, TextDocument, Workspace

log = logging.getLogger("ingle.lsp")

# The line breaks of LSP: a match ends a line (\r\n before \r, so that it counts once).
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
# Zero-width places right after a line break, to split while keeping each line's ending.
_AFTER_LINE_BREAK = re.compile(r"(?<=\n)|(?<=\r)(?!\n)")
_SURROGATE = re.compile("[\ud800-\udfff]")
# What `LspProtocol.structure_message` gives for a message it has answered or ignored already.
_HANDLED = object()
# Longest line the model sees: a longer one (a minified bundle, a data blob) is cut to this in the prompt, and the
# cursor on it gets no suggestion. About 300 tokens of code.
MAX_LINE_CHARS = 1000


def split_lines(text: str) -> list[str]:
    """The lines of `text` without their endings, as LSP counts them: "a\\n" is two lines, "a" and ""."""
    return _LINE_BREAK.split(text)


def without_surrogates(text: str) -> str:
    """`text` with each lone surrogate replaced by U+FFFD, which every encoder accepts."""
    return _SURROGATE.sub("\ufffd", text)


def text_lines(document: TextDocument) -> list[str]:
    """A document's lines as LSP counts them, without endings and without lone surrogates."""
    return split_lines(without_surrogates(document.source))


def prompt_lines(lines: list[str]) -> list[str]:
    """Lines as the model gets them: each cut to `MAX_LINE_CHARS`."""
    return [line[:MAX_LINE_CHARS] for line in lines]


class LspTextDocument(TextDocument):
    """pygls's document with LSP's line breaks, so that positions and incremental edits land where the editor
    means them."""

    @property
    def lines(self) -> Sequence[str]:
        """The lines with their endings (what pygls expects), split where LSP splits."""
        pieces = _AFTER_LINE_BREAK.split(self.source)
        if pieces and not pieces[-1]:
            pieces.pop()
        return tuple(pieces)


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

    def update_text_document(
        self, text_doc: types.VersionedTextDocumentIdentifier, change: types.TextDocumentContentChangeEvent
    ) -> None:
        """Apply an edit to an open document; one for a document never opened is a client's mistake, logged."""
        if opened_document(self, text_doc.uri) is None:
            log.warning("ignoring an edit of %s: it is not open", text_doc.uri)
            return
        super().update_text_document(text_doc, change)


def opened_document(workspace: Workspace, uri: str) -> TextDocument | None:
    """The document the editor has open at `uri`, or None (pygls would read the file from disk instead)."""
    return workspace.text_documents.get(unquote(uri))


def client_position(line: int, before: str, codec: PositionCodec) -> types.Position:
    """The position on `line` after the text `before`, in the client's units."""
    return types.Position(line, codec.client_num_units(before))


def column_of(line: str, character: int, codec: PositionCodec) -> int:
    """The code-point index into `line` of a position's character in the client's units; past the end of the
    line means its end, as LSP says."""
    clamped = types.Position(0, min(character, codec.client_num_units(line)))
    return codec.position_from_client_units([line], clamped).character


class LspProtocol(LanguageServerProtocol):
    """pygls's protocol with an `LspWorkspace` (pygls builds a plain one at `initialize`), and an answer for a
    request whose params are not valid LSP (pygls logs a traceback and leaves the editor waiting forever)."""

    def structure_message(self, data: dict[str, Any]) -> Any:
        """The message `data` as lsprotocol's type; a request or notification that does not fit its type is
        answered (or ignored) here, with one line in the log rather than a traceback."""
        known = self.get_message_type(data["method"]) if {"jsonrpc", "method"} <= data.keys() else None
        if known is None:
            return super().structure_message(data)
        try:
            return self._converter.structure(data, known)
        except ClassValidationError:
            # A position below 0 or beyond 2^31, a missing field: a client's bug.
            method = data["method"]
            if "id" not in data:
                log.warning("ignoring a %s notification: its params are not valid LSP", method)
                return _HANDLED
            log.warning("answering %s request %r with an error: its params are not valid LSP", method, data["id"])
            sentence = f"{method}: the params are not valid LSP (a position must be two integers from 0 to 2^31-1)."
            self._send_response(data["id"], error=JsonRpcInvalidParams(sentence).to_response_error())
            return _HANDLED

    def handle_message(self, message: Any) -> None:
        """pygls's dispatch, except for a message `structure_message` has handled already."""
        if message is not _HANDLED:
            super().handle_message(message)

    @lsp_method(types.INITIALIZE)
    def lsp_initialize(self, params: types.InitializeParams) -> Generator[Any, Any, types.InitializeResult]:
        """pygls's initialize; then the workspace it made is replaced, before any document is opened."""
        result = yield from super().lsp_initialize(params)
        self._workspace = LspWorkspace.like(self.workspace)
        return result
