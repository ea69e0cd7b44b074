"""`ingle lsp`: the language server on stdin/stdout, started by the editor."""

from __future__ import annotations

import logging
import sys

import typer

from ingle.adapters.cli.context import EmbeddedOption, cli_context

# Rich keeps single newlines in help text, so each paragraph is one long line.
LSP_HELP = (
    "Serve code completion to an editor over the Language Server Protocol on stdin/stdout.\n\n"
    "The editor starts this command. It completes through the running ingle daemon; with none running "
    "it starts `ingle serve` so that every editor shares one copy of the model, and if that is not "
    "possible it runs the model in this process (as --embedded does). Settings (model, maxLines, "
    "debounceMs, prefixLines, suffixLines, contextChunks, enabledLanguages, ...) come from the editor's "
    "initializationOptions or workspace/didChangeConfiguration.\n\n"
    "Examples (what an editor runs):\n"
    "  ingle lsp\n"
    "  ingle lsp --embedded\n"
    "  ingle --host http://gpu-box:11435 lsp\n"
)


def register(app: typer.Typer) -> None:
    """Add `lsp` to the app."""
    app.command("lsp", help=LSP_HELP)(language_server)


def language_server(ctx: typer.Context, embedded: EmbeddedOption = False) -> None:
    """Serve code completion over LSP on stdin/stdout."""
    context = cli_context(ctx)
    choice = context.engine_choice_with(embedded)
    # stdout carries the protocol: every log line goes to stderr, which editors show in their LSP log.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, force=True)
    logging.getLogger("ingle").setLevel(logging.INFO if context.verbose else logging.WARNING)
    from ingle.lsp.server import create_server  # pygls and the engine client: loaded by this command only

    create_server(context.settings, choice).start_io()
