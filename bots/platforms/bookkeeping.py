"""Small pieces every platform's bot keeps: the answers it is writing, and the threads it takes part in."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Coroutine, Hashable
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


class KnownThreads:
    """Whether the bot takes part in a thread, remembered for the most recent `size` threads.

    Asking the platform once per thread is enough; the bound keeps a bot that
    sees thousands of threads from growing without end.
    """

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._known: OrderedDict[Hashable, bool] = OrderedDict()

    def get(self, thread: Hashable) -> bool | None:
        """What is remembered of `thread`, or None if nothing is."""
        known = self._known.get(thread)
        if known is not None:
            self._known.move_to_end(thread)
        return known

    def remember(self, thread: Hashable, takes_part: bool) -> None:
        """Record whether the bot takes part in `thread`, forgetting the least recent beyond `size`."""
        self._known[thread] = takes_part
        self._known.move_to_end(thread)
        while len(self._known) > self.size:
            self._known.popitem(last=False)
