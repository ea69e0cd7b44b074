"""Streamed responses: NDJSON (Ollama) and server-sent events (OpenAI, llama-server).

The first item is produced before the response starts, so an error that
happens up front (unknown model, full queue) still gets a proper status code.
An error after streaming began is sent as a last event, since the status
line is already gone.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from ...core.errors import IngleError
from .errors import code_for, error_body, status_for

log = logging.getLogger("ingle.http")


def _dumps(item: Any) -> bytes:
    try:
        return json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:
        # A lone surrogate has no UTF-8; JSON's own \ud800 escape still carries it, and the stream goes on.
        return json.dumps(item, separators=(",", ":")).encode()


async def json_off_the_loop(answer: BaseModel) -> web.Response:
    """A big answer (2048 embedding vectors are some 40 MB of JSON) as a JSON response, serialised in a worker
    thread, one small piece at a time: a piece holds the GIL briefly, so other clients' requests go on."""
    text = await asyncio.to_thread(_json_in_pieces, answer.model_dump(mode="json"))
    return web.Response(text=text, content_type="application/json")


def _json_in_pieces(value: Any) -> str:
    """The JSON text of `value`, from one json.dumps per dictionary value and per list of lists or objects."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(key)}: {_json_in_pieces(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list) and value and isinstance(value[0], (list, dict)):
        return "[" + ", ".join(_json_in_pieces(item) for item in value) + "]"
    return json.dumps(value)


ErrorItem = Callable[[IngleError], dict[str, Any]]
"""The last item of a stream that failed after it started."""

_INTERNAL = "ingle hit an internal error; the server log has the details."


async def _stream(
    request: web.Request,
    items: AsyncGenerator[dict[str, Any], None],
    content_type: str,
    frame,
    closing: bytes,
    error_item: ErrorItem | None = None,
) -> web.StreamResponse:
    def last_item(error: IngleError) -> dict[str, Any]:
        # By default the route's own error shape, with the same status and code it would have had up front.
        if error_item is not None:
            return error_item(error)
        return error_body(request.path, status_for(error), error.message, code=code_for(error))

    async with aclosing(items):
        first = await anext(items)
        response = web.StreamResponse(headers={"Content-Type": content_type, "Cache-Control": "no-cache"})
        await response.prepare(request)
        await _send(response, frame(first))
        try:
            async for item in items:
                await _send(response, frame(item))
        except IngleError as error:
            await _send(response, frame(last_item(error)))
        except Exception:
            log.exception("error while streaming %s", request.path)
            await _send(response, frame(last_item(IngleError(_INTERNAL))))
        if closing:
            await _send(response, closing)
        try:
            await response.write_eof()
        except ConnectionError as error:
            raise asyncio.CancelledError from error
        return response


async def _send(response: web.StreamResponse, data: bytes) -> None:
    """Write to the client. One that left mid-answer can make the write fail before aiohttp cancels the
    handler; that ends the handler the same way (cancelled, counted as 499), not as the server's failure."""
    try:
        await response.write(data)
    except ConnectionError as error:
        raise asyncio.CancelledError from error


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
    request: web.Request, items: AsyncGenerator[dict[str, Any], None], error_item: ErrorItem | None = None
) -> web.StreamResponse:
    """Stream `event: <type>` / `data: <json>` pairs named by each item's `type`, as Anthropic's and
    OpenAI's Responses streams do; an error after the start is sent as `error_item(error)`."""

    def frame(item: dict[str, Any]) -> bytes:
        return f"event: {item['type']}\n".encode() + b"data: " + _dumps(item) + b"\n\n"

    return await _stream(request, items, "text/event-stream", frame, b"", error_item)
