"""Work on a worker thread that reads a loaded model, so that the model outlives it.

A model is freed once no request holds it, and a request lets go when it
ends, also when it is cancelled. Work it started on a thread (tokenizing,
parsing a grammar) may still be reading the model then, so a cancelled
caller waits for that work to end before passing the cancellation on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def run_to_the_end(function: Callable[..., T], *args: Any, abandoned: Callable[[T], object] | None = None) -> T:
    """`function(*args)` on a worker thread, finished even if the caller is cancelled meanwhile.

    `abandoned` gets the result that a cancelled caller no longer wants (to free it).
    """
    work = asyncio.ensure_future(asyncio.to_thread(function, *args))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        while not work.done():
            try:
                await asyncio.wait([work])
            except asyncio.CancelledError:
                continue
        if abandoned is not None and not work.cancelled() and work.exception() is None:
            abandoned(work.result())
        raise
