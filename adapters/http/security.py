"""Secure by default: API key, Host allowlist (DNS rebinding) and CORS, as middlewares."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from ...core.errors import IngleError
from ...core.settings import Settings
from .errors import error_response

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}
OPEN_PATHS = {"/health"}


class UnsafeBind(IngleError):
    """Listening beyond loopback without an API key."""


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
    if not is_loopback(settings.host) and settings.api_key is None:
        raise UnsafeBind(
            f"Refusing to listen on {settings.host} without an API key: set api_key in ingle.toml "
            "(or INGLE_API_KEY), or listen on 127.0.0.1."
        )


def host_of(header: str) -> str:
    """The host part of a Host header, without the port."""
    if header.startswith("["):
        return header.split("]")[0] + "]"
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def host_guard(settings: Settings) -> Middleware:
    """Reject Host headers that are not ours, so a rebound DNS name cannot reach the API from a browser.

    Without an API key the allowlist is loopback names plus `allowed_hosts`
    (and the bind address). With a key, an attacker's page has nothing to
    replay, so only a configured `allowed_hosts` is enforced.
    """
    allowed = LOOPBACK_NAMES | {name.lower() for name in settings.allowed_hosts}
    if settings.host not in ("0.0.0.0", "::"):
        allowed.add(settings.host.lower())
    enforce = settings.api_key is None or bool(settings.allowed_hosts)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if enforce and request.transport is not None and request.transport.get_extra_info("peername"):
            host = host_of(request.headers.get("Host", "")).lower()
            if host not in allowed:
                return error_response(
                    request, 403, f"Host '{host}' is not allowed: add it to allowed_hosts in ingle.toml."
                )
        return await handler(request)

    return middleware


def api_key_guard(settings: Settings) -> Middleware:
    """With an API key configured, every route but /health needs `Authorization: Bearer <key>`.

    `x-api-key: <key>` is accepted as well: Anthropic's clients (Claude Code) send the key that way.
    """
    expected = settings.api_key.get_secret_value().encode() if settings.api_key else None

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is None or request.path in OPEN_PATHS or request.method == "OPTIONS":
            return await handler(request)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            token = request.headers.get("x-api-key", "")
        if not hmac.compare_digest(token.strip().encode(), expected):
            response = error_response(
                request, 401, "A valid API key is required: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'."
            )
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        return await handler(request)

    return middleware


def cors(settings: Settings) -> Middleware:
    """Answer CORS only for configured origins; browsers block every other origin."""
    origins = set(settings.cors_origins)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is None or origin not in origins:
            return await handler(request)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            response: web.StreamResponse = web.Response(status=204)
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = (
                "Authorization, Content-Type, x-api-key, anthropic-version, anthropic-beta"
            )
            response.headers["Access-Control-Max-Age"] = "600"
        else:
            response = await handler(request)
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
        return response

    return middleware
