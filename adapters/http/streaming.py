"""Streamed responses: NDJSON (Ollama) and server-sent events (OpenAI, llama-server).

The first item is produced before the response starts, so an error that
happens up front (unknown model, full queue) still gets a proper status code.
An error after streaming began is sent as a last event, since the status
line is already gone.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any

from aiohttp import web

from ...core.errors import IngleError

log = logging.getLogger("ingle.http")


def _dumps(item: Any) -> bytes:
    return json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode()


def _plain_error(message: str) -> dict[str, Any]:
    return {"error": message}


async def _stream(
    request: web.Request,
    items: AsyncGenerator[dict[str, Any], None],
    content_type: str,
    frame,
    closing: bytes,
    error_item: Callable[[str], dict[str, Any]] = _plain_error,
) -> web.StreamResponse:
    async with aclosing(items):
        first = await anext(items)
        response = web.StreamResponse(headers={"Content-Type": content_type, "Cache-Control": "no-cache"})
        await response.prepare(request)
        await response.write(frame(first))
        try:
            async for item in items:
                await response.write(frame(item))
        except IngleError as error:
            await response.write(frame(error_item(error.message)))
        except Exception:
            log.exception("error while streaming %s", request.path)
            await response.write(frame(error_item("ingle hit an internal error; the server log has the details.")))
        if closing:
            await response.write(closing)
        await response.write_eof()
        return response


async def ndjson(request: web.Request, items: AsyncGenerator[dict[str, Any], None]) -> web.StreamResponse:
    """Stream one JSON object per line, as Ollama does."""
    return await _stream(request, items, "application/x-ndjson", lambda item: _dumps(item) + b"\n", b"")


async def server_sent_events(
    request: web.Request, items: AsyncGenerator[dict[str, Any], None], done_marker: bool = True
) -> web.StreamResponse:
    """Stream `data: <json>` events, ending with `data: [DONE]` as OpenAI does."""
    closing = b"data: [DONE]\n\n" if done_marker else b""
    return await _stream(request, items, "text/event-stream", lambda item: b"data: " + _dumps(item) + b"\n\n", closing)


async def typed_events(
    request: web.Request, items: AsyncGenerator[dict[str, Any], None], error_item: Callable[[str], dict[str, Any]]
) -> web.StreamResponse:
    """Stream `event: <type>` / `data: <json>` pairs named by each item's `type`, as Anthropic's and
    OpenAI's Responses streams do; an error after the start is sent as `error_item(message)`."""

    def frame(item: dict[str, Any]) -> bytes:
        return f"event: {item['type']}\n".encode() + b"data: " + _dumps(item) + b"\n\n"

    return await _stream(request, items, "text/event-stream", frame, b"", error_item)
