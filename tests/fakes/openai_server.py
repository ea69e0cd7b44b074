"""A fake OpenAI-compatible server (the remote side of an upstream), on an ephemeral loopback port.

It streams `pieces` as server-sent events for /v1/chat/completions and
/v1/completions, answers /v1/embeddings, or answers every request with
`status` instead. Tests configure it by attribute changes and read what it
saw in `requests`; `aborted` counts streams whose client went away mid-answer.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from . import start_on_loopback


@dataclass
class FakeOpenAIServer:
    """Configure, then `async with` it; `url` is its base URL once started."""

    pieces: list[str] = field(default_factory=lambda: ["Hello", ", ", "world"])
    piece_delay: float = 0.0
    status: int | None = None
    """Answer every request with this error status (e.g. 503) instead."""
    retry_after: str | None = None
    usage: bool = True
    cut_short: bool = False
    """End the body after the pieces, without a finish reason or `[DONE]` (a crashed server)."""
    requests: list[tuple[str, dict[str, Any], dict[str, str]]] = field(default_factory=list)
    """(path, JSON body, headers) of every request."""
    aborted: int = 0
    url: str = ""
    _runner: web.AppRunner | None = None

    async def __aenter__(self) -> FakeOpenAIServer:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._generate)
        app.router.add_post("/v1/completions", self._generate)
        app.router.add_post("/v1/embeddings", self._embeddings)
        self._runner, self.url = await start_on_loopback(app)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def _error(self) -> web.Response:
        headers = {"Retry-After": self.retry_after} if self.retry_after else {}
        body = {"error": {"message": f"fake failure {self.status}", "type": "server_error", "code": self.status}}
        return web.json_response(body, status=self.status or 500, headers=headers)

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append((request.path, body, dict(request.headers)))
        if self.status is not None:
            return self._error()
        chat = request.path.endswith("/chat/completions")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        finished = False
        try:
            for piece in self.pieces:
                choice = {"index": 0, "finish_reason": None}
                choice.update({"delta": {"content": piece}} if chat else {"text": piece})
                await response.write(_event({"choices": [choice]}))
                await asyncio.sleep(self.piece_delay)
            if self.cut_short:
                finished = True
                await response.write_eof()
                return response
            last: dict[str, Any] = {"index": 0, "finish_reason": "length"}
            last.update({"delta": {}} if chat else {"text": ""})
            await response.write(_event({"choices": [last]}))
            if self.usage:
                usage = {
                    "prompt_tokens": 7,
                    "completion_tokens": len(self.pieces),
                    "total_tokens": 7 + len(self.pieces),
                }
                await response.write(_event({"choices": [], "usage": usage}))
            await response.write(b"data: [DONE]\n\n")
            finished = True
        finally:
            if not finished:
                self.aborted += 1
        await response.write_eof()
        return response

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append((request.path, body, dict(request.headers)))
        if self.status is not None:
            return self._error()
        rows = [{"index": index, "embedding": [3.0, 4.0], "object": "embedding"} for index in range(len(body["input"]))]
        rows.reverse()  # servers may answer out of order; `index` says where each goes
        return web.json_response({"data": rows, "usage": {"prompt_tokens": 5, "total_tokens": 5}})


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"
