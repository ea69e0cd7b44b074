"""The OpenAPI document, built from the routes' own pydantic models.

Each handler is decorated with `@documented(...)`, which records its request
and response models on the function; `/openapi.json` walks the router, so
the document lists exactly the routes the server has, with the schemas the
handlers really validate against.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

Handler = TypeVar("Handler", bound=Callable[..., Any])
ERROR_SCHEMA = {
    "type": "object",
    "properties": {"error": {"description": "What went wrong, in one sentence (an object on /v1 routes)."}},
    "required": ["error"],
}


@dataclass(frozen=True)
class RouteDoc:
    """What the OpenAPI document says about one route."""

    summary: str
    request: type[BaseModel] | None
    response: type[BaseModel] | None
    stream_type: str | None
    tags: tuple[str, ...]


def documented(
    summary: str,
    *,
    request: type[BaseModel] | None = None,
    response: type[BaseModel] | None = None,
    stream_type: str | None = None,
    tags: tuple[str, ...] = (),
) -> Callable[[Handler], Handler]:
    """Attach OpenAPI facts to a handler; `stream_type` is the media type of a streamed answer."""

    def attach(handler: Handler) -> Handler:
        # A function takes attributes at run time; build_openapi reads this one back with getattr.
        handler.__route_doc__ = RouteDoc(summary, request, response, stream_type, tags)  # pyright: ignore[reportFunctionMemberAccess]
        return handler

    return attach


def build_openapi(app: web.Application, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document for every documented route of `app`."""
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}

    def reference(model: type[BaseModel]) -> dict[str, str]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    for route in app.router.routes():
        doc: RouteDoc | None = getattr(route.handler, "__route_doc__", None)
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if doc is None or path is None or route.method == "HEAD":
            continue
        responses: dict[str, Any] = {
            "400": _error("The request is malformed; the message names the field."),
            "401": _error("An API key is configured and the request did not carry it."),
            "404": _error("The model is not in the store."),
            "503": _error("The model's queue is full; retry after the Retry-After header."),
        }
        content: dict[str, Any] = {}
        if doc.response is not None:
            content["application/json"] = {"schema": reference(doc.response)}
        if doc.stream_type is not None:
            content[doc.stream_type] = {"schema": {"type": "string"}}
        responses["200"] = {"description": doc.summary, **({"content": content} if content else {})}
        operation: dict[str, Any] = {"summary": doc.summary, "tags": list(doc.tags), "responses": responses}
        if doc.request is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": reference(doc.request)}},
            }
        paths.setdefault(path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "ingle", "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
