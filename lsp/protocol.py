"""JSON-RPC as the editor speaks it: messages read within limits, and an answer for every request.

pygls reads a header line and a body of whatever length they announce, so
`Content-Length: 99999999999999999` ended the server with a MemoryError and
a header line without an end grew it without bound; it structured every
nested JSON object as if it were a message, so a setting shaped like a
request was answered; and a message it could not structure (no params, a
method that is not a string, an object as id) left a traceback and the
editor waiting. Here a message is read within `MAX_MESSAGE_BYTES`, only the
message itself is structured, and what cannot be one is answered with the
JSON-RPC error LSP names, with one line in the log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from collections.abc import Callable, Generator
from concurrent.futures import Executor, Future
from typing import Any, BinaryIO

from cattrs.errors import ClassValidationError
from lsprotocol import types
from pygls.exceptions import (
    JsonRpcException,
    JsonRpcInvalidParams,
    JsonRpcInvalidRequest,
    JsonRpcMethodNotFound,
    JsonRpcParseError,
    JsonRpcServerNotInitialized,
)
from pygls.protocol import LanguageServerProtocol, lsp_method
from pygls.protocol.json_rpc import JsonRPCNotification, JsonRPCRequestMessage, MsgId

from .documents import LspWorkspace

log = logging.getLogger("ingle.lsp")

# A header line is `Content-Length: 123` or `Content-Type: ...; charset=utf-8`: a longer one is no header.
MAX_HEADER_BYTES = 1024
# The largest message read: a whole document comes in one didOpen, and VS Code hands extensions none over 50 M
# characters (its TextModel._MODEL_SYNC_LIMIT); JSON escaping can double that. A longer one (Neovim opening a huge
# log) is skipped, read in pieces so that it costs no memory: the stream stays in step and the server goes on, only
# that document is not completed. Stopping instead would end completion in every file.
MAX_MESSAGE_BYTES = 128 * 1024 * 1024
# A length beyond what an editor's strings can hold (V8, VS Code's: 512 MiB; LuaJIT, Neovim's: 2 GiB) announces no
# message but a broken stream: skipping it would leave every later request unanswered, so the server stops.
MAX_SKIPPED_BYTES = 2 * 1024 * 1024 * 1024
_SKIP_CHUNK_BYTES = 1024 * 1024
# At the end of a line rather than as the whole of it: a body has no line break at its end, so after a message
# whose length could not be read (`Content-Length: abc`), its body and the next header come as one line. Found
# there, the header brings the stream back in step (a JSON body cannot hold it: its line breaks are escaped).
_CONTENT_LENGTH = re.compile(rb"content-length: *(\d+)\r?\n\Z", re.IGNORECASE)


class UnreadableStream(Exception):
    """The editor's stream announced something no editor sends: no later message can be found in it."""


def read_message(stream: BinaryIO) -> bytes | None:
    """The body of the next message on `stream` (blocking); None once the stream ends.

    Raises UnreadableStream where the stream cannot be read on.
    """
    length: int | None = None
    while True:
        line = stream.readline(MAX_HEADER_BYTES)
        if len(line) >= MAX_HEADER_BYTES and not line.endswith(b"\n"):
            log.warning("ignoring a line of over %d bytes where a header belongs", MAX_HEADER_BYTES)
            line = _end_of_line(stream)
        if not line.endswith(b"\n"):
            return None  # the end of the stream
        if line.strip():
            match = _CONTENT_LENGTH.search(line)
            if match and length is None:
                if match.start():
                    log.warning("ignoring what came before a header: it is no message")
                length = int(match.group(1))
            continue
        if length is None:
            continue  # a blank line with no length before it: nothing to read
        if length <= MAX_MESSAGE_BYTES:
            body = stream.read(length)
            return body if len(body) == length else None
        if length > MAX_SKIPPED_BYTES:
            raise UnreadableStream(f"the editor announced a message of {length} bytes, which no editor can send")
        log.warning("ignoring a message of %d bytes: this server reads none over %d", length, MAX_MESSAGE_BYTES)
        if not _skip(stream, length):
            return None
        length = None


def _end_of_line(stream: BinaryIO) -> bytes:
    """Read past the end of the current line, a piece at a time; its last bytes (a header may end it), without a
    line break if the stream ended first."""
    end = b""
    while True:
        piece = stream.readline(_SKIP_CHUNK_BYTES)
        end = (end + piece)[-MAX_HEADER_BYTES:]
        if not piece or piece.endswith(b"\n"):
            return end


def _skip(stream: BinaryIO, count: int) -> bool:
    """Read past `count` bytes, a piece at a time; False if the stream ended first."""
    while count > 0:
        piece = stream.read(min(count, _SKIP_CHUNK_BYTES))
        if not piece:
            return False
        count -= len(piece)
    return True


async def serve(stream: BinaryIO, protocol: LspProtocol, stop: threading.Event, executor: Executor) -> None:
    """Hand each message on `stream` to `protocol` until the stream ends or `stop` is set (reads block: they run
    in `executor`). Raises UnreadableStream, as `read_message` does."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        body = await loop.run_in_executor(executor, read_message, stream)
        if body is None:
            return
        try:
            protocol.receive(body)
        except BrokenPipeError:
            raise  # the editor is gone: nothing left to serve
        except Exception:
            log.exception("failed to handle a message")  # a bug here: the next message is read all the same


def _is_id(value: object) -> bool:
    """Whether `value` can identify a request: LSP's `integer | string` (JSON's true is no integer)."""
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


class LspProtocol(LanguageServerProtocol):
    """pygls's protocol taking messages as `read_message` gives them: each answered, or refused with the error
    LSP names (before `initialize`, a second `initialize`, after `shutdown`, an unknown method, params that are
    not valid LSP; a second `initialized` is ignored), with an `LspWorkspace` (pygls builds a plain one at
    `initialize`)."""

    _initialize_seen = False
    _initialized_seen = False

    def receive(self, body: bytes) -> None:
        """Handle one message's body as the editor sent it."""
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as error:  # not JSON, not UTF-8, nested too deep, a number too long
            self._refuse(None, JsonRpcParseError(f"The message is not JSON: {error}."))
            return
        message = self.structure_message(data)
        if message is not None:
            self.handle_message(message)

    def structure_message(self, data: Any) -> Any:
        """The message `data` as lsprotocol's type; or None where it was answered (or ignored) here instead.

        pygls's reader calls this on every JSON object in a message, as json's object_hook; `receive` calls it on
        the message only.
        """
        if not isinstance(data, dict):
            return self._refuse(None, JsonRpcInvalidRequest("A message must be a JSON object."))
        if "method" not in data:
            return self._answer(data)
        msg_id: MsgId | None = data.get("id")
        if "id" in data and not _is_id(msg_id):
            return self._refuse(None, JsonRpcInvalidRequest("A request's id must be an integer or a string."))
        method = data["method"]
        if data.get("jsonrpc") != "2.0":
            return self._refuse(msg_id, JsonRpcInvalidRequest('A message must say "jsonrpc": "2.0".'))
        if not isinstance(method, str):
            return self._refuse(msg_id, JsonRpcInvalidRequest("A message's method must be a string."))
        refusal = self._refusal(method)
        if refusal is not None:
            if msg_id is None:
                log.info("ignoring a %s notification: %s", method, refusal.message)
                return None
            return self._refuse(msg_id, refusal)
        generic = JsonRPCNotification if msg_id is None else JsonRPCRequestMessage
        try:
            # JSON-RPC lets a message leave out params; pygls's generic types need them.
            message = self._converter.structure({"params": None, **data}, self.get_message_type(method) or generic)
        except ClassValidationError:
            # A position below 0 or beyond 2^31, a missing field: a client's bug.
            if msg_id is None:
                log.warning("ignoring a %s notification: its params are not valid LSP", method)
                return None
            sentence = f"{method}: the params are not valid LSP (a position must be two integers from 0 to 2^31-1)."
            return self._refuse(msg_id, JsonRpcInvalidParams(sentence))
        if method == types.INITIALIZE:
            self._initialize_seen = True
        if method == types.INITIALIZED:
            self._initialized_seen = True
        return message

    def _refusal(self, method: str) -> JsonRpcException | None:
        """Why a message for `method` is not handled now, as LSP has it answered; None where it is handled."""
        if method == types.EXIT:
            return None  # it stops the server at any time
        if not self._initialize_seen and method != types.INITIALIZE:
            return JsonRpcServerNotInitialized(f"{method}: the server is not initialized yet.")
        if self._initialize_seen and method == types.INITIALIZE:
            return JsonRpcInvalidRequest("initialize: the server is initialized already.")
        if self._initialized_seen and method == types.INITIALIZED:
            # Its handler sets the server up (the model load, the workspace scan, the file watcher): once.
            return JsonRpcInvalidRequest("initialized: the editor said so already.")
        if self._shutdown:
            return JsonRpcInvalidRequest(f"{method}: the server is shutting down (only exit is left).")
        if method != types.CANCEL_REQUEST and method not in self.fm.features and method not in self.fm.builtin_features:
            return JsonRpcMethodNotFound(f"{method}: this server does not offer it.")
        return None

    def _answer(self, data: dict[str, Any]) -> Any:
        """An answer to one of the server's own requests, structured by pygls; None (logged) if it is none."""
        if data.get("jsonrpc") == "2.0" and _is_id(data.get("id")) and ("result" in data or "error" in data):
            try:
                return super().structure_message(data)
            except JsonRpcException:
                pass  # pygls logged why
        log.warning("ignoring a message that is neither a request, a notification nor an answer")
        return None

    def _refuse(self, msg_id: MsgId | None, error: JsonRpcException) -> None:
        """Answer a message with `error` (with a null id where its own could not be read, as JSON-RPC says)."""
        log.warning(
            "answering %s with an error: %s", "a message" if msg_id is None else f"request {msg_id!r}", error.message
        )
        if msg_id is None:
            # lsprotocol's type would leave the null id out.
            self._send_data({"jsonrpc": "2.0", "id": None, "error": {"code": error.code, "message": error.message}})
        else:
            self._send_response(msg_id, error=error.to_response_error())

    def _execute_handler(
        self,
        msg_id: MsgId,
        handler: Callable[..., Any],
        callback: Callable[[Future[Any]], None],
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        """pygls's, then the handler's future forgotten once it is done: pygls forgets those of requests only,
        so each notification to an async handler (and each step of pygls's own handlers) stayed in memory."""

        def forget_then_call_back(future: Future[Any]) -> None:
            # A cancelled one was dropped by $/cancelRequest already, or is shutdown's to cancel while it goes
            # through them all (a dict must not shrink meanwhile).
            if not future.cancelled() and self._request_futures.get(msg_id) is future:
                del self._request_futures[msg_id]
            callback(future)

        super()._execute_handler(msg_id, handler, forget_then_call_back, args, kwargs)

    def _send_handler_result(self, future: Future[Any], *, msg_id: MsgId) -> None:
        """pygls's, except that an error the handler raised as its answer (a `JsonRpcException`, such as the
        engine's errors in errors.py) is sent without the traceback pygls logs for it."""
        error = None if future.cancelled() else future.exception()
        if not isinstance(error, JsonRpcException):
            super()._send_handler_result(future, msg_id=msg_id)
            return
        self._request_futures.pop(msg_id, None)
        log.info("answering request %r with an error: %s", msg_id, error.message)
        self._send_response(msg_id, error=error.to_response_error())

    def _handle_cancel_notification(self, msg_id: MsgId) -> None:
        """pygls's, for an id that can name a request (pygls fails on a list)."""
        if _is_id(msg_id):
            super()._handle_cancel_notification(msg_id)
        else:
            log.warning("ignoring a $/cancelRequest: its id is not an integer or a string")

    @lsp_method(types.INITIALIZE)
    def lsp_initialize(self, params: types.InitializeParams) -> Generator[Any, Any, types.InitializeResult]:
        """pygls's initialize; then the workspace it made is replaced, before any document is opened."""
        result = yield from super().lsp_initialize(params)
        self._workspace = LspWorkspace.like(self.workspace)
        return result
