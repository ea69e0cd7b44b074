"""Fakes of remote platforms the tests talk to over real loopback sockets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web


@dataclass
class ApiCall:
    """One API request a fake received: its method, parameters (JSON values decoded), when, and the answer."""

    method: str
    params: dict[str, Any]
    at: float
    """`time.monotonic()` when it arrived."""
    status: int = 200
    result: Any = None
    """What it answered, when it succeeded."""


async def start_on_loopback(app: web.Application, port: int = 0, **runner_options: object) -> tuple[web.AppRunner, str]:
    """Serve `app` on 127.0.0.1 at `port` (0: one the OS picks); return the runner (to clean up) and the base URL.

    Handler cancellation is on, as in `ingle serve`, so a client that hangs up
    cancels its handler here too.
    """
    runner = web.AppRunner(app, **{"handler_cancellation": True, **runner_options})
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def poll_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Re-check `condition` every 20 ms until it returns something truthy; TimeoutError naming `what` after that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        await asyncio.sleep(0.02)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
