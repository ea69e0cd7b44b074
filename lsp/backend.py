"""Where completions come from: the one daemon on the machine, or an engine in this process.

DESIGN.md: `ingle lsp` talks to the daemon; with none running it starts one
(`ingle serve`, detached, so the next editor finds it and three editors mean
one copy of the model), and only if that is impossible runs the engine
in-process. `--embedded` goes straight to the in-process engine; `--host URL`
names a daemon that must answer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

from ingle.adapters.cli.engine_access import EngineChoice, connect_daemon, requires_daemon
from ingle.adapters.client import IngleClient
from ingle.adapters.engine_api import EngineApi, LocalEngine
from ingle.core.engine import Engine
from ingle.core.settings import Settings

log = logging.getLogger("ingle.lsp")

# A freshly started `ingle serve` answers once Python has imported it and bound its port.
DAEMON_START_SECONDS = 20.0
DAEMON_POLL_SECONDS = 0.2

Status = Callable[[str], Awaitable[None] | None]


class CompletionBackend:
    """Opens the engine once, on first use, and closes it when the server stops."""

    def __init__(
        self, settings: Settings, choice: EngineChoice, start_daemon: bool = True, api: EngineApi | None = None
    ) -> None:
        self.settings = settings
        self.choice = choice
        self.start_daemon = start_daemon
        self.where = "not connected" if api is None else "an engine given by the caller"
        """Where the engine is, for status messages."""
        self._resources = AsyncExitStack()
        self._api = api
        """Open already when given (an engine someone else owns and closes)."""
        self._lock = asyncio.Lock()

    async def api(self, status: Status) -> EngineApi:
        """The engine, connecting to (or starting) the daemon or opening the in-process engine once."""
        async with self._lock:
            if self._api is None:
                self._api = await self._open(status)
            return self._api

    async def close(self) -> None:
        """Close the client or the in-process engine (unloading its models)."""
        self._api = None
        await self._resources.aclose()

    async def _open(self, status: Status) -> EngineApi:
        if not self.choice.embedded:
            client = await connect_daemon(self.settings, self.choice)
            if client is None and self.start_daemon and not requires_daemon(self.settings, self.choice):
                client = await self._start_daemon(status)
            if client is not None:
                self._resources.push_async_callback(client.close)
                self.where = f"the ingle daemon at {client.daemon_url}"
                return client
        engine = await self._resources.enter_async_context(Engine(self.settings))
        self.where = "this process (embedded)"
        return LocalEngine(engine)

    async def _start_daemon(self, status: Status) -> IngleClient | None:
        """Start `ingle serve` in its own session and wait (bounded) until it answers; None if it cannot."""
        command = _ingle_command()
        if command is None:
            return None
        await _call(status, "No ingle daemon is running: starting `ingle serve`.")
        environment = {**os.environ, "INGLE_HOME": str(self.settings.home)}
        log_file = self.settings.home / "serve.log"
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            with open(log_file, "ab") as output:  # noqa: ASYNC230 - an append handle for the child, nothing read
                # Its own session: the daemon outlives this editor and serves the next one.
                process = subprocess.Popen(  # noqa: ASYNC220 - only forks; readiness is polled afterwards
                    [*command, "serve"],
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=output,
                    env=environment,
                    start_new_session=True,
                )
        except OSError as error:
            log.warning("cannot start ingle serve: %s", error)
            return None
        deadline = time.monotonic() + DAEMON_START_SECONDS
        while time.monotonic() < deadline:
            client = await connect_daemon(self.settings, self.choice)
            if client is not None:
                return client
            if process.poll() is not None:
                # It exited: most likely another editor's daemon won the port a moment ago; one last look.
                return await connect_daemon(self.settings, self.choice)
            await asyncio.sleep(DAEMON_POLL_SECONDS)
        log.warning("ingle serve did not answer within %.0f s (see %s)", DAEMON_START_SECONDS, log_file)
        return None


def _ingle_command() -> list[str] | None:
    """How to run this installation's `ingle`: the console script beside this Python, else on PATH."""
    beside = Path(sys.executable).with_name("ingle")
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    found = shutil.which("ingle")
    return [found] if found else None


async def _call(status: Status, message: str) -> None:
    result = status(message)
    if result is not None:
        await result
