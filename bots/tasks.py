"""The answers a bot is writing right now, each a task of its own."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class AnswerTasks:
    """The answers being written right now, each its own task, all cancelled when the bot stops."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` in the background, keeping a reference so it is not collected mid-answer."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def __len__(self) -> int:
        return len(self._tasks)

    async def cancel_all(self) -> None:
        """Cancel every answer in progress and wait until each has cleaned up."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
