"""Turning numbers, digests and times into the short strings the CLI prints."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

from ingle.core.settings import KEEP_ALIVE_MAX_SECONDS

_SIZE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")
_TIME_UNITS = (
    ("year", 365 * 86400),
    ("month", 30 * 86400),
    ("week", 7 * 86400),
    ("day", 86400),
    ("hour", 3600),
    ("minute", 60),
)
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_FOREVER_WORDS = ("forever", "never", "inf")


def human_size(size: int) -> str:
    """Bytes as `512 B`, `468.6 MiB` or `4.1 GiB`."""
    value = float(size)
    unit = 0
    while abs(value) >= 1024 and unit < len(_SIZE_UNITS) - 1:
        value /= 1024
        unit += 1
    return f"{size} B" if unit == 0 else f"{value:.1f} {_SIZE_UNITS[unit]}"


def parameter_count(count: int | None) -> str:
    """A parameter count the way model cards write it: `494M`, `1.5B`, `7B`."""
    if not count:
        return "unknown"
    for divisor, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= divisor:
            scaled = count / divisor
            # Billions keep one decimal (1.5B); millions read better whole (494M).
            text = f"{scaled:.1f}" if suffix in ("T", "B") and scaled < 100 else f"{scaled:.0f}"
            return text.removesuffix(".0") + suffix
    return str(count)


def short_digest(digest: str) -> str:
    """The first 12 hex digits of `sha256-<hex>`, as `ingle list` shows them."""
    return digest.removeprefix("sha256-").removeprefix("sha256:")[:12]


def parse_timestamp(text: str) -> datetime | None:
    """Read an ISO 8601 timestamp; a naive one is taken as UTC. None if unreadable."""
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def relative_time(moment: datetime, now: datetime | None = None) -> str:
    """`3 minutes ago`, `4 minutes from now`, `just now`."""
    now = now or datetime.now(UTC)
    seconds = (moment - now).total_seconds()
    future = seconds > 0
    seconds = abs(seconds)
    if seconds < 45:
        return "in a few seconds" if future else "just now"
    for unit, length in _TIME_UNITS:
        if seconds >= length:
            count = max(1, round(seconds / length))
            text = f"{count} {unit}{'' if count == 1 else 's'}"
            break
    else:
        text = "1 minute"
    return f"{text} from now" if future else f"{text} ago"


def unloads_at(expires_at: float | None, now: datetime | None = None) -> str:
    """When a loaded model unloads, for `ingle ps`: `forever`, `4 minutes from now`, or, once that time has
    passed (an unload waiting for the requests in flight), `Stopping...` as `ollama ps` says it."""
    if expires_at is None:
        return "forever"
    moment = datetime.fromtimestamp(expires_at, UTC)
    if moment <= (now or datetime.now(UTC)):
        return "Stopping..."
    return relative_time(moment, now)


def parse_keep_alive(text: str) -> float:
    """Parse a keep-alive like `5m`, `1h30m`, `90` (seconds), `0` or `forever` into seconds.

    `-1` (also `forever`) means stay loaded; `0` means unload right after the answer.
    Raises ValueError with a sentence for anything else, and for more than a year.
    """
    cleaned = text.strip().lower()
    if cleaned in _FOREVER_WORDS:
        return -1.0
    try:
        seconds = float(cleaned)
    except ValueError:
        seconds = None
    if seconds is None:
        parts = _DURATION_PART.findall(cleaned)
        if not parts or "".join(number + unit for number, unit in parts) != cleaned:
            raise ValueError(f"'{text}' is not a duration: use e.g. 30s, 5m, 1h30m, 0 or forever.")
        seconds = sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)
    if math.isnan(seconds):
        raise ValueError(f"'{text}' is not a duration: use e.g. 30s, 5m, 1h30m, 0 or forever.")
    if seconds < 0:
        return -1.0
    if seconds > KEEP_ALIVE_MAX_SECONDS:
        raise ValueError(f"'{text}' is longer than a year: use at most 365d, or forever to keep the model loaded.")
    return seconds


_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
"""C0 and C1 controls but tab and newline, DEL, and the bidirectional overrides: in a document, a file name or
a model's metadata they would drive the terminal (ESC[2J clears it) or show text other than what is there."""


def shown(text: str) -> str:
    """`text` safe to print on a terminal: every control character written as its escape, e.g. `\\x1b`."""
    return _CONTROLS.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), text)
