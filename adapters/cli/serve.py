"""`ingle serve`: run the daemon, the HTTP API over TCP and a unix socket, until SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Annotated

import typer

from ingle.adapters.logging_setup import configure_journal_logging, journal_attached
from ingle.core.errors import InvalidRequest
from ingle.core.settings import load_settings

from .context import cli_context

# Rich keeps single newlines in help text, so each paragraph is one long line.
SERVE_HELP = (
    "Keep models loaded and serve the HTTP API (Ollama-, OpenAI- and llama-server-compatible).\n\n"
    "It listens on 127.0.0.1:11435 and on the unix socket <home>/ingle.sock unless told otherwise "
    "(--host, --port, --socket; INGLE_HOST, INGLE_PORT, INGLE_SOCKET_PATH; or ingle.toml). "
    "While it runs, `ingle run`, `pull`, `list`, `ps` and the others go through it. "
    "Listening beyond loopback needs an API key (api_key in ingle.toml, or INGLE_API_KEY). "
    "It prints each URL on stdout once it accepts connections, and stops cleanly on SIGTERM or Ctrl-C.\n\n"
    "Examples:\n"
    "  ingle serve\n"
    "  ingle serve --port 8080 --socket ''\n"
    "  INGLE_API_KEY=secret ingle serve --host 0.0.0.0\n"
)

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def register(app: typer.Typer) -> None:
    """Add `serve` to the app."""
    app.command("serve", help=SERVE_HELP)(serve_api)


def serve_api(
    ctx: typer.Context,
    host: Annotated[
        str | None,
        typer.Option(help="Address to listen on, e.g. 127.0.0.1 or 0.0.0.0 (which needs an API key)."),
    ] = None,
    port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="TCP port, e.g. 11435; 0 picks a free one.")
    ] = None,
    socket: Annotated[
        str | None,
        typer.Option(
            "--socket", metavar="PATH", help="Unix socket to listen on too, e.g. /run/ingle/ingle.sock; '' for none."
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at debug level.")] = False,
) -> None:
    """Keep models loaded and serve the HTTP API."""
    context = cli_context(ctx)
    overrides = {"host": host, "port": port, "socket_path": socket}
    settings = context.settings.model_copy(update={key: value for key, value in overrides.items() if value is not None})
    if "://" in settings.host or "/" in settings.host:
        raise InvalidRequest(
            f"'{settings.host}' is not an address to listen on: give one like 127.0.0.1 or 0.0.0.0, without a scheme."
        )
    configure_logging(debug=verbose or context.verbose)
    from ingle.adapters.http.server import serve  # the whole daemon: only this command loads it

    # Deploy (issue 6): SIGHUP re-reads the config; the command-line overrides keep winning.
    asyncio.run(serve(settings, on_ready=announce, reload=lambda: load_settings(home=settings.home, **overrides)))


def announce(urls: list[str]) -> None:
    """Print where the API listens, one URL a line on stdout, once it accepts connections."""
    for url in urls:
        typer.echo(f"Listening on {url}")
    sys.stdout.flush()


def configure_logging(debug: bool) -> None:
    """Timestamped plain lines on stderr, readable in a terminal and in journald; INFO, or DEBUG with --verbose."""
    if journal_attached(sys.stderr):
        # Deploy (issue 6): under systemd, greppable key=value lines with syslog priorities and no
        # timestamp (journald adds it); see adapters/logging_setup.py.
        configure_journal_logging(2 if debug else 1)
        return
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT, stream=sys.stderr, force=True)
    logging.getLogger("ingle").setLevel(logging.DEBUG if debug else logging.INFO)
