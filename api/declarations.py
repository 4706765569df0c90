"""What a REST route is, declared once: method, path, view, role, request and response
models and errors. :mod:`api.routes` holds the declarations; the router (``setup_routes``),
the authentication middleware (which routes are public) and the OpenAPI document
(:mod:`api.openapi`) are all made from them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel

View = Callable[[web.Request], Awaitable[web.StreamResponse]]

Role = Literal["public", "user", "service"]


@dataclass(frozen=True, slots=True)
class Reply:
    """One documented response of an operation."""

    description: str
    model: type[BaseModel] | None = None
    content_type: str = "application/json"
    schema: Mapping[str, Any] | None = None  # for non-model bodies (text, html)
    headers: tuple[str, ...] = ()  # names in components.headers


@dataclass(frozen=True, slots=True)
class Param:
    """A query or path parameter."""

    name: str
    location: Literal["query", "path"]
    schema: Mapping[str, Any]
    description: str
    required: bool = False
    example: Any = None


@dataclass(frozen=True, slots=True)
class Operation:
    method: Literal["GET", "POST", "PATCH", "PUT", "DELETE"]
    path: str  # as documented, trailing slash included (the router accepts it without too)
    operation_id: str
    summary: str
    tag: str
    role: Role
    replies: Mapping[int, Reply]
    description: str = ""
    body: type[BaseModel] | None = None
    body_examples: Mapping[str, Any] = field(default_factory=dict)
    params: tuple[Param, ...] = ()
    errors: tuple[int, ...] = ()  # statuses answered with the Error schema
    # The view that serves it: the router is built from the same declarations.
    handler: View = field(kw_only=True)


# The declarations the app was built with (the OpenAPI view documents exactly these) and the
# exact paths anyone may call without a token.
API_ROUTES = web.AppKey("api_routes", tuple[Operation, ...])
PUBLIC_PATHS = web.AppKey("public_paths", frozenset[str])
