"""The configured bots as a service of `ingle serve` (the `ingle.services` entry point).

Each enabled `[bots.<platform>]` section runs on the daemon's own event loop
against its backend. A bot that fails (a wrong token, a platform that is
down) is reported in the log in one sentence and does not take the daemon,
or the other bots, down with it.
"""

from __future__ import annotations

import asyncio
import logging

from ingle.core.backend import GenerationBackend
from ingle.core.errors import IngleError
from ingle.core.settings import Settings

from .platforms import PLATFORMS, PlatformRunner

log = logging.getLogger("ingle.bots")


async def run_configured_bots(settings: Settings, backend: GenerationBackend) -> None:
    """Run every enabled `[bots.*]` section until cancelled."""
    runs = []
    for name, section in settings.bots.items():
        if not section.get("enabled", True):
            continue
        runner = PLATFORMS.get(name)
        if runner is None:
            log.error("[bots.%s] names no known platform; choose one of %s.", name, ", ".join(PLATFORMS))
            continue
        runs.append(_supervised(name, runner, settings, backend))
    if runs:
        log.info("starting bots: %s", ", ".join(name for name in settings.bots if name in PLATFORMS))
    await asyncio.gather(*runs)


async def _supervised(name: str, runner: PlatformRunner, settings: Settings, backend: GenerationBackend) -> None:
    try:
        await runner(settings, backend)
    except IngleError as error:
        log.error("the %s bot stopped: %s", name, error.message)
    except Exception:  # one broken bot must not stop the daemon; the log has the details
        log.exception("the %s bot stopped unexpectedly", name)
