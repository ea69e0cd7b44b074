"""Errors to HTTP: one middleware maps ingle's typed errors to status codes.

Ollama-style routes answer `{"error": "<sentence>"}`; OpenAI-style routes
(`/v1/…`) answer `{"error": {"message", "type", "param", "code"}}`, because
each client library parses its own shape. No traceback ever reaches a client.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from ...core import errors
from .keys import SETTINGS

log = logging.getLogger("ingle.http")

Model = TypeVar("Model", bound=BaseModel)

STATUS_FOR_ERROR: list[tuple[type[errors.IngleError], int]] = [
    (errors.InvalidRequest, 400),
    (errors.UnsupportedFeature, 400),
    (errors.ModelNotFound, 404),
    (errors.KnowledgeBaseNotFound, 404),
    (errors.CorruptModel, 422),
    (errors.DigestMismatch, 422),
    (errors.PullRefused, 403),
    (errors.SourceError, 502),
    (errors.QueueFull, 503),
    (errors.InsufficientMemory, 503),
    (errors.ModelLoadTimeout, 504),
    (errors.StorageFull, 507),
]


class BadRequestBody(errors.InvalidRequest):
    """The body is not JSON or does not match the route's request model."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def status_for(error: errors.IngleError) -> int:
    """The HTTP status of an engine error (500 for anything unlisted)."""
    for kind, status in STATUS_FOR_ERROR:
        if isinstance(error, kind):
            return status
    return 500


def describe_validation_error(error: ValidationError) -> tuple[str, str]:
    """One sentence naming the first bad field, and that field's dotted name."""
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "body"
    return f"{field}: {first['msg']}.", field


async def read_body(request: web.Request, model: type[Model]) -> Model:
    """Parse the JSON body into `model`; raise BadRequestBody naming the bad field."""
    raw = await request.read()
    try:
        data = json.loads(raw or b"{}")
    except ValueError as error:
        raise BadRequestBody("The request body is not valid JSON.") from error
    try:
        return model.model_validate(data)
    except ValidationError as error:
        message, field = describe_validation_error(error)
        raise BadRequestBody(message, field) from error


# Anthropic's error types by status; clients such as Claude Code decide on retries by them.
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def anthropic_error(status: int, message: str) -> dict[str, Any]:
    """An error body as Anthropic's Messages API writes it."""
    kind = ANTHROPIC_ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def error_response(request: web.Request, status: int, message: str, field: str | None = None) -> web.Response:
    """A JSON error in the shape the calling client expects."""
    if request.path.startswith("/v1/messages"):
        body = anthropic_error(status, message)
    elif request.path.startswith("/v1/"):
        kind = "invalid_request_error" if status < 500 else "server_error"
        body = {"error": {"message": message, "type": kind, "param": field, "code": status}}
    else:
        body = {"error": message}
    return web.json_response(body, status=status)


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Turn every failure into a JSON error with the right status; log unexpected ones."""
    try:
        return await handler(request)
    except errors.IngleError as error:
        status = status_for(error)
        response = error_response(request, status, error.message, getattr(error, "field", None))
        if isinstance(error, errors.QueueFull):
            response.headers["Retry-After"] = str(max(1, round(error.retry_after)))
        return response
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SETTINGS].max_request_bytes
        return error_response(request, 413, f"The request body is larger than the limit of {limit} bytes.")
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return error_response(request, error.status, error.reason)
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(request, 500, "ingle hit an internal error; the server log has the details.")
