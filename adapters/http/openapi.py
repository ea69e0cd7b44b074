"""The OpenAPI document, built from the routes' own pydantic models.

Each handler is decorated with `@documented(...)`, which records its request,
path and response models on the function; `/openapi.json` walks the router, so
the document lists exactly the routes the server has, with the schemas the
handlers really validate against (requests in pydantic's validation mode,
answers in its serialization mode) and the error shape each route answers in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from .errors import error_body_for

Handler = TypeVar("Handler", bound=Callable[..., Any])
REF_TEMPLATE = "#/components/schemas/{model}"
ERRORS = {
    400: "The request is malformed; the message names the field.",
    401: "An API key is configured and the request did not carry it.",
    403: "The request is not allowed from here (its Host or Origin, or a management right it lacks).",
    404: "No such model, knowledge base or stored response.",
    405: "The route has no such method; the Allow header lists those it has.",
    409: "A knowledge base the request names is damaged: delete it and create it again.",
    413: "The request body is larger than max_request_bytes.",
    422: "The request is well-formed but cannot be carried out (a damaged model, a document that cannot be read).",
    503: "The model's queue is full, or memory is short; retry after the Retry-After header.",
    504: "The request ran longer than request_timeout and was stopped.",
}


STREAM_ITEMS: dict[str, dict[str, Any]] = {
    "application/x-ndjson": {"type": "object", "description": "One JSON object a line: a chunk, or a last `error`."},
    "text/event-stream": {
        "type": "object",
        "description": "One server-sent event: its `data` is a JSON chunk (or `[DONE]` on the OpenAI routes).",
        "properties": {"event": {"type": "string"}, "data": {"type": "string"}, "id": {"type": "string"}},
        "required": ["data"],
    },
}
"""The schema of one item of a streamed answer, by media type, as a client (and schemathesis) splits the stream."""


@dataclass(frozen=True)
class RouteDoc:
    """What the OpenAPI document says about one route."""

    summary: str
    request: type[BaseModel] | None
    response: type[BaseModel] | None
    stream_type: str | None
    tags: tuple[str, ...]
    path: type[BaseModel] | None
    statuses: tuple[int, ...]
    selectable: bool


def documented(
    summary: str,
    *,
    request: type[BaseModel] | None = None,
    response: type[BaseModel] | None = None,
    stream_type: str | None = None,
    tags: tuple[str, ...] = (),
    path: type[BaseModel] | None = None,
    statuses: tuple[int, ...] = (200,),
    selectable: bool = False,
) -> Callable[[Handler], Handler]:
    """Attach OpenAPI facts to a handler.

    `stream_type` is the media type of a streamed answer, `path` the model of the
    path parameters, `statuses` those whose body is `response` (201 for a creation,
    204 for none, or a 422 that reports what could not be done in the same shape);
    `selectable` says the request may pick some of the response's fields (llama-server's `response_fields`).
    """

    def attach(handler: Handler) -> Handler:
        # A function takes attributes at run time; build_openapi reads this one back with getattr.
        handler.__route_doc__ = RouteDoc(summary, request, response, stream_type, tags, path, statuses, selectable)  # pyright: ignore[reportFunctionMemberAccess]
        return handler

    return attach


def build_openapi(app: web.Application, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document for every documented route of `app`."""
    routes: list[tuple[str, str, RouteDoc]] = []
    for route in app.router.routes():
        doc: RouteDoc | None = getattr(route.handler, "__route_doc__", None)
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if doc is not None and path is not None and route.method != "HEAD":
            routes.append((path, route.method.lower(), doc))
    # All models at once, so pydantic gives two models of the same class name distinct component names.
    wanted: set[tuple[type[BaseModel], JsonSchemaMode]] = set()
    for path, _, doc in routes:
        wanted.add((error_body_for(path), "serialization"))
        wanted.update((model, "validation") for model in (doc.request, doc.path) if model is not None)
        if doc.response is not None:
            wanted.add((doc.response, "serialization"))
    keys, definitions = models_json_schema(
        sorted(wanted, key=lambda pair: (pair[0].__module__, pair[0].__qualname__, pair[1])),
        ref_template=REF_TEMPLATE,
    )
    schemas: dict[str, Any] = definitions.get("$defs", {})
    paths: dict[str, dict[str, Any]] = {}
    for path, method, doc in routes:
        error = keys[error_body_for(path), "serialization"]
        responses: dict[str, Any] = {
            str(status): {"description": text, "content": {"application/json": {"schema": error}}}
            for status, text in ERRORS.items()
        }
        content: dict[str, Any] = {}
        if doc.response is not None:
            schema = keys[doc.response, "serialization"]
            if doc.selectable:
                schema = {"anyOf": [schema, {"type": "object", "description": "The fields `response_fields` named."}]}
            content["application/json"] = {"schema": schema}
        if doc.stream_type is not None:
            content[doc.stream_type] = {"schema": STREAM_ITEMS[doc.stream_type]}
        for status in doc.statuses:
            described = {"description": doc.summary if status < 300 else ERRORS[status]}
            responses[str(status)] = {**described, **({"content": content} if content and status != 204 else {})}
        operation: dict[str, Any] = {"summary": doc.summary, "tags": list(doc.tags), "responses": responses}
        if doc.path is not None:
            operation["parameters"] = _path_parameters(schemas, keys[doc.path, "validation"])
        if doc.request is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": keys[doc.request, "validation"]}},
            }
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "ingle", "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _path_parameters(schemas: dict[str, Any], reference: dict[str, Any]) -> list[dict[str, Any]]:
    """One `in: path` parameter per field of a path model (found through its component reference)."""
    model = schemas[reference["$ref"].rsplit("/", 1)[-1]]
    return [
        {"name": name, "in": "path", "required": True, "schema": schema}
        for name, schema in model.get("properties", {}).items()
    ]
