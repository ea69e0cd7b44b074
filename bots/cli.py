"""`ingle bot telegram|slack|mattermost`: run one chat bot as its own process.

The bot answers through the running daemon (`ingle serve`), so a bot unit and
the daemon share one copy of the model; `--embedded` runs the model in this
process instead. The platforms come from the registry in
`ingle.bots.platforms`; their settings from `[bots.<platform>]` and
`INGLE_<PLATFORM>_*` — never from flags, which `ps` would show.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer

from ingle.adapters.cli.context import EmbeddedOption, cli_context
from ingle.adapters.cli.engine_access import EngineChoice, connect_daemon
from ingle.bots.platforms import PLATFORMS
from ingle.core.errors import InvalidRequest
from ingle.core.settings import Settings

# Rich keeps single newlines in help text, so each paragraph is one long line.
BOT_HELP = (
    "Run one chat bot (" + ", ".join(PLATFORMS) + ") until SIGTERM or Ctrl-C.\n\n"
    "It answers through the running ingle daemon (start `ingle serve` first), or runs the model "
    "in this process with --embedded. Its token, allowlists, time zone, model and instructions come "
    "from the \\[bots.PLATFORM] section of ingle.toml or INGLE_PLATFORM_* variables (e.g. "
    "INGLE_TELEGRAM_TOKEN); secrets are never taken from the command line. By default a bot answers "
    "nobody: list allowed_users or allowed_channels.\n\n"
    "Examples:\n"
    "  ingle bot telegram\n"
    "  INGLE_TELEGRAM_TOKEN=123:abc ingle bot telegram --embedded\n"
    "  ingle --host http://gpu-box:11435 bot slack\n"
)


def register(app: typer.Typer) -> None:
    """Add `bot` to the app."""
    app.command("bot", help=BOT_HELP)(bot)


def bot(
    ctx: typer.Context,
    platform: Annotated[str, typer.Argument(metavar="PLATFORM", help="One of: " + ", ".join(PLATFORMS) + ".")],
    embedded: EmbeddedOption = False,
) -> None:
    """Run one chat bot until stopped."""
    context = cli_context(ctx)
    choice = context.engine_choice_with(embedded)
    name = platform.lower()
    if name not in PLATFORMS:
        raise InvalidRequest(f"There is no {platform!r} bot; choose one of {', '.join(PLATFORMS)}.")
    from ingle.bots.settings import bot_settings  # pydantic models of every platform: loaded by this command only

    bot_settings(context.settings, name)  # unknown platform or bad section: one sentence, before connecting
    asyncio.run(run_bot(context.settings, name, choice))


async def run_bot(settings: Settings, platform: str, choice: EngineChoice) -> None:
    """Run `platform`'s bot against the daemon, or in-process; SIGTERM stops it cleanly."""
    runner = PLATFORMS[platform]
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        if choice.embedded:
            from ingle.core.engine import Engine  # llama.cpp: loaded only by a bot that runs the model itself

            async with Engine(settings) as engine:
                await runner(settings, engine)
            return
        client = await connect_daemon(settings, choice)
        if client is None:
            from ingle.adapters.client import DaemonUnavailable

            raise DaemonUnavailable(
                "No ingle daemon is running for this bot to use; start `ingle serve` or pass --embedded."
            )
        try:
            await runner(settings, client)
        finally:
            await client.close()
    except asyncio.CancelledError:
        return
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
