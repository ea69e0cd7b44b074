"""Where the daemon may listen: which addresses are loopback, and refusing an open one without a key.

Kept apart from the HTTP middleware (adapters/http/security.py) so the command
line can ask these questions without loading aiohttp.
"""

from __future__ import annotations

import ipaddress

from ..core.errors import InvalidRequest
from ..core.settings import Settings


class UnsafeBind(InvalidRequest):
    """Listening beyond loopback without an API key: a configuration mistake, reported like a bad option."""


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`."""
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings) -> None:
    """Refuse a non-loopback address unless an API key protects it."""
    if not is_loopback(settings.host) and not settings.requires_key():
        raise UnsafeBind(
            f"Refusing to listen on {settings.host} without an API key: set api_key in ingle.toml "
            "(or INGLE_API_KEY), or listen on 127.0.0.1."
        )
