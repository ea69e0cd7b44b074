"""Secure by default: API keys and the management right, Host allowlist (DNS rebinding) and CORS, as middlewares."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import IntEnum

from aiohttp import web
from aiohttp.typedefs import Middleware

from ...core.settings import Settings
from .errors import error_response

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}
OPEN_PATHS = {"/health"}
# Routes that change what the server keeps for everyone: the models (pull, delete, copy) and the
# knowledge bases (create, add, sync or drop documents, delete). Over TCP they need a management key unless
# management_over_tcp is set; the unix socket (mode 0600, the service's own user) needs none.
# Left out on purpose: unloading a model (an /api/generate with keep_alive 0, which Ollama clients
# and Open WebUI send in ordinary use) loses nothing stored and anyone may load it again;
# DELETE /v1/responses/{id} removes one stored answer whose id only its caller was given; knowledge
# search only reads. Ollama's /api/create, /api/push and /api/blobs are listed so that they are
# covered the day ingle serves them.
MANAGEMENT_ROUTES = frozenset(
    {
        ("POST", "/api/pull"),
        ("DELETE", "/api/delete"),
        ("POST", "/api/copy"),
        ("POST", "/api/create"),
        ("POST", "/api/push"),
        ("POST", "/api/blobs/{digest}"),
        ("POST", "/api/knowledge"),
        ("DELETE", "/api/knowledge/{name}"),
        ("POST", "/api/knowledge/{name}/documents"),
        ("DELETE", "/api/knowledge/{name}/documents"),
        ("POST", "/api/knowledge/{name}/sync"),
    }
)
MANAGEMENT_REFUSED = (
    "Managing models and knowledge bases over TCP needs the management key (the one in "
    "management_key_file, sent as 'Authorization: Bearer <key>') or api_key, or set "
    "management_over_tcp = true in ingle.toml (INGLE_MANAGEMENT_OVER_TCP=true); the unix socket needs neither."
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
    enforce = not settings.requires_key() or bool(settings.allowed_hosts)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if enforce and request.transport is not None and over_tcp(request):
            host = host_of(request.headers.get("Host", "")).lower()
            if host not in allowed:
                return error_response(
                    request, 403, f"Host '{host}' is not allowed: add it to allowed_hosts in ingle.toml."
                )
        return await handler(request)

    return middleware


def over_tcp(request: web.Request) -> bool:
    """True unless the request came over the unix socket; a connection already gone counts as TCP (the safe side)."""
    return request.transport is None or bool(request.transport.get_extra_info("peername"))


def is_management(request: web.Request) -> bool:
    """True for the routes in MANAGEMENT_ROUTES."""
    resource = request.match_info.route.resource
    return resource is not None and (request.method, resource.canonical) in MANAGEMENT_ROUTES


class Scope(IntEnum):
    """What a presented key allows; a higher scope allows everything a lower one does."""

    NONE = 0
    INFERENCE = 1
    MANAGEMENT = 2


@dataclass(frozen=True)
class AccessKeys:
    """The configured keys and what each allows, read once when the app is built."""

    keys: tuple[tuple[bytes, Scope], ...]
    required: bool
    """Every request but /health needs some key (api_key or inference_api_key is set)."""

    @classmethod
    def of(cls, settings: Settings) -> AccessKeys:
        """api_key keeps the rights it had before scopes (everything); inference_api_key allows inference only."""
        configured = [
            (settings.api_key, Scope.MANAGEMENT),
            (settings.management_key(), Scope.MANAGEMENT),
            (settings.inference_api_key, Scope.INFERENCE),
        ]
        # An empty key would match a request that sends none.
        keys = tuple(
            (key.get_secret_value().encode(), scope) for key, scope in configured if key and key.get_secret_value()
        )
        return cls(keys, settings.requires_key())

    def scope_of(self, token: str) -> Scope:
        """The widest scope a presented token has; every key is compared, in constant time each."""
        presented = token.strip().encode()
        scope = Scope.NONE
        for key, key_scope in self.keys:
            if hmac.compare_digest(presented, key):
                scope = max(scope, key_scope)
        return scope


def presented_key(request: web.Request) -> str:
    """The key from `Authorization: Bearer <key>`, else from `x-api-key` (Anthropic's clients send it so)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token if scheme.lower() == "bearer" else request.headers.get("x-api-key", "")


def api_key_guard(settings: Settings) -> Middleware:
    """Check keys: with a key required, every route but /health needs a valid one; managing needs the right.

    Managing (MANAGEMENT_ROUTES) over TCP needs a key of management scope
    (api_key or the management key) unless management_over_tcp is set; over the
    unix socket it needs only what every other route needs.
    """
    keys = AccessKeys.of(settings)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS or request.method == "OPTIONS":
            return await handler(request)
        scope = keys.scope_of(presented_key(request))
        if keys.required and scope is Scope.NONE:
            response = error_response(
                request, 401, "A valid API key is required: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'."
            )
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        if (
            scope is not Scope.MANAGEMENT
            and not settings.management_over_tcp
            and is_management(request)
            and over_tcp(request)
        ):
            return error_response(request, 403, MANAGEMENT_REFUSED)
        return await handler(request)

    return middleware


def cors(settings: Settings) -> Middleware:
    """Answer CORS preflights only for configured origins; browsers block every other origin.

    The Access-Control-Allow-Origin of every other answer is added by cors_headers as it starts.
    """
    origins = set(settings.cors_origins)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is None or origin not in origins:
            return await handler(request)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            response = web.Response(status=204)
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = (
                "Authorization, Content-Type, x-api-key, anthropic-version, anthropic-beta"
            )
            response.headers["Access-Control-Max-Age"] = "600"
            return response
        return await handler(request)

    return middleware


def cors_headers(settings: Settings) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """An on_response_prepare signal: every answer to a configured origin allows it, as its headers go out.

    A middleware would miss a stream (its headers left at prepare(), inside the handler) and an error
    that an outer middleware turned into an answer.
    """
    origins = set(settings.cors_origins)

    async def allow_origin(request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        if origin is not None and origin in origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"

    return allow_origin
