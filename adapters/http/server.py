"""`ingle serve`: the daemon's event loop, HTTP on TCP and a unix socket."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
from collections.abc import Callable
from contextlib import AsyncExitStack
from importlib.metadata import entry_points

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ...core.backend import GenerationBackend
from ...core.engine import Engine
from ...core.errors import IngleError
from ...core.settings import Settings, load_settings
from ..binding import check_bind
from ..config_reload import reload_settings
from ..services import ServiceBoard
from ..systemd import SystemdNotifier
from ..upstreams import BackendRouter
from .app import create_app
from .keys import SERVICES

log = logging.getLogger("ingle.serve")
protocol_log = logging.getLogger("ingle.http.protocol")
"""aiohttp's connection handler logs here: requests it cannot parse, and crashes that escape the app."""
# Deploy (issue 6): seconds requests in flight get to finish after SIGTERM before they are
# cancelled; deploy/systemd/ingle.service's TimeoutStopSec=90 leaves room for this plus unloading.
SHUTDOWN_GRACE_SECONDS = 60.0


class AddressInUse(IngleError):
    """The port or socket is taken, most likely by another ingle."""


class MalformedRequests(logging.Filter):
    """Keep a request aiohttp could not parse to its one access-log line (`"UNKNOWN / HTTP/1.0" 400`).

    aiohttp answers a NUL byte in a header, a header line without a colon, an over-long line or a
    bad chunk size with a 400, and logs the parse error at ERROR with a traceback: the client's
    mistake would read as the server's failure. The reason stays available as one debug line.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Turn a parse error's record into one debug line; let every other record through unchanged."""
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, HttpProcessingError):
            return True
        record.msg, record.args = "malformed request: %s", (" ".join(error.message.split()),)
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


async def serve(
    settings: Settings,
    on_ready: Callable[[list[str]], None] | None = None,
    reload: Callable[[], Settings] | None = None,
) -> None:
    """Run the API until SIGINT/SIGTERM; `on_ready` gets the listening URLs once they accept connections.

    Under systemd (deploy/systemd/ingle.service) it also sends READY=1 once the store is read and the
    sockets are bound, WATCHDOG=1 from the loop, RELOADING=1/READY=1 around a SIGHUP reload (`reload`
    loads the fresh settings, by default the config file and INGLE_* again) and STOPPING=1 on SIGTERM.
    """
    check_bind(settings)
    if not any(isinstance(existing, MalformedRequests) for existing in protocol_log.filters):
        protocol_log.addFilter(MalformedRequests())
    # Deploy (issue 6): sd_notify; every call is a no-op outside a Type=notify unit.
    notifier = SystemdNotifier.from_environment()
    load = reload or (lambda: load_settings(home=settings.home))
    notifier.status("reading the model store")
    async with Engine(settings) as engine, AsyncExitStack() as resources:
        backend = None
        if settings.upstreams:
            backend = await resources.enter_async_context(BackendRouter.from_settings(engine, settings))
        app = create_app(settings, engine, backend)
        # handler_cancellation: a client that disconnects cancels its handler,
        # which frees its sequence in the engine within one decode step.
        # shutdown_timeout: on stop, in-flight requests and streams finish (or are cancelled after it).
        runner = web.AppRunner(
            app,
            handler_cancellation=True,
            access_log=log,
            logger=protocol_log,
            shutdown_timeout=SHUTDOWN_GRACE_SECONDS,
        )
        await runner.setup()
        watchdog: asyncio.Task[None] | None = None
        try:
            urls = await _start_sites(runner, settings)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            listening = f"listening on {', '.join(urls)}"
            loop.add_signal_handler(signal.SIGHUP, _reload, settings, load, notifier, listening)
            log.info("ingle is listening on %s", ", ".join(urls))
            if on_ready is not None:
                on_ready(urls)
            notifier.ready(listening)
            watchdog = asyncio.create_task(notifier.feed_watchdog())
            services = _start_services(settings, backend or engine, app[SERVICES])
            await stop.wait()
            log.info("shutting down")
            notifier.stopping("stopping: finishing requests in flight")
            await _stop_services(services)
        finally:
            await runner.cleanup()
            # Pinged until here: a shutdown waiting on streams is not a hung loop.
            if watchdog is not None:
                watchdog.cancel()
            notifier.status("stopping: unloading models")


def _start_services(settings: Settings, backend: GenerationBackend, board: ServiceBoard) -> list[asyncio.Task[None]]:
    """Start what other folders contribute to the daemon (`ingle.services` entry points: the configured bots).

    Found at run time because bots/ builds on adapters, never the reverse (DESIGN.md). Each reports on `board`
    where it stands, which /health and /metrics show.
    """
    return [
        asyncio.create_task(entry.load()(settings, backend, board), name=f"ingle-service-{entry.name}")
        for entry in entry_points(group="ingle.services")
    ]


async def _stop_services(services: list[asyncio.Task[None]]) -> None:
    """Cancel the services first, so bots store what they have before the models unload."""
    for task in services:
        task.cancel()
    if services:
        await asyncio.wait(services, timeout=SHUTDOWN_GRACE_SECONDS)


def _reload(settings: Settings, load: Callable[[], Settings], notifier: SystemdNotifier, listening: str) -> None:
    """SIGHUP: apply the live settings from a fresh load (adapters/config_reload.py) and tell systemd."""
    notifier.reloading("reloading the config")
    result = reload_settings(settings, load)
    log.log(logging.INFO if result.error is None and not result.needs_restart else logging.WARNING, result.summary())
    notifier.ready(f"{listening}; {result.summary()}")


async def _start_sites(runner: web.AppRunner, settings: Settings) -> list[str]:
    tcp = web.TCPSite(runner, settings.host, settings.port)
    try:
        await tcp.start()
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise AddressInUse(
                f"{settings.host}:{settings.port} is already in use: is another `ingle serve` running? "
                "Stop it or pick another --port."
            ) from error
        raise
    port = runner.addresses[0][1]  # the real port, also when 0 asked the OS to pick one
    urls = [f"http://{settings.host}:{port}"]
    socket_path = settings.unix_socket
    if socket_path is not None:
        socket_path.parent.mkdir(parents=True, exist_ok=True)
        if socket_path.is_socket():
            socket_path.unlink()  # a stale socket from a previous run; the TCP bind proved none is live
        unix = web.UnixSite(runner, str(socket_path))
        await unix.start()
        os.chmod(socket_path, 0o600)
        urls.append(f"unix:{socket_path}")
    return urls
