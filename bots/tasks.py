"""The answers a bot is writing right now, each a task of its own."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

# How long a stopping bot waits for answers that are being delivered (see AnswerTasks.delivering).
DELIVERY_GRACE_SECONDS = 10.0


class AnswerTasks:
    """The answers being written right now, each its own task, all cancelled when the bot stops."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._delivering: set[asyncio.Task[None]] = set()

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` in the background, keeping a reference so it is not collected mid-answer."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(self._delivering.discard)

    def delivering(self) -> None:
        """The calling answer only shows its answer and records that it did from here on: a stopping bot lets
        it finish (for DELIVERY_GRACE_SECONDS). Cut off between the two, the answer stayed owed in the store
        and the next start showed it a second time."""
        task = asyncio.current_task()
        if task is not None and task in self._tasks:
            self._delivering.add(task)

    def __len__(self) -> int:
        return len(self._tasks)

    async def cancel_all(self) -> None:
        """Cancel every answer in progress, let those being delivered finish first, and wait until each is over."""
        for task in list(self._tasks):
            if task not in self._delivering:
                task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=DELIVERY_GRACE_SECONDS)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
