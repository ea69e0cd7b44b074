"""The application factory: `create_app(settings, engine) -> web.Application`."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from aiohttp import web

from ...core.backend import GenerationBackend
from ...core.engine import Engine
from ...core.settings import Settings
from ..services import ServiceBoard
from ..upstreams import BackendRouter, forwarded_requests_stay_local
from . import anthropic_api, llama_server, metrics, ollama, openai_api, responses_api, timeouts
from .errors import error_middleware
from .keys import BACKEND, ENGINE, ROUTER, SERVICES, SETTINGS
from .knowledge import add_routes as add_knowledge_routes
from .openapi import build_openapi, documented
from .security import api_key_guard, cors, cors_headers, host_guard


def ingle_version() -> str:
    """The installed version of ingle."""
    try:
        return version("ingle")
    except PackageNotFoundError:
        return "0.0.0+unknown"


@documented("This OpenAPI document.", tags=("meta",))
async def openapi_document(request: web.Request) -> web.Response:
    """Serve the OpenAPI document of the routes this server has."""
    return web.json_response(build_openapi(request.app, ingle_version()))


def create_app(settings: Settings, engine: Engine, backend: GenerationBackend | None = None) -> web.Application:
    """Build the HTTP application over an engine; the caller owns the engine's lifetime.

    `backend` receives generation and embedding requests; by default the engine
    itself, or a router over the engine and configured upstreams.
    """
    app = web.Application(
        client_max_size=settings.max_request_bytes,
        # Outermost first: metrics see every final status, refusals included; the time
        # limit is innermost so that it covers the handler alone.
        middlewares=[
            metrics.middleware,
            error_middleware,
            cors(settings),
            host_guard(settings),
            api_key_guard(settings),
            forwarded_requests_stay_local,
            timeouts.request_timeout(settings),
        ],
    )
    app[SETTINGS] = settings
    app.on_response_prepare.append(cors_headers(settings))
    app[ENGINE] = engine
    app[SERVICES] = ServiceBoard()
    app[BACKEND] = backend if backend is not None else engine
    if isinstance(backend, BackendRouter):
        app[ROUTER] = backend
    # Wraps BACKEND, so chat requests that name knowledge bases answer from them.
    add_knowledge_routes(app)
    metrics.setup(app)
    timeouts.setup(app)
    ollama.add_routes(app)
    openai_api.add_routes(app)
    anthropic_api.add_routes(app)
    responses_api.add_routes(app)
    llama_server.add_routes(app)
    app.router.add_get("/openapi.json", openapi_document)
    return app
