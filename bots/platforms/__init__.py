"""One module per chat platform, each converting to and from the conversation core.

`PLATFORMS` is the registry `ingle bot NAME` and `ingle serve` read: a name
maps to a coroutine function `run_<name>(settings, backend, ready)` that
validates `[bots.<name>]` from the settings, connects, calls `ready()` (when
given) once it is connected, and serves until cancelled (closing everything it
opened). To add a platform, write
`bots/platforms/<name>.py` with such a function (see `bots.conversation` for
the contract it implements) and add one line here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from ingle.core.backend import GenerationBackend
from ingle.core.settings import Settings

Ready = Callable[[], None] | None
"""Called once the bot is connected and answering (`ingle serve` reports it as running)."""


class PlatformRunner(Protocol):
    """Runs one platform's bot against a backend until cancelled; `ready()` (if given) once it is connected."""

    def __call__(
        self, settings: Settings, backend: GenerationBackend, ready: Ready = None, /
    ) -> Coroutine[Any, Any, None]: ...


def _imported_when_run(name: str) -> PlatformRunner:
    """`run_<name>` from `<name>.py`, imported on the first run: each platform's client library
    (slack-bolt, python-telegram-bot) takes a noticeable time to load, which every other
    `ingle` command would otherwise pay."""

    async def run(settings: Settings, backend: GenerationBackend, ready: Ready = None) -> None:
        module = importlib.import_module(f"{__name__}.{name}")
        await getattr(module, f"run_{name}")(settings, backend, ready)

    return run


PLATFORMS: dict[str, PlatformRunner] = {name: _imported_when_run(name) for name in ("telegram", "slack", "mattermost")}
