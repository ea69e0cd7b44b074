"""`ingle doctor`'s look at the `[bots.*]` sections (the `ingle.doctor` entry point).

The same validation `ingle serve` and `ingle bot` apply (`bots.settings`), so a
section that passes here starts there: a known platform, its token present, a
known time zone. Only pydantic is needed for that; no chat library is loaded.
"""

from __future__ import annotations

from ingle.adapters.cli.doctor import Check
from ingle.core.errors import InvalidRequest
from ingle.core.settings import Settings

from .access import AccessPolicy
from .settings import PLATFORM_SETTINGS


def check_bots(settings: Settings) -> list[Check]:
    """One finding per `[bots.*]` section: whether it names a platform and its settings are valid."""
    checks: list[Check] = []
    for name in settings.bots:
        what = f"bots.{name}"
        kind = PLATFORM_SETTINGS.get(name)
        if kind is None:
            known = ", ".join(f"[bots.{platform}]" for platform in PLATFORM_SETTINGS)
            checks.append(Check(what, False, f"there is no {name!r} bot; rename the section to one of {known}."))
            continue
        try:
            bot = kind.from_settings(settings)
        except InvalidRequest as error:
            checks.append(Check(what, False, error.message))
            continue
        state = "runs in `ingle serve`" if bot.enabled else "is off (enabled = false)"
        if AccessPolicy.of(bot.allowed_users, bot.allowed_channels).answers_nobody:
            state += "; it answers nobody until allowed_users or allowed_channels is set"
        checks.append(Check(what, True, f"valid; the {name} bot {state}."))
    return checks
