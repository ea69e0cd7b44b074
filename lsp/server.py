"""`ingle lsp`: inline and classic code completion over the Language Server Protocol (pygls).

The state lives on `IngleLanguageServer`; each LSP feature is one thin
handler below that converts in, calls the server, and converts out. One
request per document is in flight: a newer one (or `$/cancelRequest`)
cancels it, which closes the engine's token stream and frees its sequence.
The rest of a block generated after its first line was shown stops as
soon as the model is needed for newer text.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import aclosing
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import BinaryIO, cast

from lsprotocol import types
from pydantic import ValidationError
from pygls.io_ import StdoutWriter
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path
from pygls.workspace import PositionCodec

from ingle.adapters.cli.engine_access import EngineChoice
from ingle.adapters.engine_api import EngineApi
from ingle.core.errors import ContextOverflow, IngleError
from ingle.core.generation import ContextChunk, GenerationRequest, SamplingOptions
from ingle.core.settings import Settings

from .backend import CompletionBackend
from .cache import CacheKey, SuggestionCache, suggestion_window
from .context import ContextRing
from .documents import (
    MAX_DOCUMENT_LINES,
    MAX_LINE_CHARS,
    client_position,
    column_of,
    opened_document,
    prompt_lines,
    readable_uri,
    text_lines,
    without_surrogates,
)
from .errors import jsonrpc_error
from .generation import SuggestionGeneration
from .prompt import Anchors, Cursor, build_prompt
from .protocol import LspProtocol, UnreadableStream, serve
from .repository import SUFFIXES, RepositoryIndex, file_context
from .settings import CompletionSettings
from .workspace_files import MAX_FILE_BYTES, read_source
from .workspace_folders import WorkspaceFolders

log = logging.getLogger("ingle.lsp")

# The identifier being typed before the cursor, matched on the reversed line (`\w*$` would take quadratic time on a
# long line of word characters that ends in another): classic completion items replace it with itself plus the
# suggestion.
_WORD = re.compile(r"\w*")


@dataclass(frozen=True)
class Suggestion:
    """What to insert at the cursor, and whether the model was asked for it."""

    text: str
    cursor: Cursor
    from_cache: bool
    seconds: float
    evaluated_tokens: int = 0
    """Prompt tokens the engine decoded for this answer (the rest were reused from its cache)."""


def _version() -> str:
    try:
        return version("ingle")
    except PackageNotFoundError:
        return "0"


class IngleLanguageServer(LanguageServer):
    """The language server's state: settings, the engine, the context ring, the cache and requests in flight."""

    def __init__(self, settings: Settings, backend: CompletionBackend) -> None:
        super().__init__("ingle", _version(), protocol_cls=LspProtocol)
        self.engine_settings = settings
        self.options = CompletionSettings()
        self.backend = backend
        self.ring = ContextRing(self.options.context_chunks, self.options.chunk_lines)
        self.cache = SuggestionCache(self.options.cache_size)
        self.anchors: dict[str, Anchors] = {}
        self.in_flight: dict[str, asyncio.Task[Suggestion | None]] = {}
        self.finishing: dict[str, SuggestionGeneration] = {}
        """Suggestions whose first line was shown and whose rest is still being generated, per document."""
        self.edited_lines: dict[str, int] = {}
        """Documents edited since their last chunk was taken, and the line last edited."""
        self.index = RepositoryIndex()
        self.repository: dict[str, list[ContextChunk]] = {}
        """Each document's repository context, fixed from when it opens (or is saved) so the prompt head stays."""
        self.warming: dict[str, asyncio.Task[None]] = {}
        """Documents whose prompt head is being evaluated ahead of their first completion."""
        self._scan: asyncio.Task[int] | None = None
        self._warm_up: asyncio.Task[EngineApi] | None = None
        self._last_problem: str | None = None

    def start_io(self, stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> None:
        """Serve the editor on stdin/stdout until it exits, as pygls does, but reading each message within the
        limits `read_message` sets (pygls reads whatever length a header announces)."""
        self._stop_event = threading.Event()
        self.protocol.set_writer(StdoutWriter(stdout or sys.stdout.buffer))
        code: int | str | None = 0
        try:
            protocol = cast(LspProtocol, self.protocol)  # the class given to pygls in __init__
            asyncio.run(serve(stdin or sys.stdin.buffer, protocol, self._stop_event, self.thread_pool))
        except BrokenPipeError:
            log.error("stopping: the editor closed the connection")
        except UnreadableStream as error:
            log.error("stopping: %s", error)
            code = 1
        except SystemExit as exited:
            code = exited.code  # `exit`: 0 after `shutdown`, 1 without, as LSP says (pygls drops it)
        except KeyboardInterrupt:
            pass
        finally:
            self.shutdown()
        if code:
            raise SystemExit(code)

    # --- settings -----------------------------------------------------------------

    @property
    def model(self) -> str:
        """The model that completes."""
        return self.options.model or self.engine_settings.default_model

    def configure(self, options: object) -> None:
        """Apply editor settings; a bad value is reported and the previous settings stay."""
        try:
            updated = self.options.updated(options)
        except ValidationError as error:
            first = error.errors()[0]
            field = ".".join(str(part) for part in first["loc"])
            self.tell(f"ingle: ignoring invalid setting '{field}': {first['msg']}.", types.MessageType.Warning)
            return
        if updated == self.options:
            return
        if updated.model != self.options.model:
            self._warm_up = None  # load the new model
        self.options = updated
        self.ring.resize(updated.context_chunks, updated.chunk_lines)
        self.cache = SuggestionCache(updated.cache_size)
        self.backend.start_daemon = updated.start_daemon
        self.repository.clear()
        # Laid out for the old settings, a prompt could reach past the lines the new cache keys cover.
        self.anchors.clear()

    # --- status ---------------------------------------------------------------------

    def tell(self, message: str, kind: types.MessageType = types.MessageType.Info) -> None:
        """Show a message in the editor (window/showMessage)."""
        self.window_show_message(types.ShowMessageParams(type=kind, message=message))

    def problem(self, message: str) -> None:
        """Show an error once, not on every keystroke while it lasts."""
        if message != self._last_problem:
            self._last_problem = message
            self.tell(f"ingle: {message}", types.MessageType.Error)

    def warm_up(self) -> asyncio.Task[EngineApi]:
        """Connect and load the model in the background (again, if the last attempt failed)."""
        task = self._warm_up
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            task = self._warm_up = asyncio.create_task(self._connect_and_load())
            # The failure was shown to the user; marking it retrieved keeps asyncio from logging it again.
            task.add_done_callback(lambda done: done.cancelled() or done.exception())
        return task

    async def engine(self) -> EngineApi:
        """The engine with the model loaded; the first call connects and loads, later calls wait for that."""
        # Shielded: a cancelled completion must not abort the load the next one needs.
        return await asyncio.shield(self.warm_up())

    async def _connect_and_load(self) -> EngineApi:
        token = f"ingle-load-{time.monotonic_ns()}"
        progress = self._progress_supported()
        title = f"ingle: loading {self.model}"
        if progress:
            await self.work_done_progress.create_async(token)
            self.work_done_progress.begin(token, types.WorkDoneProgressBegin(title=title, cancellable=False))
        else:
            self.tell(f"{title}…")
        try:
            api = await self.backend.api(self._status)
            running = await api.load(self.model)
        except IngleError as error:
            self.problem(error.message)
            raise
        finally:
            if progress:
                self.work_done_progress.end(token, types.WorkDoneProgressEnd())
        self._last_problem = None
        self.window_log_message(
            types.LogMessageParams(types.MessageType.Info, f"ingle: {running.name} is ready in {self.backend.where}.")
        )
        return api

    def _progress_supported(self) -> bool:
        window = self.client_capabilities.window
        return bool(window and window.work_done_progress)

    def _status(self, message: str) -> None:
        self.tell(f"ingle: {message}")

    # --- documents ------------------------------------------------------------------

    def cursor_at(self, uri: str, position: types.Position) -> Cursor | None:
        """The cursor in an open document, or None where there is nothing to complete: completion is off for its
        language, the document is too long to be code, or the position is past its end or on a line too long to be
        code."""
        document = opened_document(self.workspace, uri)
        if document is None:
            log.warning("no completion in %s: the editor has not opened it", uri)
            return None
        if not self.options.enabled_for(document.language_id or ""):
            return None
        lines = text_lines(document)
        if len(lines) > MAX_DOCUMENT_LINES or position.line >= len(lines) or len(lines[position.line]) > MAX_LINE_CHARS:
            return None
        character = column_of(lines[position.line], position.character, self.workspace.position_codec)
        return Cursor(filename=self.filename(uri), lines=prompt_lines(lines), line=position.line, character=character)

    def document_lines(self, uri: str) -> Sequence[str]:
        """An open document's lines as the model gets them (see `prompt_lines`); none if it is not open."""
        document = opened_document(self.workspace, uri)
        return prompt_lines(text_lines(document)) if document else []

    @property
    def folders(self) -> WorkspaceFolders:
        """The workspace's folders, as the editor last said."""
        return WorkspaceFolders.of(self.workspace)

    def filename(self, uri: str) -> str:
        """A document's name in the workspace (see workspace_folders.py), as the model sees it. A file outside the
        workspace folders keeps its whole path: by its bare name it would stand for the workspace's file of that
        name (in the context ring, the cache, the snippets). Without a folder, the bare name."""
        path = without_surrogates(to_fs_path(uri) or uri)
        folders = self.folders
        if folders:
            inside = folders.name_of(path)
            if inside is not None:
                return inside
            if Path(path).is_absolute():
                return str(Path(path))
        return Path(path).name

    def index_path(self, uri: str) -> str | None:
        """A document's name in the repository index: its name in the workspace; None outside the workspace
        folders, where it would only shadow (or, deleted, remove) the workspace's modules. Without a folder, the
        open documents are the whole workspace, by their bare names."""
        folders = self.folders
        return folders.name_of(without_surrogates(to_fs_path(uri) or uri)) if folders else self.filename(uri)

    def take_chunk(self, uri: str, around: int) -> None:
        """Put the text around a line of a document into the context ring."""
        self.ring.pick(self.filename(uri), self.document_lines(uri), around)

    def take_edited_chunks(self, except_uri: str) -> None:
        """Move the recent edits of other documents into the ring and the index (deferred until needed)."""
        for uri in [uri for uri in self.edited_lines if uri != except_uri]:
            self.take_chunk(uri, self.edited_lines.pop(uri))
            self.index_document(uri)

    def scan_workspace(self) -> None:
        """Index the files of every workspace folder in a thread, once (`folders_changed` starts over); the
        documents' repository context follows once it is done."""
        folders = self.folders
        if folders and self._scan is None:
            self._scan = asyncio.create_task(self._scan_in_thread(self.index, folders))
            self._scan.add_done_callback(self._scanned)

    def folders_changed(self) -> None:
        """Index the workspace again from the start: added folders are indexed, removed ones forgotten. Not file
        by file: a file's name depends on how many folders there are (see workspace_folders.py)."""
        if self._scan is not None:
            self._scan.cancel()
            self._scan = None
        self.index = RepositoryIndex()
        for uri in list(self.workspace.text_documents):
            self.index_document(uri)
        # Similar code was chosen from the old index; each document's repository context is taken again once the
        # scan is done (see _scanned), and until then keeps its prompt head.
        self.anchors.clear()
        self.scan_workspace()

    async def _scan_in_thread(self, index: RepositoryIndex, folders: WorkspaceFolders) -> int:
        """The scan, in a daemon thread of its own rather than the default executor: asyncio.run waits for that
        executor's threads before the process exits, so a scan still running (a huge tree, a hung network mount)
        would keep the server alive after `exit`. Cancelled, it tells the scan to stop."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[int] = loop.create_future()
        stop = threading.Event()

        def settle(outcome: int | Exception) -> None:
            if done.done():
                return
            if isinstance(outcome, Exception):
                done.set_exception(outcome)
            else:
                done.set_result(outcome)

        def name(path: Path) -> str | None:
            return folders.name_of(str(path))

        def scan() -> None:
            try:
                outcome: int | Exception = sum(index.scan(folder.path, stop, name) for folder in folders.folders)
            except Exception as error:  # said in the log by _scanned, not as a thread's traceback on stderr
                outcome = error
            try:
                loop.call_soon_threadsafe(settle, outcome)
            except RuntimeError:
                pass  # the loop is closed: the server is exiting and nobody waits for the count

        threading.Thread(target=scan, name="ingle-workspace-scan", daemon=True).start()
        try:
            return await done
        finally:
            stop.set()

    def _scanned(self, task: asyncio.Task[int]) -> None:
        if task.cancelled() or task is not self._scan:
            return  # the server is exiting, or the folders changed and a new scan is under way
        if task.exception() is not None:
            log.warning("indexing the workspace failed: %s", task.exception())
            return
        log.info("indexed %d files of the workspace", task.result())
        # Documents opened before the index was there got none of it: take it in, and warm their heads again.
        for uri in list(self.repository):
            self.opened(uri)

    def index_document(self, uri: str) -> None:
        """Index an open document's current text (it may differ from the file on disk)."""
        document = opened_document(self.workspace, uri)
        path = self.index_path(uri)
        if document is not None and path is not None and len(document.source) <= MAX_FILE_BYTES:
            self.index.update(path, without_surrogates(document.source))

    def repository_for(self, uri: str) -> list[ContextChunk]:
        """The document's repository context, computed once and kept until it is saved or opened again
        (typing an import must not change the prompt head on every keystroke)."""
        chunks = self.repository.get(uri)
        if chunks is None:
            options = self.options
            lines = self.document_lines(uri)
            chunks = file_context(
                self.index, self.filename(uri), lines, options.repository_tokens, options.file_imports
            )
            self.repository[uri] = chunks
        return chunks

    def similar_code(self, cursor: Cursor) -> list[ContextChunk]:
        """Code elsewhere in the workspace like the lines above the cursor, within the settings' budget."""
        return self.index.snippets.similar(cursor.filename, cursor.lines, cursor.line, self.options.snippet_tokens)

    async def watch_files(self) -> None:
        """Ask the editor to report changes to the workspace's source files (those the index reads), where it can."""
        workspace = self.client_capabilities.workspace
        watching = workspace.did_change_watched_files if workspace else None
        if not (watching and watching.dynamic_registration and self.folders):
            return
        extensions = ",".join(suffix.removeprefix(".") for suffix in SUFFIXES)
        watchers = [types.FileSystemWatcher(glob_pattern=f"**/*.{{{extensions}}}")]
        registration = types.Registration(
            id="ingle-watch-sources",
            method=types.WORKSPACE_DID_CHANGE_WATCHED_FILES,
            register_options=types.DidChangeWatchedFilesRegistrationOptions(watchers=watchers),
        )
        await self.client_register_capability_async(types.RegistrationParams(registrations=[registration]))

    async def file_changed(self, uri: str, deleted: bool) -> None:
        """Index a file changed on disk again (unless the editor has it open: its text is newer), or forget it.

        Only files the index reads, inside the workspace folders: an event can name any path (a FIFO, /dev/stdin),
        and a file outside would stand for the workspace's own file of that name."""
        found = self.folders.locate(without_surrogates(to_fs_path(uri) or uri))
        if found is None or not self.index.indexes(found[0]):
            log.info("ignoring a change to %s: not a source file the workspace index reads", uri)
            return
        path, full = found
        if deleted:
            self.index.remove(path)
            self.ring.forget(path)
            return
        if opened_document(self.workspace, uri) is not None:
            return
        source = await asyncio.to_thread(read_source, full)
        if source is None:
            self.index.remove(path)
        else:
            self.index.update(path, source)

    def opened(self, uri: str) -> None:
        """A document opened: index it, and evaluate its prompt head before the first keystroke."""
        self.index_document(uri)
        self.repository.pop(uri, None)
        if self.options.warm_on_open:
            previous = self.warming.pop(uri, None)
            if previous is not None:
                previous.cancel()
            task = self.warming[uri] = asyncio.create_task(self._warm_head(uri))
            task.add_done_callback(lambda done: done.cancelled() or done.exception())

    async def _warm_head(self, uri: str) -> None:
        """Evaluate the chunks every prompt in this document starts with (one token is generated and dropped)."""
        api = await self.engine()
        filename = self.filename(uri)
        head = [*self.repository_for(uri), *self.ring.chunks_for(filename)]
        if not head:
            return
        request = GenerationRequest(
            model=self.model,
            prompt="",
            suffix="",
            extra_context=head,
            filename=filename,
            options=SamplingOptions(temperature=0.0, top_k=1, max_tokens=1),
        )
        async with aclosing(api.generate(request)) as stream:
            async for _ in stream:
                pass

    async def until_warm(self, uri: str) -> None:
        """Wait for the document's head to be evaluated, if that is under way: the completion needs the same."""
        task = self.warming.pop(uri, None)
        if task is not None and not task.done():
            await asyncio.wait([task])

    def forget(self, uri: str) -> None:
        """Drop a closed document's state and cancel its request."""
        task = self.in_flight.pop(uri, None)
        if task is not None:
            task.cancel()
        generation = self.finishing.pop(uri, None)
        if generation is not None:
            generation.cancel()
        self.anchors.pop(uri, None)
        self.edited_lines.pop(uri, None)
        self.repository.pop(uri, None)
        warming = self.warming.pop(uri, None)
        if warming is not None:
            warming.cancel()

    async def stop_finishing(self, uri: str) -> None:
        """Stop generating the rest of a document's last suggestion: the model is needed for newer text.

        Waiting until the engine has freed that sequence matters for speed: the
        next request then lands on the sequence that holds most of its prompt.
        """
        generation = self.finishing.pop(uri, None)
        if generation is not None:
            generation.cancel()
            await asyncio.wait([generation.task])

    # --- completion -----------------------------------------------------------------

    async def complete(self, uri: str, position: types.Position) -> Suggestion | None:
        """The suggestion at a position; a newer request for the same document supersedes this one."""
        previous = self.in_flight.pop(uri, None)
        if previous is not None:
            previous.cancel()
        task = asyncio.create_task(self._suggest(uri, position))
        self.in_flight[uri] = task
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # $/cancelRequest: pygls answers RequestCancelled
            return None  # superseded by a newer request: nothing to show for this one
        except ContextOverflow as error:
            # The text around the cursor is too much for the model's context: nothing to suggest here.
            log.warning("no completion in %s: %s", uri, error.message)
            return None
        except IngleError as error:
            self.problem(error.message)
            raise jsonrpc_error(error) from error
        finally:
            if self.in_flight.get(uri) is task:
                del self.in_flight[uri]

    async def _suggest(self, uri: str, position: types.Position) -> Suggestion | None:
        started = time.perf_counter()
        cursor = self.cursor_at(uri, position)
        if cursor is None:
            return None
        key = CacheKey.of(cursor, self.model, suggestion_window(self.options))
        cached = self.cache.get(key)
        if cached is not None:
            return Suggestion(cached, cursor, True, time.perf_counter() - started)
        if self.options.debounce_ms:
            await asyncio.sleep(self.options.debounce_ms / 1000)  # a newer keystroke cancels us meanwhile
        api = await self.engine()
        await self.stop_finishing(uri)
        await self.until_warm(uri)
        self.take_edited_chunks(except_uri=uri)
        anchors = self.anchors.setdefault(uri, Anchors())
        ring = self.ring.chunks_for(cursor.filename)
        prompt = build_prompt(cursor, anchors, ring, self.options, self.repository_for(uri), self.similar_code)
        budget = self.options.single_line_tokens if cursor.completes_line else self.options.max_tokens
        within = self.options.answer_within_ms
        generation = SuggestionGeneration(
            api,
            prompt.request(self.model, budget),
            cursor,
            self.options.max_lines,
            lambda text: self.cache.put(key, text),
            answer_within=None if within is None else within / 1000,
        )
        try:
            text = await generation.first_line
        except asyncio.CancelledError:
            generation.cancel()
            raise
        if not generation.task.done():
            self.finishing[uri] = generation
        self._last_problem = None
        seconds = time.perf_counter() - started
        evaluated = generation.evaluated_tokens
        log.info("suggestion in %.0f ms (%d prompt tokens evaluated): %r", seconds * 1000, evaluated, text)
        return Suggestion(text, cursor, False, seconds, evaluated)


def completion_items(suggestion: Suggestion, codec: PositionCodec) -> list[types.CompletionItem]:
    """Classic completion: one item that rewrites the word before the cursor as itself plus the suggestion.

    Neovim's omnifunc replaces the keyword before the cursor with the item, so
    the item must start with that keyword (or typing `ret` would lose it).
    The range counts in the negotiated position units (`codec`).
    """
    if not suggestion.text:
        return []
    cursor = suggestion.cursor
    before = cursor.line_prefix
    matched = _WORD.match(before[::-1])
    word = matched.group(0)[::-1] if matched else ""
    start = client_position(cursor.line, before[: len(before) - len(word)], codec)
    text = word + suggestion.text
    return [
        types.CompletionItem(
            label=text.split("\n")[0].strip() or text.strip(),
            kind=types.CompletionItemKind.Text,
            detail="ingle",
            documentation=types.MarkupContent(types.MarkupKind.PlainText, text),
            filter_text=text,
            sort_text="0",
            preselect=True,
            insert_text_format=types.InsertTextFormat.PlainText,
            text_edit=types.TextEdit(types.Range(start, client_position(cursor.line, before, codec)), text),
            # For logs and the typing benchmark: was the model asked, and how long did the answer take.
            data={
                "fromCache": suggestion.from_cache,
                "ms": round(suggestion.seconds * 1000, 1),
                "evaluatedTokens": suggestion.evaluated_tokens,
            },
        )
    ]


def create_server(settings: Settings, choice: EngineChoice, api: EngineApi | None = None) -> IngleLanguageServer:
    """The language server with its features registered; `api`, when given, is the engine to use."""
    server = IngleLanguageServer(settings, CompletionBackend(settings, choice, api=api))

    @server.feature(types.INITIALIZE)
    def initialize(ls: IngleLanguageServer, params: types.InitializeParams) -> None:
        """Read the editor's settings from initializationOptions."""
        ls.configure(params.initialization_options)

    @server.feature(types.INITIALIZED)
    async def initialized(ls: IngleLanguageServer, params: types.InitializedParams) -> None:
        """Start connecting and loading the model and indexing the workspace now, before the first completion."""
        ls.warm_up()
        ls.scan_workspace()
        await ls.watch_files()

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def did_change_configuration(ls: IngleLanguageServer, params: types.DidChangeConfigurationParams) -> None:
        """Apply changed settings."""
        ls.configure(params.settings)

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: IngleLanguageServer, params: types.DidOpenTextDocumentParams) -> None:
        """Index the file and evaluate its prompt head. Opening leaves the context ring alone, so the other
        documents' prompt heads stay cached."""
        if opened_document(ls.workspace, params.text_document.uri) is not None:  # else refused, and logged
            ls.opened(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: IngleLanguageServer, params: types.DidChangeTextDocumentParams) -> None:
        """Remember where the document was edited; its chunk is taken when another file needs it."""
        if opened_document(ls.workspace, params.text_document.uri) is None:
            return  # the edit was ignored (and logged) too
        for change in params.content_changes:
            if isinstance(change, types.TextDocumentContentChangePartial):
                ls.edited_lines[params.text_document.uri] = change.range.start.line

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: IngleLanguageServer, params: types.DidSaveTextDocumentParams) -> None:
        """A saved file contributes the region last edited."""
        uri = params.text_document.uri
        if opened_document(ls.workspace, uri) is None:
            log.warning("ignoring the saving of %s: it is not open", uri)
            return
        ls.take_chunk(uri, ls.edited_lines.pop(uri, 0))
        ls.index_document(uri)
        ls.repository.pop(uri, None)  # a pause in typing: the time to take new definitions in

    @server.feature(types.WORKSPACE_DID_CHANGE_WORKSPACE_FOLDERS)
    def did_change_workspace_folders(ls: IngleLanguageServer, params: types.DidChangeWorkspaceFoldersParams) -> None:
        """Folders were added to the workspace or removed (pygls has taken the change in): index it again."""
        ls.folders_changed()

    @server.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    async def did_change_watched_files(ls: IngleLanguageServer, params: types.DidChangeWatchedFilesParams) -> None:
        """Files changed on disk (a checkout, another tool): index them again, forget deleted ones."""
        for change in params.changes:
            if readable_uri(change.uri):
                await ls.file_changed(change.uri, deleted=change.type == types.FileChangeType.Deleted)
            else:
                log.warning("ignoring a change to %r: it is not a URI", change.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: IngleLanguageServer, params: types.DidCloseTextDocumentParams) -> None:
        """Forget a closed document's state."""
        ls.forget(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(resolve_provider=False))
    async def completion(ls: IngleLanguageServer, params: types.CompletionParams) -> types.CompletionList:
        """Classic completion (Neovim 0.7-0.11): the suggestion as one item."""
        suggestion = await ls.complete(params.text_document.uri, params.position)
        items = completion_items(suggestion, ls.workspace.position_codec) if suggestion else []
        # Incomplete: the editor asks again as the user types, and the cache answers.
        return types.CompletionList(is_incomplete=True, items=items)

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(
        ls: IngleLanguageServer, params: types.InlineCompletionParams
    ) -> types.InlineCompletionList:
        """Inline completion (LSP 3.18, VS Code's ghost text): the suggestion inserted at the cursor."""
        suggestion = await ls.complete(params.text_document.uri, params.position)
        if not suggestion or not suggestion.text:
            return types.InlineCompletionList(items=[])
        cursor = suggestion.cursor
        at = client_position(cursor.line, cursor.line_prefix, ls.workspace.position_codec)
        here = types.Range(at, at)
        return types.InlineCompletionList(items=[types.InlineCompletionItem(insert_text=suggestion.text, range=here)])

    @server.feature(types.SHUTDOWN)
    async def shutdown(ls: IngleLanguageServer, params: None) -> None:
        """Cancel what is in flight and close the engine (an in-process one unloads its model)."""
        for uri in {*ls.in_flight, *ls.finishing, *ls.warming}:
            ls.forget(uri)
        await ls.backend.close()

    return server
