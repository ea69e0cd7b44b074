"""Asking the model for one suggestion: the first line is shown as soon as it is complete, the rest follows.

A suggestion of several lines takes the model about 20 ms per token, so
waiting for all of it would double the time to ghost text. Instead the first
non-blank line is handed over the moment it is complete, and the generation
goes on in the background; when it ends, the whole suggestion replaces what
was shown in the cache, so it is there once the user types on.

After a jump the prompt is mostly new and evaluating it takes most of a
second; then, once `answer_within` has passed, the words of the first line
written so far are shown rather than waiting for its end (llama.vim's
`t_max_predict_ms` does the same), and the rest follows the same way.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from contextlib import aclosing

from ingle.adapters.engine_api import EngineApi
from ingle.core.generation import GenerationRequest

from .postprocess import StreamStop, clean_suggestion
from .prompt import Cursor

log = logging.getLogger("ingle.lsp")

# The word the model is in the middle of writing when time is up: shown half-written, it reads as a typo.
_PARTIAL_WORD = re.compile(r"\w+$")
_WORD_RUN = re.compile(r"\w+")


class SuggestionGeneration:
    """One generation, running in its own task; `first_line` resolves with the text to show first."""

    def __init__(
        self,
        api: EngineApi,
        request: GenerationRequest,
        cursor: Cursor,
        max_lines: int,
        store: Callable[[str], None],
        answer_within: float | None = None,
    ) -> None:
        self.cursor = cursor
        self.max_lines = max_lines
        self.store = store
        """Called with the first line, then with the whole suggestion (they go to the cache)."""
        self.evaluated_tokens = 0
        """Prompt tokens the engine decoded (the rest it reused from its cache)."""
        loop = asyncio.get_running_loop()
        self.first_line: asyncio.Future[str] = loop.create_future()
        self._deadline = loop.time() + answer_within if answer_within is not None else None
        self._shown = False
        self.task = asyncio.create_task(self._run(api, request))
        self.task.add_done_callback(self._report_late_failure)

    def cancel(self) -> None:
        """Stop generating; closing the stream frees the engine's sequence."""
        self.task.cancel()

    async def _run(self, api: EngineApi, request: GenerationRequest) -> None:
        stop = StreamStop(self.cursor, self.max_lines)
        try:
            # aclosing: leaving early (stop rule, cancellation) closes the stream, which frees the sequence.
            async with aclosing(api.generate(request)) as stream:
                async for chunk in stream:
                    if chunk.stats is not None:
                        self.evaluated_tokens = chunk.stats.prompt_tokens - chunk.stats.cached_tokens
                    if stop.feed(chunk.text) or chunk.done:
                        break
                    if not self.first_line.done():
                        self._show_early(stop)
        except BaseException as error:
            if not self.first_line.done():
                if isinstance(error, asyncio.CancelledError):
                    self.first_line.cancel()
                else:
                    self.first_line.set_exception(error)
            raise
        text = clean_suggestion(stop.text, self.cursor, self.max_lines)
        if self.first_line.done():
            self.store(text)
        else:
            self._show(text)

    def _show_early(self, stop: StreamStop) -> None:
        """Show the first line once it is complete, or its whole words so far once time is up."""
        if stop.has_first_line:
            self._show(clean_suggestion(stop.text, self.cursor, 1))
        elif self._deadline is not None and asyncio.get_running_loop().time() >= self._deadline:
            words = _PARTIAL_WORD.sub("", clean_suggestion(stop.text, self.cursor, 1))
            # A lone quote or bracket is not worth showing yet; where a whole line was asked for, neither is a
            # lone word (`def`, `return`): the user would type it faster than read it.
            needed = 1 if self.cursor.completes_line else 2
            if len(_WORD_RUN.findall(words)) >= needed:
                self._show(words)

    def _show(self, text: str) -> None:
        self.store(text)
        self._shown = True
        self.first_line.set_result(text)

    def _report_late_failure(self, task: asyncio.Task[None]) -> None:
        # A failure before the first line reached the caller through `first_line`; one after it only costs the rest.
        # Either way it is taken here, or asyncio prints "Task exception was never retrieved" on stderr.
        error = None if task.cancelled() else task.exception()
        if self._shown and error is not None:
            log.warning("finishing a suggestion failed: %s", error)
