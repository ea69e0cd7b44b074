"""The per-request time limit (`request_timeout`), as a middleware.

A request that runs out of time is cancelled, which closes its generation
and frees its sequence. If nothing was sent yet the client gets a 504 with a
sentence; if a stream had begun, the status line is gone, so the stream ends
with one last error event in its own framing (NDJSON line or SSE event).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from ...core.settings import Settings
from .errors import error_response

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Pulls are bounded by their sources' own timeouts: a large model over a slow link legitimately takes hours.
UNLIMITED_PATHS = {"/api/pull"}
STARTED_RESPONSE = web.RequestKey("started_response", web.StreamResponse)
"""The response whose headers went out, once a handler has begun streaming."""


async def remember_started_response(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare signal: note the response whose headers went out, for a late error event."""
    request[STARTED_RESPONSE] = response


def request_timeout(settings: Settings) -> Middleware:
    """Cancel a handler after `settings.request_timeout` seconds and tell the client why."""
    limit = settings.request_timeout
    message = (
        f"The request took longer than request_timeout ({limit:g} s) and was stopped; "
        "ask for fewer tokens or raise request_timeout in ingle.toml."
    )

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in UNLIMITED_PATHS:
            return await handler(request)
        try:
            async with asyncio.timeout(limit):
                return await handler(request)
        except TimeoutError:
            started = request.get(STARTED_RESPONSE)
            if started is None:
                return error_response(request, 504, message)
            await _end_stream_with_error(started, message)
            return started

    return middleware


async def _end_stream_with_error(response: web.StreamResponse, message: str) -> None:
    """Write a last error item in the stream's framing and close it; the client may be gone already."""
    payload = json.dumps({"error": message}).encode()
    frame = b"data: " + payload + b"\n\n" if response.content_type == "text/event-stream" else payload + b"\n"
    try:
        await response.write(frame)
        await response.write_eof()
    except (ConnectionError, RuntimeError):
        pass


def setup(app: web.Application) -> None:
    """Track started responses so a timed-out stream can be ended with an error event."""
    app.on_response_prepare.append(remember_started_response)
