"""A per-user token bucket, so one eager user cannot occupy the model for everyone."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Each user may send `burst` messages at once and `per_minute` a minute on average."""

    def __init__(self, per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def try_acquire(self, user: str) -> float:
        """Take one message's worth for `user`: 0.0 if allowed, else the seconds until the next one is."""
        now = self._clock()
        bucket = self._buckets.get(user)
        if bucket is None:
            bucket = self._buckets[user] = _Bucket(tokens=self.burst, updated=now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate


def too_fast(wait: float) -> str:
    """What a user who sends too fast is told."""
    return f"You're sending messages faster than I can answer; please try again in {max(1, round(wait))} seconds."
