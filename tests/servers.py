"""Real HTTP servers for tests: the app in-process on an ephemeral loopback port, or `ingle serve` as a process.

Readiness is awaited by polling (the process's "Listening on" line, then
/health), never by sleeping a fixed time.
"""

from __future__ import annotations

import asyncio
import os
import queue
import resource
import signal
import subprocess
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx
from aiohttp import web

from ingle.adapters.http.app import create_app
from ingle.core.engine import Engine
from ingle.core.settings import Settings
from tests.fakes import start_on_loopback

from .test_cli import ingle_executable


@asynccontextmanager
async def serving(settings: Settings, engine: Engine) -> AsyncIterator[str]:
    """Serve create_app(settings, engine) on 127.0.0.1 and a free port; yield its base URL."""
    runner, url = await start_on_loopback(create_app(settings, engine))
    try:
        yield url
    finally:
        await runner.cleanup()


@asynccontextmanager
async def serving_unix(settings: Settings, engine: Engine, path: Path) -> AsyncIterator[Path]:
    """Serve create_app(settings, engine) on a unix socket at PATH, as `ingle serve` does beside TCP."""
    runner = web.AppRunner(create_app(settings, engine))
    await runner.setup()
    await web.UnixSite(runner, str(path)).start()
    try:
        yield path
    finally:
        await runner.cleanup()


async def poll(condition, timeout: float, interval: float = 0.02) -> bool:
    """Await `condition()` (sync or async) until it is true or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)


async def metric_value(session: aiohttp.ClientSession, url: str, name: str, labels: str = "") -> float:
    """The value of one sample on /metrics, e.g. name='ingle_active_sequences', labels='model="x:y"'; 0 if absent."""
    async with session.get(f"{url}/metrics") as response:
        text = await response.text()
    prefix = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(prefix + " "):
            return float(line.split()[-1])
    return 0.0


@dataclass
class Daemon:
    """An `ingle serve` process: its URLs, and its output so far."""

    process: subprocess.Popen[str]
    url: str = ""
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM it and return its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()

    @property
    def log(self) -> str:
        """Everything it wrote to stderr so far."""
        return "".join(self.stderr)


def start_daemon(
    home: Path, *args: str, ready_timeout: float = 60, open_files: int | None = None, **env: str
) -> Daemon:
    """Start `ingle serve --port 0 ARGS` with INGLE_HOME=home and wait until it answers /health.

    `open_files` sets its limit on open files (soft and hard), as a unit's LimitNOFILE does.
    """
    environment = {**os.environ, "INGLE_HOME": str(home), **env}

    def limit_open_files() -> None:
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    process = subprocess.Popen(
        [ingle_executable(), "serve", "--port", "0", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        preexec_fn=limit_open_files,
    )
    daemon = Daemon(process)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump(stream, sink: list[str], forward: bool) -> None:
        for line in stream:
            sink.append(line)
            if forward:
                lines.put(line)
        if forward:
            lines.put(None)

    threading.Thread(target=pump, args=(process.stdout, daemon.stdout, True), daemon=True).start()
    threading.Thread(target=pump, args=(process.stderr, daemon.stderr, False), daemon=True).start()
    deadline = time.monotonic() + ready_timeout
    while not daemon.url:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            daemon.stop()
            raise AssertionError(f"ingle serve did not start within {ready_timeout} s: {daemon.log}") from None
        if line is None:
            raise AssertionError(f"ingle serve exited with {process.wait()}: {daemon.log}")
        if line.startswith("Listening on http"):
            daemon.url = line.split()[-1]
    while True:
        try:
            if httpx.get(f"{daemon.url}/health", timeout=1).status_code == 200:
                return daemon
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            daemon.stop()
            raise AssertionError(f"ingle serve never answered /health: {daemon.log}")
        time.sleep(0.05)
