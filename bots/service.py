"""The configured bots as a service of `ingle serve` (the `ingle.services` entry point).

Each enabled `[bots.<platform>]` section runs on the daemon's own event loop
against its backend. A bot that fails (its platform unreachable, a 409 from
Telegram right after a restart, a wrong token) is reported in the log in one
sentence and on the daemon's `ServiceBoard` (/health, /metrics), and started
again after a pause that doubles with each failure up to a minute, with
jitter so that bots failing together do not retry in step. It never takes the
daemon, or the other bots, down with it. Only a section that does not
validate stops the bot for good: retrying cannot fix it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass

from ingle.adapters.services import ServiceBoard, ServiceState
from ingle.core.backend import GenerationBackend
from ingle.core.errors import IngleError
from ingle.core.settings import Settings

from .platforms import PLATFORMS, PlatformRunner
from .settings import bot_settings

log = logging.getLogger("ingle.bots")


@dataclass(frozen=True)
class RetryPolicy:
    """How long a failed bot waits before it starts again."""

    first: float = 1.0
    """Seconds before the first retry; each failure in a row doubles it."""
    most: float = 60.0
    """The longest wait, and how long a bot must have run for its next failure to count as a first one."""

    def wait(self, failures_in_row: int) -> float:
        """The pause after the `failures_in_row`-th failure in a row: doubled each time, capped, jittered."""
        ceiling = min(self.most, self.first * 2 ** min(failures_in_row - 1, 32))
        return random.uniform(ceiling / 2, ceiling)


async def run_configured_bots(
    settings: Settings, backend: GenerationBackend, board: ServiceBoard, retry: RetryPolicy | None = None
) -> None:
    """Run every enabled `[bots.*]` section until cancelled, reporting each as `bots.<platform>` on `board`."""
    runs = []
    for name, section in settings.bots.items():
        if not section.get("enabled", True):
            continue
        runner = PLATFORMS.get(name)
        if runner is None:
            log.error("[bots.%s] names no known platform; choose one of %s.", name, ", ".join(PLATFORMS))
            continue
        runs.append(_supervised(name, runner, settings, backend, board, retry or RetryPolicy()))
    if runs:
        log.info("starting bots: %s", ", ".join(name for name in settings.bots if name in PLATFORMS))
    await asyncio.gather(*runs)


async def _supervised(
    name: str,
    runner: PlatformRunner,
    settings: Settings,
    backend: GenerationBackend,
    board: ServiceBoard,
    retry: RetryPolicy,
) -> None:
    """Run one bot until cancelled, starting it again after each failure."""
    service = f"bots.{name}"
    try:
        bot_settings(settings, name)
    except IngleError as error:
        log.error("the %s bot cannot start: %s", name, error.message)
        board.report(service, ServiceState.STOPPED, error.message)
        return
    running_since: list[float] = []
    """When the bot now starting said it was connected (empty until then)."""

    def ready() -> None:
        running_since[:] = [time.monotonic()]
        board.report(service, ServiceState.RUNNING)

    failures_in_row = 0
    while True:
        running_since.clear()
        board.report(service, ServiceState.STARTING)
        failure: Exception | None = None
        try:
            await runner(settings, backend, ready)
            reason = "it stopped by itself"  # a bot serves until cancelled: returning is a failure too
        except IngleError as error:
            reason = error.message.rstrip(".")
        except Exception as error:  # one broken bot must not stop the daemon
            failure, reason = error, f"{type(error).__name__}: {error}".rstrip(": ")
        if running_since and time.monotonic() - running_since[0] >= retry.most:
            failures_in_row = 0  # it ran a good while: this failure starts a new series
        failures_in_row += 1
        wait = retry.wait(failures_in_row)
        sentence = f"{reason}; starting it again in {wait:.0f} s."
        # The traceback of an unexpected error once per series: the log has the details without repeating them.
        log.error("the %s bot stopped: %s", name, sentence, exc_info=failure if failures_in_row == 1 else None)
        board.report(service, ServiceState.RETRYING, sentence)
        await asyncio.sleep(wait)
