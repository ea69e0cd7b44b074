"""One module per chat platform, each converting to and from the conversation core.

`PLATFORMS` is the registry `ingle bot NAME` and `ingle serve` read: a name
maps to a coroutine function `run_<name>(settings, backend)` that validates
`[bots.<name>]` from the settings, connects, and serves until cancelled
(closing everything it opened). To add a platform, write
`bots/platforms/<name>.py` with such a function (see `bots.conversation` for
the contract it implements) and add one line here.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from ingle.core.backend import GenerationBackend
from ingle.core.settings import Settings

from .mattermost import run_mattermost
from .slack import run_slack
from .telegram import run_telegram

PlatformRunner = Callable[[Settings, GenerationBackend], Coroutine[Any, Any, None]]
"""Runs one platform's bot against a backend until cancelled."""

PLATFORMS: dict[str, PlatformRunner] = {
    "telegram": run_telegram,
    "slack": run_slack,
    "mattermost": run_mattermost,
}
