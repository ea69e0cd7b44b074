"""`ingle serve`: the daemon's event loop, HTTP on TCP and a unix socket."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import resource
import signal
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from importlib.metadata import entry_points
from typing import cast

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
# A connection that has not sent a whole request line and headers this long after it opened (or after
# its last answer) is closed: aiohttp's keep-alive timer, which also runs before the first request.
# Without it a client that sends headers byte by byte (slowloris) holds its connection for an hour.
# The body is read by the handler and falls under request_timeout. Longer than the idle time after which
# clients drop a pooled connection themselves (httpx 5 s, aiohttp 15 s), so that none reuses one being closed.
HEADER_TIMEOUT_SECONDS = 30.0
MAX_CONNECTIONS = 4096
"""Open TCP connections at most; fewer where the file limit is low (half of it, the rest for models and files)."""
WANTED_FILE_LIMIT = 65536
"""The soft limit on open files ingle raises itself to, up to the hard limit (systemd's default soft limit is 1024)."""
RESOURCE_WARNING_INTERVAL = 60.0
_BUSY_BODY = json.dumps({"error": "ingle has too many open connections; try again in a moment."}).encode()
BUSY_ANSWER = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)
"""What a connection past the limit gets before it is closed, in the shape of an Ollama-style error."""


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


class ConnectionLimit:
    """The TCP listener's protocol factory: aiohttp's connection handler while fewer than `limit` connections
    are open; past that a new connection gets a 503 and is closed at once, so that no number of clients
    (slow or not) can take the process's last file descriptors.

    A connection counts once asyncio has made it (connection_made), so one burst of accepts (at most the
    listen backlog, 100) can pass the limit; connection_limit leaves room for that.
    """

    def __init__(self, server: web.Server, limit: int) -> None:
        self.server = server
        self.limit = limit

    def __call__(self) -> asyncio.BaseProtocol:
        """A handler for the connection just accepted, or a refusal."""
        if len(self.server.connections) < self.limit:
            return self.server()
        return BusyRefusal()


class BusyRefusal(asyncio.Protocol):
    """Answer 503 to a connection past the limit and close it, without reading its request."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send the 503 and close; the file descriptor is free again within this turn of the loop."""
        stream = cast(asyncio.WriteTransport, transport)
        stream.write(BUSY_ANSWER)
        stream.close()


def raise_file_limit() -> int:
    """Raise the soft limit on open files towards WANTED_FILE_LIMIT (never above the hard limit); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = WANTED_FILE_LIMIT if hard == resource.RLIM_INFINITY else min(hard, WANTED_FILE_LIMIT)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    return soft


def connection_limit(file_limit: int) -> int:
    """How many TCP connections may be open at once under `file_limit` open files."""
    return max(16, min(MAX_CONNECTIONS, file_limit // 2))


class ResourceErrors:
    """The loop's exception handler: asyncio reports every failed accept() for want of file descriptors or
    memory, with a traceback, many times a second while it lasts. One warning line per interval says it."""

    def __init__(self, interval: float = RESOURCE_WARNING_INTERVAL) -> None:
        self.interval = interval
        self.last = -interval

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        """Keep an accept() out of resources to one line per interval; hand everything else to asyncio."""
        error = context.get("exception")
        if not (
            isinstance(error, OSError) and error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
        ):
            loop.default_exception_handler(context)
            return
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            log.warning(
                "cannot accept connections: %s; new clients wait until some close (raise LimitNOFILE in the unit)",
                os.strerror(error.errno or 0),
            )


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
    max_connections = connection_limit(raise_file_limit())
    asyncio.get_running_loop().set_exception_handler(ResourceErrors())
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
            keepalive_timeout=HEADER_TIMEOUT_SECONDS,
        )
        await runner.setup()
        watchdog: asyncio.Task[None] | None = None
        listeners: list[asyncio.Server] = []
        try:
            urls = await _start_sites(runner, settings, max_connections, listeners)
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
            for listener in listeners:
                listener.close()
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


async def _start_sites(
    runner: web.AppRunner, settings: Settings, max_connections: int, listeners: list[asyncio.Server]
) -> list[str]:
    """Listen on TCP (at most `max_connections` at once; the listener is added to `listeners`, which the caller
    closes) and on the unix socket (not limited: the admin's way in while TCP is full); the URLs."""
    server = cast(web.Server, runner.server)  # set up by runner.setup()
    try:
        tcp = await asyncio.get_running_loop().create_server(
            ConnectionLimit(server, max_connections), settings.host, settings.port
        )
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise AddressInUse(
                f"{settings.host}:{settings.port} is already in use: is another `ingle serve` running? "
                "Stop it or pick another --port."
            ) from error
        raise
    listeners.append(tcp)
    port = tcp.sockets[0].getsockname()[1]  # the real port, also when 0 asked the OS to pick one
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
