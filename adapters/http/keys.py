"""Typed keys for what the application holds (aiohttp's AppKey)."""

from __future__ import annotations

from aiohttp import web

from ...core.backend import GenerationBackend
from ...core.engine import Engine
from ...core.settings import Settings
from ..services import ServiceBoard
from ..upstreams import BackendRouter

ENGINE = web.AppKey("engine", Engine)
SETTINGS = web.AppKey("settings", Settings)
BACKEND = web.AppKey("backend", GenerationBackend)
"""Where generation and embedding requests go: the engine, or a router over it and upstreams."""
ROUTER = web.AppKey("router", BackendRouter)
"""The router over the configured upstreams, when there are any (model listings name their models)."""
SERVICES = web.AppKey("services", ServiceBoard)
"""What the daemon's services (the configured bots) last reported; `ingle serve` hands it to them."""
