"""Errors to HTTP: one middleware maps ingle's typed errors to status codes.

Ollama-style routes answer `{"error": "<sentence>"}`; OpenAI-style routes
(`/v1/…`) answer `{"error": {"message", "type", "param", "code"}}`, because
each client library parses its own shape. No traceback ever reaches a client.
An error a client may act on by its kind also carries a machine-readable
`code` (OpenAI's name for it): beside `error` on Ollama-style routes, as the
OpenAI shape's own `code` on `/v1/…`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from ...core import errors
from ...core.json_text import parse_json
from ...core.knowledge.index import KnowledgeBaseDamaged
from .keys import SETTINGS

log = logging.getLogger("ingle.http")

Model = TypeVar("Model", bound=BaseModel)


class StoredResponseNotFound(errors.IngleError):
    """No stored /v1/responses answer has the id a request names."""


STATUS_FOR_ERROR: list[tuple[type[errors.IngleError], int]] = [
    (errors.InvalidRequest, 400),
    (StoredResponseNotFound, 404),
    (errors.UnsupportedFeature, 400),
    (errors.ModelNotFound, 404),
    (errors.KnowledgeBaseNotFound, 404),
    # The request is sound but the knowledge base's file is not: removing and re-creating it resolves the conflict.
    (KnowledgeBaseDamaged, 409),
    (errors.CorruptModel, 422),
    (errors.DigestMismatch, 422),
    (errors.PullRefused, 403),
    (errors.SourceError, 502),
    (errors.QueueFull, 503),
    (errors.InsufficientMemory, 503),
    (errors.ModelUnloaded, 503),  # the daemon is stopping: another try (elsewhere, or after the restart) can work
    (errors.ModelLoadTimeout, 504),
    (errors.StorageFull, 507),
]


ErrorCode = Literal["context_length_exceeded"]
"""The machine-readable kinds of error; OpenAI's names, which its clients (and ingle's own) act on."""

CODE_FOR_ERROR: list[tuple[type[errors.IngleError], ErrorCode]] = [
    (errors.ContextOverflow, "context_length_exceeded"),
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


def code_for(error: errors.IngleError) -> ErrorCode | None:
    """The machine-readable code of an engine error, for the kinds a client acts on; else None."""
    return next((code for kind, code in CODE_FOR_ERROR if isinstance(error, kind)), None)


def _shortened(text: str, limit: int = 64) -> str:
    return text if len(text) <= limit else f"{text[:limit]}…"


def describe_validation_error(error: ValidationError) -> tuple[str, str]:
    """One sentence naming the first bad field, and that field's dotted name."""
    first = error.errors()[0]
    # A part of the path can be a client's dictionary key of any length: the sentence quotes its start only.
    field = ".".join(_shortened(str(part)) for part in first["loc"]) or "body"
    # A validator's own sentence (a ValueError) reads better without pydantic's "Value error, " prefix.
    message = str(first.get("ctx", {}).get("error", first["msg"])) if first["type"] == "value_error" else first["msg"]
    if not first["loc"]:  # a rule over several fields names them itself
        return f"{message.rstrip('.')}.", field
    return f"{field}: {message.rstrip('.')}.", field


_EXACT_INTEGERS = 2**53
"""Beyond this a float no longer holds every integer, so `1e300` stays a float."""


def _json_number(text: str) -> int | float:
    """A JSON number with a fraction or exponent: an int when it is a whole one, as JSON Schema counts `1.0`."""
    value = float(text)
    return int(value) if value.is_integer() and abs(value) <= _EXACT_INTEGERS else value


LONE_SURROGATE = (
    "The request body holds a lone UTF-16 surrogate (a \\ud800-\\udfff escape without its pair), "
    "which is not text: send valid Unicode."
)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _has_lone_surrogate(raw: bytes, data: Any) -> bool:
    """True when the parsed body holds a surrogate that no UTF-8 can encode: every later step (a prompt,
    an echo, a stored document, a streamed event) would fail on it, after the status line is gone."""
    if not _SURROGATE_ESCAPE.search(raw):  # only an escape can make one; the common body skips the walk
        return False
    try:
        json.dumps(data, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return True
    except RecursionError:  # too deep to check; the request model refuses what nests this deep
        return False
    return False


async def read_body(request: web.Request, model: type[Model]) -> Model:
    """Parse the JSON body into `model`; raise BadRequestBody naming the bad field."""
    raw = await request.read()
    try:
        data = parse_json(raw or b"{}", parse_float=_json_number)
    except ValueError as error:
        raise BadRequestBody("The request body is not valid JSON.") from error
    if _has_lone_surrogate(raw, data):
        raise BadRequestBody(LONE_SURROGATE)
    try:
        # Strict: a number is not a text, `false` is not 0 and "3" is not 3, as the OpenAPI document says.
        return model.model_validate(data, strict=True)
    except ValidationError as error:
        message, field = describe_validation_error(error)
        raise BadRequestBody(message, field) from error


def read_path(request: web.Request, model: type[Model]) -> Model:
    """The route's path parameters as `model`; raise BadRequestBody naming the bad one."""
    try:
        return model.model_validate(dict(request.match_info))
    except ValidationError as error:
        message, field = describe_validation_error(error)
        raise BadRequestBody(message, field) from error


class OllamaErrorBody(BaseModel):
    """An error on the Ollama and llama-server routes."""

    error: str
    """What went wrong, in one sentence."""
    code: ErrorCode | None = None
    """ingle's addition, only on errors a client may act on by kind: `context_length_exceeded` when the
    prompt does not fit in the model's context."""


class OpenAIErrorDetail(BaseModel):
    """What went wrong, as OpenAI's API describes it."""

    message: str
    """One sentence."""
    type: Literal["invalid_request_error", "server_error"]
    """`invalid_request_error` for the client's mistakes, `server_error` for the server's."""
    param: str | None
    """The field at fault, when one is."""
    code: ErrorCode | int
    """`context_length_exceeded` when the prompt does not fit in the model's context, as OpenAI says it;
    otherwise the HTTP status again."""


class OpenAIErrorBody(BaseModel):
    """An error on the OpenAI routes (`/v1/…`)."""

    error: OpenAIErrorDetail
    """What went wrong."""


class AnthropicErrorDetail(BaseModel):
    """What went wrong, as Anthropic's API describes it."""

    type: str
    """Anthropic's error type, like `invalid_request_error` or `overloaded_error`."""
    message: str
    """One sentence."""


class AnthropicErrorBody(BaseModel):
    """An error on the Anthropic Messages routes (`/v1/messages…`)."""

    type: Literal["error"]
    """Always `error`."""
    error: AnthropicErrorDetail
    """What went wrong."""


def error_body_for(path: str) -> type[BaseModel]:
    """The error shape the clients of the route at `path` parse."""
    if path.startswith("/v1/messages"):
        return AnthropicErrorBody
    if path.startswith("/v1/"):
        return OpenAIErrorBody
    return OllamaErrorBody


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


def error_body(
    path: str, status: int, message: str, field: str | None = None, code: ErrorCode | None = None
) -> dict[str, Any]:
    """A JSON error in the shape the client of the route at `path` expects; `code` says its kind where the
    shape has room."""
    if path.startswith("/v1/messages"):
        return anthropic_error(status, message)
    if path.startswith("/v1/"):
        kind = "invalid_request_error" if status < 500 else "server_error"
        return {"error": {"message": message, "type": kind, "param": field, "code": code or status}}
    return {"error": message} if code is None else {"error": message, "code": code}


def error_response(
    request: web.Request, status: int, message: str, field: str | None = None, code: ErrorCode | None = None
) -> web.Response:
    """A JSON error response in the shape the calling client expects (see error_body)."""
    return web.json_response(error_body(request.path, status, message, field, code), status=status)


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Turn every failure into a JSON error with the right status; log unexpected ones."""
    try:
        return await handler(request)
    except errors.IngleError as error:
        status = status_for(error)
        response = error_response(request, status, error.message, getattr(error, "field", None), code_for(error))
        if isinstance(error, errors.QueueFull):
            response.headers["Retry-After"] = str(max(1, round(error.retry_after)))
        return response
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SETTINGS].max_request_bytes
        return error_response(request, 413, f"The request body is larger than the limit of {limit} bytes.")
    except web.HTTPException as error:
        if error.status < 400:
            raise
        response = error_response(request, error.status, error.reason)
        if "Allow" in error.headers:  # a 405 names the methods the route has (RFC 9110)
            response.headers["Allow"] = error.headers["Allow"]
        return response
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(request, 500, "ingle hit an internal error; the server log has the details.")
