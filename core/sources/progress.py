"""Progress of a pull, reported to a callback at a bounded rate."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class PullProgress:
    """One progress report: what is happening, and how far along it is in bytes."""

    status: str
    """What is happening, e.g. 'downloading part01.bin' or 'success'."""
    completed: int = 0
    """Bytes done in the current step."""
    total: int | None = None
    """Bytes the current step will take; None when the server did not say."""
    digest: str | None = None
    """Digest of the blob the step is about, when known."""


ProgressCallback = Callable[[PullProgress], None]
"""Told about progress; called on the event loop's thread, at most about ten times a second."""


class ProgressReporter:
    """Turns byte counts into PullProgress reports, at most `rate` a second.

    Status changes always go through; byte updates in between are dropped
    when they come faster than the rate. Worker threads may report too: their
    reports are handed to the event loop so the callback always runs there.
    Create it inside a coroutine (it remembers the running loop).
    """

    def __init__(self, callback: ProgressCallback | None, rate: float = 10.0) -> None:
        self._callback = callback
        self._interval = 1.0 / rate
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._status = ""
        self._total: int | None = None
        self._digest: str | None = None
        self._last = 0.0

    def status(self, status: str, total: int | None = None, digest: str | None = None, completed: int = 0) -> None:
        """Start a new step and report it at once."""
        self._status, self._total, self._digest = status, total, digest
        self._emit(PullProgress(status, completed, total, digest))

    def set_total(self, total: int | None) -> None:
        """The size of the current step, once it is known."""
        self._total = total

    def advance(self, completed: int, force: bool = False) -> None:
        """Report `completed` bytes of the current step, unless a report went out just now."""
        now = time.monotonic()
        if not force and now - self._last < self._interval:
            return
        self._last = now
        self._emit(PullProgress(self._status, completed, self._total, self._digest))

    def _emit(self, report: PullProgress) -> None:
        if self._callback is None:
            return
        if threading.get_ident() == self._loop_thread:
            self._callback(report)
        else:
            self._loop.call_soon_threadsafe(self._callback, report)
