"""Small pieces the platforms' bots keep: the threads they take part in."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


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
