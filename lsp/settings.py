"""What an editor can configure, through `initializationOptions` and `workspace/didChangeConfiguration`.

Editors send camelCase keys (`maxLines`); snake_case is accepted too. The
same object arrives bare or under an `ingle` key (VS Code's section name).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class CompletionSettings(BaseModel):
    """The language server's settings, one docstring per field."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)

    model: str | None = None
    """Model that completes; None uses the daemon's default model."""

    max_lines: int = Field(default=4, ge=1, le=64)
    """Lines a suggestion may span at most."""

    max_tokens: int = Field(default=48, ge=1, le=512)
    """Tokens generated for one suggestion at most."""

    single_line_tokens: int = Field(default=24, ge=1, le=512)
    """Tokens generated at most when the cursor is inside a line, where only that line is completed."""

    answer_within_ms: int | None = Field(default=800, ge=0, le=60_000)
    """After this long, show the whole words of the first line written so far instead of waiting for its end
    (the rest follows into the cache). Matters after a jump, when the prompt is mostly new; None waits."""

    debounce_ms: int = Field(default=0, ge=0, le=2000)
    """Wait this long after a request before asking the model; a newer request in that time replaces it."""

    prefix_lines: int = Field(default=12, ge=0, le=2000)
    """Lines before the cursor in the FIM prefix (at least; see anchor_lines). All of them are evaluated
    again when the cursor jumps elsewhere, so more lines make that first suggestion slower."""

    suffix_lines: int = Field(default=2, ge=0, le=200)
    """Lines after the cursor in the FIM suffix. Short on purpose: the suffix is re-evaluated on every keystroke."""

    plain_at_line_start: bool = True
    """On a line holding only whitespace, continue the file from the cursor (no fill-in-the-middle)."""

    below_lines: int = Field(default=4, ge=0, le=2000)
    """Lines further below the cursor, given as a context chunk ahead of the prefix, where they stay cached.
    (8 until the similar code of snippet_tokens took their place: the two cost the same after a jump.)"""

    anchor_lines: int = Field(default=16, ge=1, le=512)
    """The prefix start and the below chunk move in steps of this many lines, so the prompt head stays stable."""

    context_chunks: int = Field(default=4, ge=0, le=64)
    """Chunks from other open or recently edited files kept as extra context (a ring buffer)."""

    chunk_lines: int = Field(default=32, ge=4, le=512)
    """Lines per extra context chunk."""

    repository_tokens: int = Field(default=256, ge=0, le=8192)
    """Tokens of repository context at most: definitions, in other files of the workspace, of the names the
    file imports and uses (most used first). Evaluated once per file, when it opens; 0 turns it off."""

    snippet_tokens: int = Field(default=100, ge=0, le=2048)
    """Tokens at most of code elsewhere in the workspace that reads like the lines above the cursor, with the
    lines that followed it there (see snippets.py). Chosen when the cursor arrives somewhere new, and kept
    while it stays; 0 turns it off."""

    file_imports: bool = True
    """Give the file's import statements as context ahead of the lines around the cursor (fixed, like the
    repository context, when the file opens or is saved)."""

    warm_on_open: bool = True
    """Evaluate a file's prompt head (context chunks and repository context) when it opens, before the first
    keystroke, so the first suggestion there only evaluates the lines around the cursor."""

    enabled_languages: list[str] = Field(default_factory=lambda: ["*"])
    """Language ids to complete in (`python`, `rust`, ...); `*` means all."""

    disabled_languages: list[str] = Field(default_factory=list)
    """Language ids never completed in, even when `*` is enabled."""

    cache_size: int = Field(default=256, ge=0, le=100_000)
    """Suggestions kept for serving again while the user types them."""

    start_daemon: bool = True
    """With no daemon running, start `ingle serve` (one model copy for every editor); in-process only if that fails."""

    def enabled_for(self, language_id: str) -> bool:
        """Whether completion is on for this language."""
        if language_id in self.disabled_languages:
            return False
        return "*" in self.enabled_languages or language_id in self.enabled_languages

    def updated(self, options: Any) -> CompletionSettings:
        """These settings with the editor's options applied (bare or under an `ingle` key)."""
        if not isinstance(options, dict):
            return self
        values = options.get("ingle", options)
        if not isinstance(values, dict):
            return self
        # Keys the VS Code extension uses for the connection are the extension's business, not ours.
        values = {to_camel(key): value for key, value in values.items() if to_camel(key) not in _CLIENT_ONLY_KEYS}
        return self.model_validate({**self.model_dump(by_alias=True), **values})


# Settings the editor side reads (to start `ingle lsp` with flags) that the server ignores.
_CLIENT_ONLY_KEYS = frozenset({"daemonUrl", "apiKey", "command", "embedded", "trace"})
